/// qNBO: quasi-Newton meets bilevel optimization (Fang, Liu, Yao, Yu & Zhang, ICLR 2025, arXiv 2502.01076;
/// algorithms.md §2.1). No Hessian-vector products: inverse-Hessian products come from secant pairs.
///
/// Per outer iteration k, with one training batch for every lower oracle of the iteration (a secant pair
/// needs both of its gradients on the same samples; full batch unless -bilevel_batch_size):
///   A (Alg. 2, lower level): P gradient warm-up steps y <- y − β ∇_y g, then T quasi-Newton steps
///     y <- y − t H ∇_y g, H from the secant pairs (s, Δ∇_y g) by the BFGS two-loop recursion C_b or the SR1
///     compact form C_s (SecantPairs; or PETSc's MATLMVMBFGS with -bilevel_qnbo_backend petsc); then
///     y_{k+1} = y_T.
///   B (Alg. 3, u ≈ H⁻¹ d with d = ∇_y f(x_k, y_{k+1})), two modes:
///     reuse: u = C(d, pairs of A); no extra gradient.
///     fresh: Q_k further quasi-Newton iterations near y_{k+1} collect fresh pairs. They minimise the tilted
///       lower objective ψ(z) = g(x_k, z) − <∇_y g(x_k, y_{k+1}) + ε d, z − y_{k+1}>, whose Hessian is that
///       of g (its pairs are secant pairs of g) and whose minimiser is y_{k+1} + ε H⁻¹ d (its steps follow
///       d; a small ε keeps them where g's curvature is that at y_{k+1}). They start from the previous
///       solution, z_0 = y_{k+1} + ε u_{k−1} (one gradient), and each moves to the minimiser of ψ's quadratic
///       model along the quasi-Newton step (curvature from the step's own gradient difference), so on
///       quadratics the iteration is monotone. Output (fresh_output):
///       iterate: u = (z_Q − y_{k+1}) / ε, the quasi-Newton solution of H u = d (default);
///       pairs:   u = C(d, fresh pairs), the formula of §2.1. The two agree for SR1 on quadratics (hereditary
///                property); for BFGS the residual of C(d) is larger by up to ||I − H ∇²g|| (60x measured on
///                the quadratic with κ = 1e3), which is why `iterate` is the default.
///       With fresh_tilt false the iterations minimise g itself (the literal reading of §2.1; output pairs):
///       their steps follow ∇_y g, which near a converged y is at rounding level. Q_k = Q or min(k+1, Q).
///   outer: x_{k+1} = x_k − α (∇_x f(x_k, y_{k+1}) − J(x_k, y_{k+1}) u) through the upper stepper.
/// Step length t of the lower steps (step_control): armijo backtracks from γ until g(y − t d) <= g(y) −
/// 1e-4 t dᵀ∇_y g (one value of g per accepted step; steps whose predicted decrease is at the rounding level
/// of g use the secant check); secant takes γ and redoes a step that overshot the line minimum of its secant
/// model by more than 2x at the model minimiser (one gradient, no values); none takes γ (the paper's unit
/// step); auto, the default, is armijo when the problem provides g values, else secant (unit steps diverge on
/// ill-conditioned non-quadratic lower levels such as hyperclean's).
/// Pairs are rebuilt every outer iteration as in the paper (keep_pairs false; A and B each start a new set)
/// or kept across iterations in one first-in-first-out memory (keep_pairs true, the default for BFGS): x
/// moves little per iteration, and on Fashion-MNIST hyper-cleaning the kept pairs track y* and u much better
/// for the same gradients. Pairs with ||s|| < pair_min_step max(1, ||y||) are not stored (rounding noise).
/// On minibatches (-bilevel_batch_size below the training set) P = 10 and T = 0 unless given: subroutine A
/// takes SGD steps (a unit quasi-Newton step on a minibatch jumps to the batch's minimiser), B is unchanged.
/// Cost per iteration: P + T + 1 (A) + Q_k + 1 (fresh B) gradients of g, 1 ∇f, 1 JVP, no HVP.
/// Options (-bilevel_qnbo_*): kind, warmup_steps, warmup_step, qn_steps, qn_step, step_control, ihvp,
/// fresh_steps, fresh_schedule, fresh_tilt, fresh_scale, fresh_rtol, fresh_warm_start, fresh_output, memory,
/// keep_pairs, pair_min_step, backend; with backend petsc also -bilevel_qnbo_mat_lmvm_*.
#include <petscviewer.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <utility>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/reductions.hpp"
#include "bilevel/blocks/secant_pairs.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/line_search.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {
namespace {

/// Step length of the lower quasi-Newton steps (file comment).
enum class StepControl { Auto, Armijo, Secant, None };
constexpr std::array<Named<StepControl>, 4> kStepControls{{{"auto", StepControl::Auto},
                                                           {"armijo", StepControl::Armijo},
                                                           {"secant", StepControl::Secant},
                                                           {"none", StepControl::None}}};
/// Subroutine B: fresh pairs or the lower solve's.
enum class Ihvp { Fresh, Reuse };
constexpr std::array<Named<Ihvp>, 2> kIhvps{{{"fresh", Ihvp::Fresh}, {"reuse", Ihvp::Reuse}}};
/// Q_k = Q or min(k + 1, Q).
enum class FreshSchedule { Constant, Linear };
constexpr std::array<Named<FreshSchedule>, 2> kSchedules{
    {{"constant", FreshSchedule::Constant}, {"linear", FreshSchedule::Linear}}};
/// u from the fresh iterate or from the pairs.
enum class FreshOutput { Iterate, Pairs };
constexpr std::array<Named<FreshOutput>, 2> kOutputs{
    {{"iterate", FreshOutput::Iterate}, {"pairs", FreshOutput::Pairs}}};
constexpr std::array<Named<SecantKind>, 2> kKinds{{{"bfgs", SecantKind::Bfgs}, {"sr1", SecantKind::Sr1}}};
constexpr std::array<Named<SecantBackend>, 2> kBackends{
    {{"own", SecantBackend::Own}, {"petsc", SecantBackend::Petsc}}};

/// Settings of Qnbo. Options database keys in brackets.
struct QnboOptions {
  SecantKind kind = SecantKind::Bfgs;  ///< [-bilevel_qnbo_kind bfgs|sr1] quasi-Newton update
  PetscInt warmup_steps = 0;           ///< [-bilevel_qnbo_warmup_steps] P gradient steps before the qN steps
  PetscReal warmup_step = 0;           ///< [-bilevel_qnbo_warmup_step] β; 0: 1/L
  PetscInt qn_steps = 3;               ///< [-bilevel_qnbo_qn_steps] T quasi-Newton steps on y
  PetscReal qn_step = 1;               ///< [-bilevel_qnbo_qn_step] γ, the quasi-Newton step length
  StepControl step_control =
      StepControl::Auto;     ///< [-bilevel_qnbo_step_control auto|armijo|secant|none] lower steps
  Ihvp ihvp = Ihvp::Fresh;   ///< [-bilevel_qnbo_ihvp fresh|reuse] subroutine B
  PetscInt fresh_steps = 3;  ///< [-bilevel_qnbo_fresh_steps] Q (constant) or its cap (linear)
  FreshSchedule fresh_schedule = FreshSchedule::Constant;  ///< [-bilevel_qnbo_fresh_schedule constant|linear]
  bool fresh_tilt = true;        ///< [-bilevel_qnbo_fresh_tilt] fresh steps on the tilted objective ψ
  PetscReal fresh_scale = 0.01;  ///< [-bilevel_qnbo_fresh_scale] ε of the tilt
  PetscReal fresh_rtol = 1e-10;  ///< [-bilevel_qnbo_fresh_rtol] stop B when ||∇ψ|| <= rtol ε ||d||
  bool fresh_warm_start = true;  ///< [-bilevel_qnbo_fresh_warm_start] start B at y_{k+1} + ε u_{k−1}
  FreshOutput fresh_output = FreshOutput::Iterate;  ///< [-bilevel_qnbo_fresh_output iterate|pairs]
  PetscInt memory = 0;             ///< [-bilevel_qnbo_memory] pairs kept; 0: T + Q + 1, or 20 with keep_pairs
  bool keep_pairs = true;          ///< [-bilevel_qnbo_keep_pairs] keep pairs across iterations (bfgs: yes)
  PetscReal pair_min_step = 1e-9;  ///< [-bilevel_qnbo_pair_min_step] relative ||s|| below which pairs drop
  SecantBackend backend = SecantBackend::Own;  ///< [-bilevel_qnbo_backend own|petsc]
};

class Qnbo : public Algorithm {
 public:
  std::string_view type() const override { return "qnbo"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.kind = read_choice(opts, "kind", o_.kind, kKinds, "quasi-Newton update: qNBO(BFGS) or qNBO(SR1)");
    warmup_given_ = opts.given("warmup_steps");
    o_.warmup_steps = opts.integer("warmup_steps",
                                   o_.warmup_steps,
                                   "P gradient warm-up steps on y (on minibatches: 10 unless given)",
                                   0);
    o_.warmup_step = opts.real("warmup_step", o_.warmup_step, "warm-up step beta (0: 1/L)", 0.0);
    qn_given_ = opts.given("qn_steps");
    o_.qn_steps =
        opts.integer("qn_steps",
                     o_.qn_steps,
                     "T quasi-Newton steps on y per outer iteration (on minibatches: 0 unless given)",
                     0);
    o_.qn_step = opts.real("qn_step", o_.qn_step, "quasi-Newton step length gamma", 0.0);
    o_.step_control =
        read_choice(opts,
                    "step_control",
                    o_.step_control,
                    kStepControls,
                    "lower qN step length: Armijo on g, secant-model overshoot check, or gamma");
    o_.ihvp = read_choice(opts,
                          "ihvp",
                          o_.ihvp,
                          kIhvps,
                          "inverse-Hessian product from fresh pairs or from the lower solve's pairs");
    o_.fresh_steps = opts.integer("fresh_steps", o_.fresh_steps, "Q fresh qN iterations (cap if linear)", 0);
    o_.fresh_schedule = read_choice(
        opts, "fresh_schedule", o_.fresh_schedule, kSchedules, "Q_k = Q (constant) or min(k+1, Q) (linear)");
    o_.fresh_tilt = opts.boolean("fresh_tilt", o_.fresh_tilt, "fresh steps minimise g tilted by grad_y f");
    o_.fresh_scale = opts.real("fresh_scale", o_.fresh_scale, "epsilon of the tilt", 0.0);
    o_.fresh_rtol = opts.real(
        "fresh_rtol", o_.fresh_rtol, "stop the fresh steps at ||grad psi|| <= rtol eps ||d||", 0.0, 1.0);
    o_.fresh_warm_start = opts.boolean(
        "fresh_warm_start", o_.fresh_warm_start, "start the fresh steps from the previous u (one gradient)");
    o_.fresh_output = read_choice(opts,
                                  "fresh_output",
                                  o_.fresh_output,
                                  kOutputs,
                                  "u = the fresh iterate's displacement / eps, or C(d, fresh pairs)");
    o_.memory = opts.integer("memory", o_.memory, "secant pairs kept (0: T+Q+1, or 20 with keep_pairs)", 0);
    // Default: kept for BFGS (positive definite whatever the pairs' age); rebuilt for SR1, whose updates from
    // pairs of earlier x (and near-redundant pairs) make the iterates chaotic in rounding.
    o_.keep_pairs =
        opts.boolean("keep_pairs", o_.kind == SecantKind::Bfgs, "keep pairs across outer iterations");
    o_.pair_min_step = opts.real(
        "pair_min_step", o_.pair_min_step, "pairs with ||s|| < this * max(1, ||y||) are not stored", 0.0);
    o_.backend = read_choice(opts,
                             "backend",
                             o_.backend,
                             kBackends,
                             "secant pairs: own (VecMDot) or petsc (MATLMVMBFGS, bfgs only)");
    if (o_.fresh_tilt && !(o_.fresh_scale > 0))
      throw InputError("option -bilevel_qnbo_fresh_scale must be > 0 with -bilevel_qnbo_fresh_tilt");
    if (!o_.fresh_tilt && o_.fresh_output == FreshOutput::Iterate && o_.ihvp == Ihvp::Fresh)
      throw InputError(
          "option -bilevel_qnbo_fresh_output iterate needs -bilevel_qnbo_fresh_tilt (untilted fresh "
          "iterations minimise g, their iterate is not u): use -bilevel_qnbo_fresh_output pairs");
  }

  Capability requirements() const override {
    return o_.step_control == StepControl::Armijo ? Capability::LowerValue : Capability::None;
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    beta_ = o_.warmup_step > 0 ? o_.warmup_step : 1.0 / resolve_lower_lipschitz(p, ctx.x, ctx.y);
    step_control_ = o_.step_control;
    if (step_control_ == StepControl::Auto)
      step_control_ =
          has(p.capabilities(), Capability::LowerValue) ? StepControl::Armijo : StepControl::Secant;
    // On minibatches the lower level takes gradient steps unless the user sets P or T: a quasi-Newton step
    // of length γ = 1 on a minibatch jumps to that batch's minimiser, as a Newton step does (ijcnn1, batches
    // of 64: 0.243-0.255 with T = 3 against 0.205-0.207 with P = 10, T = 0; docs/benchmarks.md). The
    // inverse-Hessian products of subroutine B keep their quasi-Newton pairs.
    const bool minibatches = !full_lower_batch(p, ctx.batch_size);
    warmup_steps_ = warmup_given_ || !minibatches ? o_.warmup_steps : 10;
    qn_steps_ = qn_given_ || !minibatches ? o_.qn_steps : 0;
    memory_ = o_.memory > 0
                  ? o_.memory
                  : (o_.keep_pairs ? 20 : qn_steps_ + (o_.ihvp == Ihvp::Fresh ? o_.fresh_steps + 1 : 0));
    memory_ = std::max<PetscInt>(memory_, 1);
    approx_ = make_inverse_hessian_approx(ctx.y, o_.kind, memory_, o_.backend, "bilevel_qnbo_");
    approx_->set_scale(beta_);  // H0 = β I until the first pair
    batch_ = has(p.capabilities(), Capability::Stochastic) ? ctx.batch_size : 0;
    upper_batch_ = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    warmup_.setup(ctx.y);
    for (auto* v : {&gy_, &gnew_, &d_, &s_, &dg_, &z_, &gz_, &r_, &w_, &wp_, &gwp_, &pair_s_, &fy_, &u_})
      *v = p.create_lower_vec();
    BILEVEL_PETSC_CALL(VecSet(u_, 0.0));
    fx_ = p.create_upper_vec();
    jv_ = p.create_upper_vec();
    samplers_ =
        StepSamplers(ctx.seed);  // the iteration's lower batch: lower; warm-up steps: hessian; ∇f: upper
    stored_ = rejected_small_ = shortened_ = 0;
    u_nonzero_ = false;
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const DatasetSizes n = p.dataset_sizes();
    StepResult r;
    PetscInt its = 0;

    const Batch lb = samplers_.lower.draw(n.lower, batch_);
    const Batch ub = samplers_.upper.draw(n.upper, upper_batch_);

    // ---- Subroutine A: P warm-up gradient steps, then T quasi-Newton steps on g(x_k, ·).
    {
      petsc::ScopedEvent ev(petsc::events().lower_solve);
      if (warmup_steps_ > 0)  // y <- y − β ∇_y g(x_k, y; B_t), P times
        warmup_.run(p, ctx.x, ctx.y, warmup_steps_, beta_, &samplers_.hessian, batch_);
      if (!o_.keep_pairs) approx_->reset();
      value_valid_ = false;                   // x (and the batch) changed
      p.lower_grad_y(ctx.x, ctx.y, lb, gy_);  // ∇_y g(x_k, y_0)
      for (PetscInt t = 0; t < qn_steps_; ++t) {
        if (!lower_step(p, ctx.x, ctx.y, lb)) break;  // y <- y − γ H_t ∇_y g, pair (s, Δ∇_y g) stored
        ++its;
      }
      BILEVEL_PETSC_CALL(VecNorm(gy_, NORM_2, &r.lower_residual));  // ||∇_y g(x_k, y_{k+1})||
    }

    p.upper_grad(ctx.x, ctx.y, ub, fx_, fy_);  // ∇_x f, ∇_y f at (x_k, y_{k+1})

    // ---- Subroutine B: u ≈ H⁻¹ ∇_y f from secant pairs.
    {
      petsc::ScopedEvent ev(petsc::events().hypergradient);
      if (o_.ihvp == Ihvp::Fresh) {
        const PetscInt q_k = o_.fresh_schedule == FreshSchedule::Linear
                                 ? std::min<PetscInt>(ctx.iteration + 1, o_.fresh_steps)
                                 : o_.fresh_steps;
        if (!o_.keep_pairs) approx_->reset();  // the product uses the fresh pairs only
        its += fresh_iterations(p, ctx.x, ctx.y, lb, q_k, r.linear_residual);
      }
      if (o_.ihvp == Ihvp::Fresh && o_.fresh_output == FreshOutput::Iterate) {
        // u = (z − y_{k+1}) / ε, the quasi-Newton solution of H u = d
        BILEVEL_PETSC_CALL(VecWAXPY(u_, -1.0, ctx.y, z_));
        BILEVEL_PETSC_CALL(VecScale(u_, 1.0 / o_.fresh_scale));
      } else {
        approx_->apply(fy_, u_);  // u = H ∇_y f   (C_b / C_s on the stored pairs)
      }
      u_nonzero_ = true;
    }

    // h = ∇_x f − J(x_k, y_{k+1}) u, x <- P(x − α h) on the coordinator
    r.hypergradient_norm = hypergradient_step(ctx, lb, u_, fx_, jv_);
    r.hypergradient = fx_;
    r.linear_solution = u_;
    r.inner_iterations = its;
    return r;
  }

  void declare_state(StateRegistry& state) override {
    approx_->declare_state(state, "qnbo.secant.");
    state.add("qnbo.u", u_.get());
    state.add("qnbo.u_nonzero", u_nonzero_);
    state.add("qnbo.", samplers_);
    state.add("qnbo.pairs_stored", stored_);
    state.add("qnbo.pairs_rejected_small", rejected_small_);
    state.add("qnbo.steps_shortened", shortened_);
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "qnbo: qNBO(%s), quasi-Newton meets bilevel optimization (Fang, Liu, Yao, Yu & Zhang, ICLR 2025)\n",
        o_.kind == SecantKind::Bfgs ? "BFGS" : "SR1"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "lower level: P = %d warm-up steps (beta %g), T = %d quasi-Newton steps (gamma %g, step control %s, "
        "%lld steps shortened)\n",
        static_cast<int>(warmup_steps_),
        beta_,
        static_cast<int>(qn_steps_),
        o_.qn_step,
        name_of(step_control_, kStepControls),
        static_cast<long long>(shortened_)));
    if (o_.ihvp == Ihvp::Fresh)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer,
          "inverse Hessian products: fresh pairs, Q_k = %s%d iterations on the %s (eps %g, rtol %g, warm "
          "start %s), "
          "u = %s\n",
          o_.fresh_schedule == FreshSchedule::Linear ? "min(k+1, Q), Q = " : "",
          static_cast<int>(o_.fresh_steps),
          o_.fresh_tilt ? "tilted lower objective" : "lower objective",
          o_.fresh_scale,
          o_.fresh_rtol,
          o_.fresh_warm_start && o_.fresh_tilt ? "yes" : "no",
          o_.fresh_output == FreshOutput::Iterate ? "fresh iterate displacement / eps" : "C(d, pairs)"));
    else
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer, "inverse Hessian products: u = C(d, pairs of the lower solve) (reuse)\n"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "pairs: memory %d, %s, backend %s, min step %g; stored %lld, rejected %lld (curvature) + %lld "
        "(step)\n",
        static_cast<int>(memory_),
        o_.keep_pairs ? "kept across outer iterations" : "rebuilt every outer iteration",
        to_string(o_.backend),
        o_.pair_min_step,
        static_cast<long long>(stored_),
        static_cast<long long>(approx_ ? approx_->rejected() : 0),
        static_cast<long long>(rejected_small_)));
    BILEVEL_PETSC_CALL(
        PetscViewerASCIIPrintf(viewer,
                               "lower batch %d (0 = full) per outer iteration, upper batch %d\n",
                               static_cast<int>(batch_),
                               static_cast<int>(upper_batch_)));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  /// One quasi-Newton step of subroutine A on g(x, ·) at y with gradient gy_: y <- y − t H ∇_y g (t = γ, or
  /// Armijo backtracking), gy_ <- ∇_y g(x, y⁺), and the pair (Δy, Δ∇_y g) is offered to the approximation.
  /// Returns false when ∇_y g is zero or not finite (no step taken).
  bool lower_step(BilevelProblem& p, Vec x, Vec y, const Batch& batch) {
    approx_->apply(gy_, d_);  // d = H ∇_y g
    PetscScalar dg = 0;
    PetscReal dn = 0, gn = 0, yn = 0;
    reduce_together({{d_, gy_, &dg}}, {{d_, &dn}, {gy_, &gn}, {y, &yn}});
    if (!(gn > 0) || !std::isfinite(gn)) return false;
    if (!descent_or_fallback(gy_, dg, dn, gn)) return false;
    PetscReal t = o_.qn_step;
    bool secant_check = step_control_ == StepControl::Secant;
    if (step_control_ == StepControl::Armijo) {
      if (!value_valid_) value_y_ = p.lower_value(x, y, batch);
      if (t * dg <= 1e-9 * std::max<PetscReal>(1, std::abs(value_y_))) {
        // The predicted decrease is at the rounding level of g's value: values cannot judge the step, the
        // secant check (gradients only) does.
        secant_check = true;
        value_valid_ = false;
      } else {
        // Armijo: g(x, y − t d) <= g(x, y) − 1e-4 t dᵀ∇_y g, halving t from γ (core/line_search.hpp); the
        // accepted value is the next g(x, y). After 40 trials, a last trial with any decrease is kept.
        const ArmijoResult ls = armijo_backtrack(
            [&](PetscReal trial) {
              BILEVEL_PETSC_CALL(VecWAXPY(s_, -trial, d_, y));
              return p.lower_value(x, s_, batch);
            },
            value_y_,
            -dg,
            ArmijoOptions{o_.qn_step, 0.5, 1e-4, 40});
        t = ls.step;
        const PetscReal gt = ls.value;
        if (!(std::isfinite(gt) && gt <= value_y_))
          return false;  // no decrease along d: stop the lower steps
        if (t < o_.qn_step) ++shortened_;
        value_y_ = gt;
        value_valid_ = true;
      }
    }
    BILEVEL_PETSC_CALL(VecCopy(d_, s_));
    BILEVEL_PETSC_CALL(VecScale(s_, -t));                 // s = −t d
    BILEVEL_PETSC_CALL(VecAXPY(y, 1.0, s_));              // y⁺ = y + s
    p.lower_grad_y(x, y, batch, gnew_);                   // ∇_y g(x_k, y⁺)
    BILEVEL_PETSC_CALL(VecWAXPY(dg_, -1.0, gy_, gnew_));  // Δ∇_y g = ∇_y g(y⁺) − ∇_y g(y)
    offer_pair(s_, dg_, t * dn, yn);
    if (secant_check) {
      // Secant step-length check: the quadratic model along s has its minimiser at α s, α = −∇_y gᵀs / sᵀΔ∇_y
      // g (for convex g along s, α < 1 means the slope changed sign: the step overshot). A step that
      // overshoots by more than 2x (SR1 with an indefinite or badly scaled H) is redone at α s, one gradient.
      // Short steps are never extended: far along s the model of a non-quadratic g is not to be trusted.
      PetscScalar gs = 0, sdg = 0;
      reduce_together({{gy_, s_, &gs}, {s_, dg_, &sdg}});
      const PetscReal alpha = sdg > 0 ? -gs / sdg : 1.0;
      if (std::isfinite(alpha) && alpha > 0 && alpha < 0.5) {
        ++shortened_;
        BILEVEL_PETSC_CALL(VecAXPY(y, alpha - 1.0, s_));  // y⁺ = y + α s
        std::swap(gy_, gnew_);                            // gy_ = ∇_y g at the trial point y + s
        p.lower_grad_y(x, y, batch, gnew_);               // ∇_y g(x_k, y + α s)
        BILEVEL_PETSC_CALL(VecScale(s_, alpha - 1.0));    // second exact pair: ((α − 1) s, Δ∇_y g)
        BILEVEL_PETSC_CALL(VecWAXPY(dg_, -1.0, gy_, gnew_));
        offer_pair(s_, dg_, std::abs(alpha - 1.0) * t * dn, yn);
      }
    }
    std::swap(gy_, gnew_);
    return true;
  }

  /// Subroutine B, fresh mode: up to q_k quasi-Newton iterations on ψ (the tilted lower objective, or g
  /// itself when untilted) from z_0 = y_{k+1} + ε u_{k−1} (warm start, one gradient; z_0 = y_{k+1} without
  /// it), each evaluating ∇_y g once, at the trial point w = z − γ H ∇ψ(z). Every evaluation gives an exact
  /// secant pair between the last two evaluated points. The iterate then moves to the minimiser of ψ's
  /// quadratic model along s = w − z: z <- z + α s, α = −∇ψᵀs / sᵀ(∇_y g(w) − ∇_y g(z)) (α = 1 is the plain
  /// unit step), and ∇ψ(z), ∇_y g(z) follow the model (exact on quadratics), so the iteration is monotone on
  /// quadratics at no extra gradient. Stops early at ||∇ψ|| <= fresh_rtol ε ||d||. Returns the number of
  /// iterations; `residual` gets ||∇ψ(z)|| / ε = ||∇_y g(z) − ∇_y g(y_{k+1}) − ε d|| / ε (tilted; −1
  /// untilted).
  PetscInt fresh_iterations(
      BilevelProblem& p, Vec x, Vec y, const Batch& batch, PetscInt q_k, PetscReal& residual) {
    const PetscReal eps = o_.fresh_tilt ? o_.fresh_scale : 1.0;
    PetscReal target = 0, rn = 0, dn = 0;
    BILEVEL_PETSC_CALL(VecNorm(fy_, NORM_2, &dn));
    if (o_.fresh_tilt) target = o_.fresh_rtol * eps * dn;
    BILEVEL_PETSC_CALL(VecCopy(y, z_));     // z_0 = y_{k+1}
    BILEVEL_PETSC_CALL(VecCopy(gy_, gz_));  // ∇_y g(z_0)
    if (o_.fresh_tilt && o_.fresh_warm_start && u_nonzero_) {
      BILEVEL_PETSC_CALL(VecAXPY(z_, eps, u_));  // z_0 = y_{k+1} + ε u_{k−1}: start from the last solution
      p.lower_grad_y(x, z_, batch, gz_);         // ∇_y g(x_k, z_0)
      BILEVEL_PETSC_CALL(VecWAXPY(pair_s_, -1.0, y, z_));  // exact pair (z_0 − y_{k+1}, Δ∇_y g)
      BILEVEL_PETSC_CALL(VecWAXPY(dg_, -1.0, gy_, gz_));
      PetscReal ps = 0, yn = 0;
      reduce_together({}, {{pair_s_, &ps}, {y, &yn}});
      offer_pair(pair_s_, dg_, ps, yn);
    }
    BILEVEL_PETSC_CALL(VecCopy(z_, wp_));  // last evaluated point and its gradient
    BILEVEL_PETSC_CALL(VecCopy(gz_, gwp_));
    if (o_.fresh_tilt) {
      // ∇ψ(z_0) = ∇_y g(z_0) − ∇_y g(y_{k+1}) − ε d
      BILEVEL_PETSC_CALL(VecWAXPY(r_, -1.0, gy_, gz_));
      BILEVEL_PETSC_CALL(VecAXPY(r_, -eps, fy_));
    } else {
      BILEVEL_PETSC_CALL(VecCopy(gy_, r_));  // ψ = g: ∇ψ(z_0) = ∇_y g(y_{k+1})
    }
    BILEVEL_PETSC_CALL(VecNorm(r_, NORM_2, &rn));
    PetscInt its = 0;
    for (PetscInt q = 0; q < q_k && rn > target && std::isfinite(rn); ++q) {
      approx_->apply(r_, d_);  // d = H ∇ψ(z)
      PetscScalar dg = 0;
      PetscReal dn = 0, zn = 0;
      reduce_together({{d_, r_, &dg}}, {{d_, &dn}, {z_, &zn}});
      if (!descent_or_fallback(r_, dg, dn, rn)) break;
      // A step below the rounding-meaningful size would only difference noise: ψ is solved as far as it can
      // be.
      if (o_.qn_step * dn < o_.pair_min_step * std::max<PetscReal>(1, zn)) break;
      BILEVEL_PETSC_CALL(VecCopy(d_, s_));
      BILEVEL_PETSC_CALL(VecScale(s_, -o_.qn_step));         // s = −γ d
      BILEVEL_PETSC_CALL(VecWAXPY(w_, 1.0, s_, z_));         // w = z + s
      p.lower_grad_y(x, w_, batch, gnew_);                   // ∇_y g(x_k, w)
      BILEVEL_PETSC_CALL(VecWAXPY(pair_s_, -1.0, wp_, w_));  // exact secant pair between evaluated points
      BILEVEL_PETSC_CALL(VecWAXPY(dg_, -1.0, gwp_, gnew_));
      PetscReal ps = 0;
      BILEVEL_PETSC_CALL(VecNorm(pair_s_, NORM_2, &ps));
      offer_pair(pair_s_, dg_, ps, zn);
      // model curvature along s: g = ∇_y g(w) − ∇_y g(z)
      BILEVEL_PETSC_CALL(VecWAXPY(dg_, -1.0, gz_, gnew_));
      PetscScalar rs = 0, sg = 0;
      reduce_together({{r_, s_, &rs}, {s_, dg_, &sg}});
      // argmin_α ψ(z + α s) on the model; a value outside (0, 4] means the model is not to be trusted (e.g. a
      // gradient difference dominated by rounding): take the plain step α = 1.
      PetscReal alpha = sg > 0 ? -rs / sg : 1.0;
      if (!(alpha > 0 && alpha <= 4)) alpha = 1.0;
      BILEVEL_PETSC_CALL(VecAXPY(z_, alpha, s_));    // z <- z + α s
      BILEVEL_PETSC_CALL(VecAXPY(r_, alpha, dg_));   // ∇ψ(z) <- ∇ψ(z) + α g
      BILEVEL_PETSC_CALL(VecAXPY(gz_, alpha, dg_));  // ∇_y g(z) <- ∇_y g(z) + α g
      BILEVEL_PETSC_CALL(VecNorm(r_, NORM_2, &rn));
      std::swap(wp_, w_);
      std::swap(gwp_, gnew_);
      ++its;
    }
    BILEVEL_PETSC_CALL(VecNorm(r_, NORM_2, &rn));
    residual = o_.fresh_tilt ? rn / eps : -1;
    return its;
  }

  /// Keeps d_ (= H grad) if it is a descent direction for grad (dᵀgrad > 1e-12 ||d|| ||grad||); otherwise
  /// (an indefinite SR1 matrix, or rounding) replaces it by γ grad and updates dg, dn. False if grad is 0.
  bool descent_or_fallback(Vec grad, PetscScalar& dg, PetscReal& dn, PetscReal gn) {
    if (!(gn > 0) || !std::isfinite(gn)) return false;
    if (dg > 1e-12 * dn * gn && std::isfinite(dn)) return true;
    BILEVEL_PETSC_CALL(VecCopy(grad, d_));
    BILEVEL_PETSC_CALL(VecScale(d_, approx_->scale()));  // d = γ ∇
    dg = approx_->scale() * gn * gn;
    dn = approx_->scale() * gn;
    return true;
  }

  /// Stores (s, g) unless ||s|| < pair_min_step max(1, ||point||) (a difference of gradients at nearly equal
  /// points is rounding noise).
  void offer_pair(Vec s, Vec g, PetscReal snorm, PetscReal point_norm) {
    if (snorm >= o_.pair_min_step * std::max<PetscReal>(1, point_norm)) {
      if (approx_->push(s, g)) ++stored_;
    } else {
      ++rejected_small_;
    }
  }

  QnboOptions o_;
  PetscReal beta_ = 0;
  PetscInt memory_ = 0, batch_ = 0, upper_batch_ = 0;
  PetscInt warmup_steps_ = 0, qn_steps_ = 3;  // P and T in use (the minibatch defaults resolved)
  bool warmup_given_ = false, qn_given_ = false;
  std::unique_ptr<InverseHessianApprox> approx_;
  GradientSteps warmup_;
  petsc::VecHandle gy_, gnew_, d_, s_, dg_, z_, gz_, r_, w_, wp_, gwp_, pair_s_, fy_, u_, fx_, jv_;
  StepSamplers samplers_;
  std::int64_t stored_ = 0, rejected_small_ = 0, shortened_ = 0;
  StepControl step_control_ = StepControl::Auto;
  PetscReal value_y_ = 0;  // g(x_k, y) at the current y (Armijo), valid while value_valid_
  bool value_valid_ = false;
  bool u_nonzero_ = false;
};

}  // namespace

std::unique_ptr<Algorithm> create_qnbo() {
  return std::make_unique<Qnbo>();
}

}  // namespace bilevel
