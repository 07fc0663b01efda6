/// BOME: Bilevel Optimization Made Easy, a first-order value-function method (Liu, Ye, Wright, Stone & Liu,
/// NeurIPS 2022, arXiv 2209.08709, Alg. 1; algorithms.md §2.5).
///
/// min_{x,y} f(x, y) s.t. q(x, y) = g(x, y) − g*(x) <= 0, with g*(x) ≈ g(x, ŷ), ŷ from T gradient steps on
/// g(x_k, ·). Per iteration k, with q̂(x, y) = g(x, y) − g(x, ŷ) (ŷ frozen):
///   ∇q̂ = [∇_x g(x_k, y_k) − ∇_x g(x_k, ŷ); ∇_y g(x_k, y_k)],  ∇f = [∇_x f; ∇_y f] at (x_k, y_k),
///   φ = η ||∇q̂||² (barrier grad_norm, the paper's default) or φ = η q̂(x_k, y_k) (barrier value),
///   λ = max((φ − <∇f, ∇q̂>) / (||∇q̂||² + 1e-8), 0),  d = ∇f + λ ∇q̂,
///   x <- P(x − ξ_x d_x) (the upper stepper),  y <- y − ξ_y d_y.
/// Both x and y are updated by the step. Cost per iteration: T + 1 ∇_y g, 2 ∇_x g, 1 ∇f (+ 2 g values).
///
/// Where ŷ starts (-bilevel_bome_inner_warm_start): the paper restarts it from y_k every iteration; then
/// ∇_x q̂ ≈ J (I − (I − a H)^T)(y − y*), and the method converges to the stationary point of a hypergradient
/// biased by J (I − a H)^T H⁻¹ ∇_y f, which is large when T a μ << 1 (measured: a relative gap 1.8e-2 on the
/// κ = 1e3 quadratic for T = 10 and T = 50). The default keeps ŷ from the previous iteration instead, so ŷ
/// tracks y*(x) across iterations at the same cost and the bias vanishes as x settles.
///
/// Step on y (-bilevel_bome_lower_step): the reference scripts use the inner step (a = 1/L here). Near the
/// solution λ grows until the y-update ξ_y λ H reaches its stability edge (λ ≈ 2/(ξ_y L)), y oscillates
/// about y*(x) with an amplitude ∝ ξ_y, and x stalls at a relative gap ∝ ξ_y (measured on the κ = 1e3
/// quadratic after 5000 iterations: 2.1e-3, 7.9e-4, 2.6e-4, 1.2e-4 for ξ_y = 2a, a, a/2, a/4; η has no
/// effect there). The default ξ_y = a/2 halves that floor at a modest cost in speed.
///
/// Metric on y (-bilevel_bome_precondition, not in the paper): with a problem preconditioner M ≈ H⁻¹
/// (Capability::LowerPreconditioner) the step is taken in the metric diag(I, M⁻¹): y <- y − ξ_y M d_y, and
/// the y-parts of <∇f, ∇q̂> and ||∇q̂||² become ∇_y fᵀ M ∇_y q̂ and ∇_y q̂ᵀ M ∇_y q̂. The fixed point is the same;
/// y reaches it at the rate of M H instead of H. ŷ then follows the problem's lower update (the Newton hint
/// on hyperclean, block LowerUpdate; -bilevel_bome_lower). Default ξ_y = 0.1 with M (hyperclean, measured:
/// 0.5 diverges, 0.2 stalls at 83.0% test accuracy, 0.1 reaches 83.5% in 150 iterations).
/// Without a problem M fit to be a metric (ProblemHints::preconditioner_is_metric; logreg's Jacobi M is only
/// a CG preconditioner), when ŷ takes Newton steps (the problem hints that gradient steps of 1/L crawl, e.g.
/// logreg), the metric is M = H(x_k, y_k)⁻¹ applied by CG (KSP -bilevel_metric_, rtol 1e-2, zero start; its
/// budget ⌈½√κ ln(2/rtol)⌉ in [5, 200] from κ = L/μ of LowerSpectrum at the start, μ by SLEPc; the rtol
/// ends the solves and the budget only caps them, so no re-estimate: on 20news one took minutes) and ξ_y =
/// 1/2: in the metric H⁻¹ the curvature of g along y is 1, so this is the plain a/2. Measured on ijcnn1
/// (per-feature regularisers, 100 iterations, 2 ranks): test log-loss 0.204 against 0.275 with the plain step
/// a/2 (docs/benchmarks.md). -bilevel_bome_normalize divides the y step by 1 + λ (so it stays stable as λ
/// grows). In the metric H⁻¹ it is on unless given: that step contracts y − y*(x) by 1 − ξ_y λ, unstable
/// once λ > 2/ξ_y = 4, which a CG preconditioned by logreg's Jacobi M (close to H⁻¹) reaches (measured in
/// docs/benchmarks.md, "Defaults on a second LIBSVM set"). It did not help on hyperclean and is off there.
/// On minibatches (-bilevel_batch_size below the lower data set) -bilevel_bome_lower auto takes gradient
/// steps whatever the problem hints (the LowerUpdate block's rule, shared with aidcg, subbio and lancbio),
/// and so the y-step has no metric H⁻¹: a Newton step on a minibatch
/// jumps to that batch's minimiser, which no step size averages, and H_B⁻¹ of a minibatch Hessian is
/// largest along the features the batch lacks. On ijcnn1 with batches of 64 (benchopt's protocol) the
/// Newton ŷ and metric diverged (DIVERGED_LINEAR_SOLVE) on every seed at batches of 64, 128 and 256 and
/// ended at 0.202–0.222 at 512 and 1024; gradient steps ended at 0.197–0.198 at 64, 128 and 1024
/// (docs/benchmarks.md, "Newton steps on minibatches"). An explicit -bilevel_bome_lower newton still takes
/// Newton steps.
/// Options (-bilevel_bome_*): lower,
/// inner_steps, inner_step, lower_step, precondition, normalize, eta, barrier, inner_warm_start.
#include <petscviewer.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/blocks/reductions.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// The control barrier φ.
enum class BomeBarrier { GradNorm, Value };
constexpr std::array<Named<BomeBarrier>, 2> kBarriers{
    {{"grad_norm", BomeBarrier::GradNorm}, {"value", BomeBarrier::Value}}};

/// Settings of Bome (paper / benchopt defaults except inner_warm_start). Options database keys in brackets.
struct BomeOptions {
  /// [-bilevel_bome_lower auto|gd|newton] how ŷ is updated, [-bilevel_bome_inner_steps] T (0: 10 gd / 1
  /// newton), [-bilevel_bome_inner_step] a of the gradient steps (0: 1/L); Newton's CG: KSP -bilevel_inner_
  LowerUpdateOptions lower;
  PetscReal lower_step = 0;  ///< [-bilevel_bome_lower_step] ξ_y, outer step on y; 0: a/2 (M: 0.1, H⁻¹: 0.5)
  bool precondition = true;       ///< [-bilevel_bome_precondition] y-part of the step in the metric M⁻¹
  std::optional<bool> normalize;  ///< [-bilevel_bome_normalize] y step ξ_y/(1+λ); nullopt: in the metric H⁻¹
  PetscReal eta = 0.5;            ///< [-bilevel_bome_eta] barrier coefficient η
  BomeBarrier barrier =
      BomeBarrier::GradNorm;     ///< [-bilevel_bome_barrier grad_norm|value] φ = η||∇q̂||² or η q̂
  bool inner_warm_start = true;  ///< [-bilevel_bome_inner_warm_start] ŷ from the previous ŷ (else y_k)
};

class Bome : public Algorithm {
 public:
  std::string_view type() const override { return "bome"; }
  Capability requirements() const override {
    return o_.barrier == BomeBarrier::Value ? Capability::LowerGradX | Capability::LowerValue
                                            : Capability::LowerGradX;
  }

  void set_from_options(petsc::OptionsReader& opts) override {
    read_lower_update_options(opts, o_.lower, 10);
    o_.lower_step =
        opts.real("lower_step",
                  o_.lower_step,
                  "outer step on y (0: half the inner step; 0.1 with the problem's M, 0.5 with H^-1)",
                  0.0);
    o_.precondition = opts.boolean(
        "precondition",
        o_.precondition,
        "take the y-part of the step in a metric M ~ inverse lower Hessian: the problem's, else H^-1 by CG "
        "(KSP -bilevel_metric_) when y-hat takes Newton steps");
    o_.normalize = opts.boolean_or_auto(
        "normalize", "divide the y step by 1 + lambda (auto: only in the metric H^-1 by CG)");
    o_.eta = opts.real("eta", o_.eta, "barrier coefficient eta", 0.0);
    o_.barrier = read_choice(opts,
                             "barrier",
                             o_.barrier,
                             kBarriers,
                             "control barrier: eta*|grad q|^2 (grad_norm) or eta*q (value)");
    o_.inner_warm_start =
        opts.boolean("inner_warm_start",
                     o_.inner_warm_start,
                     "start the T steps from the previous point (else from y_k, as the paper)");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    y_hat_ = p.create_lower_vec();
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, y_hat_));
    batch_ = has(p.capabilities(), Capability::Stochastic) ? ctx.batch_size : 0;
    lower_.setup(p, ctx.x, y_hat_, o_.lower, 10, batch_);  // auto on a minibatch: gradient steps
    pc_ = o_.precondition && has(p.capabilities(), Capability::LowerPreconditioner) &&
          p.hints().preconditioner_is_metric;
    metric_.reset();
    if (o_.precondition && !pc_ && lower_.kind() == LowerUpdateKind::Newton) {
      // M = H(x_k, y_k)⁻¹ by CG to a relative residual kMetricRtol; its budget from κ = L/μ (SLEPc).
      spectrum_.estimate(p, ctx.x, ctx.y);
      metric_budget_ = metric_budget();
      metric_ = std::make_unique<HessianKsp>(p,
                                             y_hat_,
                                             kMetricPrefix,
                                             kMetricRtol,
                                             metric_budget_,
                                             /*warm_start=*/false,
                                             ConvergedReason::DivergedLinearSolve);
      PetscBool given = PETSC_FALSE;
      BILEVEL_PETSC_CALL(PetscOptionsHasName(
          nullptr, nullptr, (std::string("-") + kMetricPrefix + "ksp_max_it").c_str(), &given));
      user_metric_budget_ = given == PETSC_TRUE;
    }
    // In the metric H⁻¹ the y-step contracts y − y*(x) by 1 − ξ_y λ, unstable once λ > 2/ξ_y = 4: there the
    // step is divided by 1 + λ unless the user says otherwise (20 Newsgroups, docs/benchmarks.md).
    normalize_ = o_.normalize.value_or(metric_ != nullptr);
    if (o_.lower_step > 0) {
      xi_y_ = o_.lower_step;
    } else if (metric_) {
      xi_y_ = 0.5;  // a/2 as without a metric: in the metric H⁻¹ the curvature of g along y is 1, so a = 1
    } else if (pc_) {
      xi_y_ =
          0.1;  // M ≈ H⁻¹; measured on hyperclean: 0.1 → 83.5% in 100 its, 0.2 stalls at 83.0%, 0.5 diverges
    } else {
      // ŷ by Newton steps (no gradient step a): ξ_y relative to 1/L all the same
      const PetscReal a = lower_.step() > 0 ? lower_.step() : 1.0 / resolve_lower_lipschitz(p, ctx.x, ctx.y);
      xi_y_ = 0.5 * a;
    }
    qy_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    mqy_ = p.create_lower_vec();
    mfy_ = p.create_lower_vec();
    qx_ = p.create_upper_vec();
    gx_hat_ = p.create_upper_vec();
    fx_ = p.create_upper_vec();
    s_ = StepSamplers(ctx.seed);  // ŷ's steps: lower; the terms of q̂: hessian; ∇f: upper
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const DatasetSizes n = p.dataset_sizes();
    StepResult r;
    // ŷ: T steps ŷ <- ŷ − a ∇_y g(x_k, ŷ) (or T Newton steps, block LowerUpdate) from y_k (paper) or from
    // the previous ŷ (Alg. 1, line 3).
    if (!o_.inner_warm_start) BILEVEL_PETSC_CALL(VecCopy(ctx.y, y_hat_));
    lower_.run(p, ctx.x, y_hat_, s_.lower, batch_);
    r.inner_iterations = lower_.steps();
    // One lower batch for every term of q̂ (so its value and gradient are those of one function).
    const Batch lb = s_.hessian.draw(n.lower, batch_);
    p.lower_grad_x(ctx.x, y_hat_, lb, gx_hat_);       // ∇_x g(x_k, ŷ)
    p.lower_grad_x(ctx.x, ctx.y, lb, qx_);            // ∇_x g(x_k, y_k)
    BILEVEL_PETSC_CALL(VecAXPY(qx_, -1.0, gx_hat_));  // ∇_x q̂ = ∇_x g(x_k, y_k) − ∇_x g(x_k, ŷ)
    p.lower_grad_y(ctx.x, ctx.y, lb, qy_);            // ∇_y q̂ = ∇_y g(x_k, y_k)
    const Batch ub = s_.upper.draw(n.upper, ctx.upper_batch_size);
    p.upper_grad(ctx.x, ctx.y, ub, fx_, fy_);  // ∇f = [∇_x f; ∇_y f] at (x_k, y_k)
    PetscReal q_value = 0;
    if (o_.barrier == BomeBarrier::Value)
      q_value = p.lower_value(ctx.x, ctx.y, lb) - p.lower_value(ctx.x, y_hat_, lb);  // q̂(x_k, y_k)
    // The y-parts in the metric G = M⁻¹ (preconditioned) or I: <a, b>_y = a_yᵀ M b_y.
    if (pc_) {
      p.lower_preconditioner_setup(ctx.x, ctx.y);
      p.lower_precondition(qy_, mqy_);
      p.lower_precondition(fy_, mfy_);
    } else if (metric_) {
      update_metric_budget();
      metric_->solve(ctx.x, ctx.y, lb, qy_, mqy_);  // H⁻¹ ∇_y q̂
      metric_->solve(ctx.x, ctx.y, lb, fy_, mfy_);  // H⁻¹ ∇_y f
    } else {
      BILEVEL_PETSC_CALL(VecCopy(qy_, mqy_));
      BILEVEL_PETSC_CALL(VecCopy(fy_, mfy_));
    }
    // <∇f, ∇q̂> and ||∇q̂||² in one split reduction.
    PetscReal fq_x = 0, fq_y = 0, qq_x = 0, qq_y = 0;
    reduce_together({{fx_, qx_, &fq_x}, {fy_, mqy_, &fq_y}, {qx_, qx_, &qq_x}, {qy_, mqy_, &qq_y}});
    const PetscReal qq = qq_x + qq_y;
    const PetscReal phi =
        o_.barrier == BomeBarrier::Value ? o_.eta * q_value : o_.eta * qq;  // control barrier φ
    const PetscReal lambda = std::max<PetscReal>((phi - (fq_x + fq_y)) / (qq + 1e-8), 0);  // λ (Alg. 1)
    BILEVEL_PETSC_CALL(VecAXPY(fx_, lambda, qx_));    // d_x = ∇_x f + λ ∇_x q̂
    BILEVEL_PETSC_CALL(VecAXPY(mfy_, lambda, mqy_));  // d_y = M (∇_y f + λ ∇_y q̂)
    PetscReal dx_norm = 0;
    BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &dx_norm));
    r.hypergradient_norm = dx_norm;
    require_finite(dx_norm, ConvergedReason::DivergedNaN, "the norm of the step direction d_x");
    BILEVEL_PETSC_CALL(VecNorm(qy_, NORM_2, &r.lower_residual));  // ||∇_y g(x_k, y_k)||
    ctx.upper.step(ctx.x, fx_);                                   // x_{k+1} = P(x_k − ξ_x d_x)
    const PetscReal xi = normalize_ ? xi_y_ / (1 + lambda) : xi_y_;
    BILEVEL_PETSC_CALL(VecAXPY(ctx.y, -xi, mfy_));  // y_{k+1} = y_k − ξ_y d_y
    last_lambda_ = lambda;
    r.hypergradient = fx_;  // d_x, the direction x moved along
    return r;
  }

  void declare_state(StateRegistry& state) override {
    state.add("bome.y_hat", y_hat_.get());  // the warm start of the inner steps
    state.add("bome.last_lambda", last_lambda_);
    state.add("bome.", s_);
    spectrum_.declare_state(state, "bome.spectrum.");  // μ of the metric's CG budget
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "bome: value-function method with a dynamic barrier (Liu, Ye, Wright, Stone & Liu, NeurIPS 2022, "
        "arXiv 2209.08709, Alg. 1)\n"
        "  lower %s, inner_steps %d, inner_step %g, lower_step %g%s, metric on y %s, eta %g, barrier %s,\n"
        "  inner_warm_start %s, batch %d, last lambda %g\n",
        lower_.kind_name(),
        static_cast<int>(lower_.steps()),
        lower_.step(),
        xi_y_ > 0 ? xi_y_ : o_.lower_step,
        normalize_ ? "/(1+lambda)" : "",
        pc_       ? "problem's M"
        : metric_ ? "H^-1 by CG"
                  : "identity",
        o_.eta,
        name_of(o_.barrier, kBarriers),
        o_.inner_warm_start ? "yes" : "no (restart from y_k, as the paper)",
        static_cast<int>(batch_),
        last_lambda_));
    lower_.view_ksp(viewer);
    if (metric_) {
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer,
          "  metric H^-1: L %g, mu %g, CG budget %d from kappa (%s)\n",
          spectrum_.lipschitz(),
          spectrum_.strong_convexity(),
          static_cast<int>(metric_budget_),
          user_metric_budget_ ? "overridden by -bilevel_metric_ksp_max_it" : "0.5 sqrt(kappa) ln(2/rtol)"));
      metric_->view(viewer, "  metric solves");
    }
  }

 private:
  /// CG iterations of the metric's solves for the current spectrum (cg_iterations_for).
  PetscInt metric_budget() const {
    return cg_iterations_for(
        spectrum_.lipschitz() / spectrum_.strong_convexity(), kMetricRtol, kMetricMinIts, kMetricMaxIts);
  }
  /// The metric's CG budget from the spectrum (checkpointed, so a restart caps the same), unless the user
  /// set -bilevel_metric_ksp_max_it. Collective.
  void update_metric_budget() {
    if (user_metric_budget_) return;
    const PetscInt budget = metric_budget();
    if (budget == metric_budget_) return;
    metric_budget_ = budget;
    BILEVEL_PETSC_CALL(KSPSetTolerances(metric_->ksp(), PETSC_DEFAULT, PETSC_DEFAULT, PETSC_DEFAULT, budget));
  }
  static constexpr const char* kMetricPrefix = "bilevel_metric_";
  // a metric need not be exact: 1e-2 reaches the same point as 1e-6 on ijcnn1 (docs/benchmarks.md)
  static constexpr PetscReal kMetricRtol = 1e-2;
  static constexpr PetscInt kMetricMinIts = 5, kMetricMaxIts = 200;

  BomeOptions o_;
  PetscReal xi_y_ = 0, last_lambda_ = 0;
  PetscInt batch_ = 0;
  bool pc_ = false;
  LowerUpdate lower_;
  std::unique_ptr<HessianKsp> metric_;  // M = H⁻¹ by CG when the problem has no M and ŷ takes Newton steps
  LowerSpectrum spectrum_;
  PetscInt metric_budget_ = 0;
  bool user_metric_budget_ = false;
  bool normalize_ = false;  // -bilevel_bome_normalize or its rule, in force
  petsc::VecHandle y_hat_, qy_, fy_, mqy_, mfy_, qx_, gx_hat_, fx_;
  StepSamplers s_;
};

}  // namespace

std::unique_ptr<Algorithm> create_bome() {
  return std::make_unique<Bome>();
}

}  // namespace bilevel
