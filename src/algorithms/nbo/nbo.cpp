/// NBO: curvature-aware hypergradients by an inexact Newton step (Dong, Yang, Yao & Zhang, "Curvature-aware
/// bilevel optimization via inexact Newton", ICML 2025, arXiv 2505.02101; algorithms.md §2.2).
///
/// Per outer iteration k, with H_k = ∇²_yy g(x_k, y_k):
///   1. ∇_y g(x_k, y_k) and ∇_y f(x_k, y_k);
///   2. two systems with the same H_k, solved together (TwoSystemSolver: both products in one pass over
///      the data, BilevelProblem::lower_hvp_multi): H_k v = ∇_y g (v from 0: the inexact Newton step) and
///      H_k u = ∇_y f (u from u_k). The paper writes the second as w from 0 with right-hand side
///      H_k u_k − ∇_y f and u_{k+1} = u_k − w; GD or CG from u_k on H_k u = ∇_y f gives the same iterates.
///      - variant gd (NBO-GD, Alg. 2/3): T+1 gradient steps v <- v − η (H v − ∇_y g) and
///        u <- u − η (H u − ∇_y f);
///      - variant cg (NBO-CG): T conjugate-gradient iterations on each system, in lockstep;
///      - variant sgd (NSBO-SGD, Alg. 4/5): the T+1 gradient steps with a fresh training batch per step,
///        ∇_y g and J u on training batches, ∇_y f and ∇_x f on validation batches;
///      - variant saga (NSBO-SAGA, the paper's variance-reduced extension, like SABA): the sgd variant on
///        fixed minibatches ("slots", blocks/saga.hpp) with every oracle output o replaced by the SAGA
///        direction o − m_i + m̄: ∇_y g(y_k), J u (on the iteration's training slot), the products H v and
///        H u of each gradient step (a fresh slot per step, one table per system), ∇_y f(y_k) and
///        ∇_x f(y_{k+1}) (on the iteration's validation slot). Memory n_b (3 dy + dx) + n_ob (dy + dx)
///        numbers, checkpointed; larger than -bilevel_nbo_saga_max_memory MiB is refused;
///   3. y_{k+1} = y_k − v (Newton-corrected point), u_{k+1} = u;
///   4. x_{k+1} = x_k − α (∇_x f(x_k, y_{k+1}) − J(x_k, y_{k+1}) u_{k+1}) through the upper stepper.
/// Before iteration 0, warmup_newton inexact Newton steps (T CG iterations each, NewtonSteps) bring y_0 into
/// the local Newton region the analysis assumes ("may need a warm-up in practice", §2.2): on Fashion-MNIST
/// hyper-cleaning (κ ~ 1e5) 3-10 of them lift the final test accuracy from 0.834 to 0.839.
/// η = 1/L (hint or SLEPc estimate at the start); with adaptive_step, η drops to 1/ρ when a Rayleigh quotient
/// ρ of the current H exceeds 1/η (H grows with x on e.g. logreg, where e^x regularises).
/// T of the cg variant: the paper's T = 5 with the problem's preconditioner (PCG); without one, CG runs to
/// the relative residual cg_rtol = 1e-6 (an inexact-Newton forcing term) within T = 50. The paper's fixed
/// T = 5 let the residual of H u = ∇_y f grow from 4e-6 to 1e1 on 20 Newsgroups per-feature logreg as the
/// regularisers fell (test log-loss 0.42 against 0.11 now). A T from κ = L/μ (as bome's metric budget) was
/// measured and not taken: there L/μ reached 105/7e-6, every budget hit its cap, and SLEPc's μ estimates
/// cost more than the solves (docs/benchmarks.md, "Defaults on a second LIBSVM set").
/// Variant auto (the default): cg on full batches, sgd on minibatches (-bilevel_batch_size below the lower
/// data set), as the paper pairs them. The cg variant on a minibatch is a Newton step to that batch's
/// minimiser: no step size averages its noise, and H_B⁻¹ of a minibatch Hessian is largest along the
/// features the batch lacks. On ijcnn1 it ended in DIVERGED_NAN on every seed at batches of 64, 256 and 512
/// and on one of two at 1024, where sgd ran to the time limit (docs/benchmarks.md, "Newton steps on
/// minibatches").
/// Cost per iteration: 1 ∇_y g, 2 ∇f, 1 JVP and 2T+1 HVPs in T+1 passes (the first iteration, u_0 = 0: 2T
/// HVPs in T passes).
/// With a problem preconditioner (Capability::LowerPreconditioner) the cg variant is PCG on both systems
/// (-bilevel_nbo_precondition; not in the paper).
/// Options (-bilevel_nbo_*): variant, inner_steps, step, cg_rtol, warm_start, adaptive_step, precondition,
/// warmup_newton, batch_size; the warm-up's KSP has the prefix -bilevel_inner_.
#include <petscviewer.h>

#include <algorithm>
#include <array>
#include <string>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/saga.hpp"
#include "bilevel/blocks/two_system_solver.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// NBO-GD, NBO-CG, NSBO-SGD or NSBO-SAGA; auto: NBO-CG on full batches, NSBO-SGD on minibatches.
enum class NboVariant { Auto, Gd, Cg, Sgd, Saga };
constexpr std::array<Named<NboVariant>, 5> kVariants{{{"auto", NboVariant::Auto},
                                                      {"gd", NboVariant::Gd},
                                                      {"cg", NboVariant::Cg},
                                                      {"sgd", NboVariant::Sgd},
                                                      {"saga", NboVariant::Saga}}};

/// Settings of Nbo. Options database keys in brackets.
struct NboOptions {
  NboVariant variant = NboVariant::Auto;  ///< [-bilevel_nbo_variant auto|gd|cg|sgd|saga]
  PetscInt inner_steps =
      0;  ///< [-bilevel_nbo_inner_steps] T (CG its / T+1 steps); 0: cg 5 with PCG, else 50; gd/sgd/saga 1
  PetscReal step = 0;  ///< [-bilevel_nbo_step] η of the gradient steps (gd, sgd); 0: 1/L
  PetscReal cg_rtol =
      -1;  ///< [-bilevel_nbo_cg_rtol] CG relative tolerance (cg); < 0: 1e-10 with PCG, else 1e-6
  bool warm_start = true;     ///< [-bilevel_nbo_warm_start] solve for u from u_k (the paper); false: from 0
  bool adaptive_step = true;  ///< [-bilevel_nbo_adaptive_step] lower η when a Rayleigh quotient exceeds 1/η
  bool precondition = true;   ///< [-bilevel_nbo_precondition] cg: PCG with the problem's M, if it has one
  PetscInt batch_size = 256;  ///< [-bilevel_nbo_batch_size] sgd minibatch when -bilevel_batch_size is not set
  PetscInt warmup_newton = 5;  ///< [-bilevel_nbo_warmup_newton] inexact Newton steps on y before iteration 0
  PetscInt saga_max_memory = 2048;  ///< [-bilevel_nbo_saga_max_memory] MiB of SAGA tables (saga)
};

class Nbo : public Algorithm {
 public:
  std::string_view type() const override { return "nbo"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.variant =
        read_choice(opts,
                    "variant",
                    o_.variant,
                    kVariants,
                    "NBO-GD, NBO-CG, the stochastic NSBO-SGD or NSBO-SAGA (auto: cg on full batches, "
                    "sgd on minibatches)");
    o_.inner_steps = opts.integer("inner_steps",
                                  o_.inner_steps,
                                  "T: CG iterations (cg) or T+1 gradient steps (gd, sgd); 0: cg 5 with the "
                                  "problem's preconditioner, else 50; gd/sgd/saga 1",
                                  0);
    o_.step = opts.real("step", o_.step, "gradient step eta on the two systems (0: 1/L)", 0.0);
    o_.cg_rtol =
        opts.real("cg_rtol",
                  o_.cg_rtol,
                  "CG relative tolerance (negative: 1e-10 with the problem's preconditioner, else 1e-6)",
                  -1.0,
                  1.0);
    o_.warm_start = opts.boolean("warm_start", o_.warm_start, "solve for u from the previous u (paper)");
    o_.adaptive_step =
        opts.boolean("adaptive_step",
                     o_.adaptive_step,
                     "gd/sgd: lower eta to 1/rho when a Rayleigh quotient rho of H exceeds 1/eta");
    o_.precondition =
        opts.boolean("precondition",
                     o_.precondition,
                     "cg: precondition both systems with the problem's M ~ inverse Hessian, if it has one");
    o_.warmup_newton =
        opts.integer("warmup_newton",
                     o_.warmup_newton,
                     "inexact Newton steps (T CG iterations each) on y before the first iteration",
                     0);
    o_.batch_size = opts.integer("batch_size",
                                 o_.batch_size,
                                 "sgd/saga minibatch size when -bilevel_batch_size is not set (0: full)",
                                 0);
    o_.saga_max_memory = opts.integer(
        "saga_max_memory", o_.saga_max_memory, "saga: largest SAGA memory in MiB over all ranks", 1);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const bool stochastic = has(p.capabilities(), Capability::Stochastic);
    // auto: the paper's deterministic NBO-CG on full batches, its stochastic NSBO-SGD on minibatches
    variant_ = o_.variant != NboVariant::Auto                         ? o_.variant
               : full_lower_batch(p, stochastic ? ctx.batch_size : 0) ? NboVariant::Cg
                                                                      : NboVariant::Sgd;
    eta_ = o_.step;
    step_reductions_ = 0;
    if (variant_ != NboVariant::Cg && eta_ == 0) eta_ = 1.0 / resolve_lower_lipschitz(p, ctx.x, ctx.y);
    batch_ = 0;
    if (stochastic && ctx.batch_size > 0)
      batch_ = ctx.batch_size;
    else if (stochastic && (variant_ == NboVariant::Sgd || variant_ == NboVariant::Saga))
      batch_ = o_.batch_size;
    upper_batch_ = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    two_.setup(ctx.y,
               variant_ == NboVariant::Cg && o_.precondition &&
                   has(p.capabilities(), Capability::LowerPreconditioner));
    // paper: T = 1 for NBO-GD, 5 for NBO-CG; plain CG to a residual of 1e-6 within 50 (see the file comment)
    steps_ = o_.inner_steps > 0           ? o_.inner_steps
             : variant_ != NboVariant::Cg ? 1
             : two_.preconditioned()      ? 5
                                          : 50;
    cg_rtol_ = o_.cg_rtol >= 0 ? o_.cg_rtol : two_.preconditioned() ? 1e-10 : 1e-6;
    gy_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    v_ = p.create_lower_vec();
    u_ = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    jv_ = p.create_upper_vec();
    BILEVEL_PETSC_CALL(VecSet(u_, 0.0));
    u_zero_ = true;
    if (o_.warmup_newton > 0) newton_.setup(p, ctx.y, steps_);
    s_ = StepSamplers(ctx.seed);
    if (variant_ == NboVariant::Saga) setup_saga(p, ctx.seed);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const DatasetSizes n = p.dataset_sizes();
    StepResult r;
    if (ctx.iteration == 0 && o_.warmup_newton > 0) {
      // Warm-up into the local Newton region (algorithms.md §2.2): y <- y − H⁻¹∇_y g by T CG iterations, W
      // times
      const Batch wb = s_.hessian.draw(n.lower, batch_);
      newton_.run(p, ctx.x, ctx.y, o_.warmup_newton, wb);
    }
    const bool saga = variant_ == NboVariant::Saga;
    PetscInt islot = 0, oslot = 0;
    if (saga) {
      islot = saga_inner_.draw();
      oslot = saga_outer_.draw();
    }
    const Batch gb = saga ? saga_inner_.batch() : s_.lower.draw(n.lower, batch_);
    p.lower_grad_y(ctx.x, ctx.y, gb, gy_);  // ∇_y g(x_k, y_k)
    const Batch fb = saga ? saga_outer_.batch() : s_.upper.draw(n.upper, upper_batch_);
    p.upper_grad(ctx.x, ctx.y, fb, nullptr, fy_);  // ∇_y f(x_k, y_k)
    if (saga) {
      gy_table_.correct(islot, gy_);
      fy_table_.correct(oslot, fy_);
    }

    // H_k v = ∇_y g from v = 0 and H_k u = ∇_y f from u_k (or from 0)
    const TwoSystemSolver::Systems systems{{gy_, fy_}, {v_, u_}, {true, u_zero_ || !o_.warm_start}};
    TwoSystemSolver::Report rep;
    if (variant_ == NboVariant::Cg) {
      // T CG iterations on each system, one pass per iteration
      rep = two_.cg(p, ctx.x, ctx.y, s_.hessian.draw(n.lower, batch_), systems, steps_, cg_rtol_);
    } else {
      // T+1 steps  v <- v − η (H_k v − ∇_y g),  u <- u − η (H_k u − ∇_y f)   (NBO-GD Alg. 2 step 2; NSBO-SGD
      // with a fresh batch per step)
      const bool sgd = variant_ == NboVariant::Sgd && batch_ > 0;
      // NSBO-SAGA: a fresh slot per step, each product H v_i replaced by its SAGA direction
      PetscInt step_slot = 0;
      TwoSystemSolver::StepHooks hooks;
      hooks.next_batch = [&] {
        step_slot = saga_steps_.draw();
        return saga_steps_.batch();
      };
      hooks.correct = [&](std::size_t i, Vec q) { hu_tables_[i].correct(step_slot, q); };
      rep = two_.gradient(p,
                          ctx.x,
                          ctx.y,
                          Batch::all(),
                          systems,
                          steps_ + 1,
                          eta_,
                          o_.adaptive_step,
                          sgd ? &s_.hessian : nullptr,
                          sgd ? batch_ : 0,
                          saga ? &hooks : nullptr);
      if (rep.step < eta_) {
        eta_ = rep.step;  // the Rayleigh-quotient safeguard lowered η: keep it for the next iterations
        ++step_reductions_;
      }
    }
    u_zero_ = false;
    BILEVEL_PETSC_CALL(VecAXPY(ctx.y, -1.0, v_));  // y_{k+1} = y_k − v  (Newton-corrected point)

    const Batch xb = saga ? saga_outer_.batch() : s_.upper.draw(n.upper, upper_batch_);
    p.upper_grad(ctx.x, ctx.y, xb, fx_, nullptr);  // ∇_x f(x_k, y_{k+1})
    if (saga) {
      // h = (∇_x f − m + m̄) − (J u − m' + m̄') on the iteration's slots, x <- P(x − α h)
      fx_table_.correct(oslot, fx_);
      p.lower_jvp(ctx.x, ctx.y, saga_inner_.batch(), u_, jv_);
      jv_table_.correct(islot, jv_);
      BILEVEL_PETSC_CALL(VecAXPY(fx_, -1.0, jv_));
      BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &r.hypergradient_norm));
      require_finite(r.hypergradient_norm, ConvergedReason::DivergedNaN, "the norm of the hypergradient");
      ctx.upper.step(ctx.x, fx_);
      r.hypergradient = fx_;
    } else {
      // h = ∇_x f − J(x_k, y_{k+1}) u_{k+1}, x <- P(x − α h) on the coordinator
      r.hypergradient_norm = hypergradient_step(ctx, s_.jacobian.draw(n.lower, batch_), u_, fx_, jv_);
      r.hypergradient = fx_;
    }
    r.linear_solution = u_;

    r.lower_residual =
        rep.residual[0];  // ||H_k v − ∇_y g(x_k, y_k)|| ≈ ||∇_y g(x_k, y_{k+1})|| to first order
    r.linear_residual = rep.residual[1];  // ||H_k u − ∇_y f||
    r.inner_iterations = rep.iterations;
    return r;
  }

  void declare_state(StateRegistry& state) override {
    state.add("nbo.u", u_.get());
    state.add("nbo.u_zero", u_zero_);
    state.add("nbo.eta", eta_);
    state.add("nbo.step_reductions", step_reductions_);
    state.add("nbo.", s_);
    if (variant_ != NboVariant::Saga) return;
    saga_inner_.declare_state(state, "nbo.saga_inner_slots");
    saga_outer_.declare_state(state, "nbo.saga_outer_slots");
    saga_steps_.declare_state(state, "nbo.saga_step_slots");
    gy_table_.declare_state(state, "nbo.saga_grad_y_g");
    fy_table_.declare_state(state, "nbo.saga_grad_y_f");
    fx_table_.declare_state(state, "nbo.saga_grad_x_f");
    jv_table_.declare_state(state, "nbo.saga_jvp");
    hu_tables_[0].declare_state(state, "nbo.saga_hvp_v");
    hu_tables_[1].declare_state(state, "nbo.saga_hvp_u");
  }

  /// Slots of the training and validation sets and the six SAGA tables of NSBO-SAGA.
  void setup_saga(BilevelProblem& p, std::uint64_t seed) {
    const DatasetSizes n = p.dataset_sizes();
    saga_inner_.setup(n.lower, batch_, seed, SamplerStream::Lower);
    saga_steps_.setup(n.lower, batch_, seed, SamplerStream::Hessian);
    saga_outer_.setup(n.upper, upper_batch_, seed, SamplerStream::Upper);
    PetscInt dy = 0, dx = 0;
    BILEVEL_PETSC_CALL(VecGetSize(gy_, &dy));
    BILEVEL_PETSC_CALL(VecGetSize(fx_, &dx));
    // n_b (3 dy + dx) + n_ob (dy + dx): ∇_y g, H v, H u, J u on training slots; ∇_y f, ∇_x f on validation
    saga_bytes_ =
        saga_bytes(saga_inner_.slots(), {dy, dy, dy, dx}) + saga_bytes(saga_outer_.slots(), {dy, dx});
    if (saga_bytes_ > (static_cast<std::int64_t>(o_.saga_max_memory) << 20))
      throw InputError(
          "nbo saga: the SAGA tables need " + std::to_string(saga_bytes_ >> 20) +
          " MiB, more than -bilevel_nbo_saga_max_memory = " + std::to_string(o_.saga_max_memory) +
          ": raise it or use larger minibatches (-bilevel_batch_size)");
    gy_table_.setup(gy_, saga_inner_.slots());
    hu_tables_[0].setup(gy_, saga_inner_.slots());
    hu_tables_[1].setup(gy_, saga_inner_.slots());
    jv_table_.setup(fx_, saga_inner_.slots());
    fy_table_.setup(gy_, saga_outer_.slots());
    fx_table_.setup(fx_, saga_outer_.slots());
  }

  void view(PetscViewer viewer) const override {
    const char* name = variant_ == NboVariant::Cg    ? "NBO-CG"
                       : variant_ == NboVariant::Gd  ? "NBO-GD"
                       : variant_ == NboVariant::Sgd ? "NSBO-SGD"
                                                     : "NSBO-SAGA";
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "nbo: %s, inexact-Newton curvature-aware hypergradient (Dong, Yang, Yao & Zhang, ICML 2025)\n",
        name));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    if (variant_ == NboVariant::Cg)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                                "variant cg: T = %d %s iterations per system, cg_rtol %g\n",
                                                static_cast<int>(steps_),
                                                two_.preconditioned() ? "PCG (problem's M)" : "CG",
                                                cg_rtol_));
    else
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer,
          "variant %s: T+1 = %d gradient steps per system, step eta %g%s, adaptive %s (%d reductions)\n",
          name_of(variant_, kVariants),
          static_cast<int>(steps_ + 1),
          eta_,
          o_.step == 0 ? " (from 1/L)" : "",
          o_.adaptive_step ? "yes" : "no",
          static_cast<int>(step_reductions_)));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "two systems H v = grad_y g (from 0), H u = grad_y f (from %s) share one Hessian pass per "
        "iteration; warm_start %s\n",
        o_.warm_start ? "u_k" : "0",
        o_.warm_start ? "yes" : "no"));
    BILEVEL_PETSC_CALL(
        PetscViewerASCIIPrintf(viewer,
                               "warm-up: %d inexact Newton steps on y before the first iteration\n",
                               static_cast<int>(o_.warmup_newton)));
    if (o_.warmup_newton > 0) newton_.view(viewer);
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "lower batch %d (0 = full), upper batch %d\n",
                                              static_cast<int>(batch_),
                                              static_cast<int>(upper_batch_)));
    if (variant_ == NboVariant::Saga)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer,
          "SAGA memory: %d training minibatches x (3 dy + dx) + %d validation x (dy + dx) = %.3g MiB\n",
          static_cast<int>(saga_inner_.slots()),
          static_cast<int>(saga_outer_.slots()),
          static_cast<double>(saga_bytes_) / (1 << 20)));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  NboOptions o_;
  NboVariant variant_ = NboVariant::Cg;  // after auto
  PetscReal cg_rtol_ = 0;                // after the default
  PetscReal eta_ = 0;
  PetscInt steps_ = 0;  // T after the variant default
  PetscInt step_reductions_ = 0;
  PetscInt batch_ = 0, upper_batch_ = 0;
  bool u_zero_ = true;
  TwoSystemSolver two_;
  NewtonSteps newton_;
  petsc::VecHandle gy_, fy_, v_, u_, fx_, jv_;
  StepSamplers s_;
  SagaSlots saga_inner_, saga_outer_, saga_steps_;  // NSBO-SAGA: slots of the iteration and of each step
  SagaTable gy_table_, fy_table_, fx_table_, jv_table_;
  std::array<SagaTable, 2> hu_tables_;  // products H v and H u of the gradient steps
  std::int64_t saga_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Algorithm> create_nbo() {
  return std::make_unique<Nbo>();
}

}  // namespace bilevel
