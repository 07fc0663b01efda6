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
/// Options (-bilevel_bome_*): inner_steps, inner_step, lower_step, eta, barrier, inner_warm_start.
#include <petscviewer.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "bilevel/blocks/hessian_shell.hpp"
#include "bilevel/blocks/lower_solver.hpp"
#include "bilevel/blocks/upper_stepper.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of Bome (paper / benchopt defaults except inner_warm_start). Options database keys in brackets.
struct BomeOptions {
  PetscInt inner_steps = 10;           ///< [-bilevel_bome_inner_steps] T gradient steps for ŷ ≈ y*(x_k)
  PetscReal inner_step = 0;            ///< [-bilevel_bome_inner_step] step a of those steps; 0: 1/L
  PetscReal lower_step = 0;            ///< [-bilevel_bome_lower_step] ξ_y, outer step on y; 0: a/2
  PetscReal eta = 0.5;                 ///< [-bilevel_bome_eta] barrier coefficient η
  std::string barrier = "grad_norm";   ///< [-bilevel_bome_barrier grad_norm|value] φ = η||∇q̂||² or η q̂
  bool inner_warm_start = true;        ///< [-bilevel_bome_inner_warm_start] ŷ from the previous ŷ (else y_k)
};

class Bome : public Algorithm {
 public:
  std::string_view type() const override { return "bome"; }
  Capability requirements() const override {
    return o_.barrier == "value" ? Capability::LowerGradX | Capability::LowerValue : Capability::LowerGradX;
  }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.inner_steps = opts.integer("inner_steps", o_.inner_steps, "gradient steps T for the value-function point", 0);
    o_.inner_step = opts.real("inner_step", o_.inner_step, "step of those steps (0: 1/L estimated by SLEPc)", 0.0);
    o_.lower_step = opts.real("lower_step", o_.lower_step, "outer step on y (0: half the inner step)", 0.0);
    o_.eta = opts.real("eta", o_.eta, "barrier coefficient eta", 0.0);
    o_.barrier = opts.choice("barrier", o_.barrier, {"grad_norm", "value"},
                             "control barrier: eta*|grad q|^2 (grad_norm) or eta*q (value)");
    o_.inner_warm_start = opts.boolean("inner_warm_start", o_.inner_warm_start,
                                       "start the T steps from the previous point (else from y_k, as the paper)");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    a_ = o_.inner_step;
    if (a_ == 0) {
      const ProblemHints h = p.hints();
      a_ = 1.0 / (h.lower_lipschitz ? *h.lower_lipschitz : estimate_lower_lipschitz(p, ctx.x, ctx.y));
    }
    xi_y_ = o_.lower_step > 0 ? o_.lower_step : 0.5 * a_;
    steps_.setup(ctx.y);
    y_hat_ = p.create_lower_vec();
    qy_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    qx_ = p.create_upper_vec();
    gx_hat_ = p.create_upper_vec();
    fx_ = p.create_upper_vec();
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, y_hat_));
    batch_ = has(p.capabilities(), Capability::Stochastic) ? ctx.batch_size : 0;
    inner_ = BatchSampler(ctx.seed, 1);
    lower_ = BatchSampler(ctx.seed, 2);
    outer_ = BatchSampler(ctx.seed, 4);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const DatasetSizes n = p.dataset_sizes();
    StepResult r;
    // ŷ: T steps ŷ <- ŷ − a ∇_y g(x_k, ŷ) from y_k (paper) or from the previous ŷ (Alg. 1, line 3).
    if (!o_.inner_warm_start) BILEVEL_PETSC_CALL(VecCopy(ctx.y, y_hat_));
    steps_.run(p, ctx.x, y_hat_, o_.inner_steps, a_, &inner_, batch_);
    r.inner_iterations = o_.inner_steps;
    // One lower batch for every term of q̂ (so its value and gradient are those of one function).
    const Batch lb = (batch_ > 0 && n.lower > 0) ? lower_.next(n.lower, batch_) : Batch::all();
    p.lower_grad_x(ctx.x, ctx.y, lb, qx_);      // ∇_x g(x_k, y_k)
    p.lower_grad_x(ctx.x, y_hat_, lb, gx_hat_);  // ∇_x g(x_k, ŷ)
    BILEVEL_PETSC_CALL(VecAXPY(qx_, -1.0, gx_hat_));  // ∇_x q̂ = ∇_x g(x_k, y_k) − ∇_x g(x_k, ŷ)
    p.lower_grad_y(ctx.x, ctx.y, lb, qy_);      // ∇_y q̂ = ∇_y g(x_k, y_k)
    const Batch ub = (ctx.upper_batch_size > 0 && n.upper > 0) ? outer_.next(n.upper, ctx.upper_batch_size)
                                                               : Batch::all();
    p.upper_grad(ctx.x, ctx.y, ub, fx_, fy_);   // ∇f = [∇_x f; ∇_y f] at (x_k, y_k)
    PetscReal q_value = 0;
    if (o_.barrier == "value")
      q_value = p.lower_value(ctx.x, ctx.y, lb) - p.lower_value(ctx.x, y_hat_, lb);  // q̂(x_k, y_k)
    // <∇f, ∇q̂> and ||∇q̂||² in one split reduction.
    PetscReal fq_x = 0, fq_y = 0, qq_x = 0, qq_y = 0;
    BILEVEL_PETSC_CALL(VecDotBegin(fx_, qx_, &fq_x));
    BILEVEL_PETSC_CALL(VecDotBegin(fy_, qy_, &fq_y));
    BILEVEL_PETSC_CALL(VecDotBegin(qx_, qx_, &qq_x));
    BILEVEL_PETSC_CALL(VecDotBegin(qy_, qy_, &qq_y));
    BILEVEL_PETSC_CALL(VecDotEnd(fx_, qx_, &fq_x));
    BILEVEL_PETSC_CALL(VecDotEnd(fy_, qy_, &fq_y));
    BILEVEL_PETSC_CALL(VecDotEnd(qx_, qx_, &qq_x));
    BILEVEL_PETSC_CALL(VecDotEnd(qy_, qy_, &qq_y));
    const PetscReal qq = qq_x + qq_y;
    const PetscReal phi = o_.barrier == "value" ? o_.eta * q_value : o_.eta * qq;  // control barrier φ
    const PetscReal lambda = std::max<PetscReal>((phi - (fq_x + fq_y)) / (qq + 1e-8), 0);  // λ (Alg. 1)
    BILEVEL_PETSC_CALL(VecAXPY(fx_, lambda, qx_));  // d_x = ∇_x f + λ ∇_x q̂
    BILEVEL_PETSC_CALL(VecAXPY(fy_, lambda, qy_));  // d_y = ∇_y f + λ ∇_y q̂
    PetscReal dx_norm = 0;
    BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &dx_norm));
    r.hypergradient_norm = dx_norm;
    r.lower_residual = std::sqrt(qq_y);  // ||∇_y g(x_k, y_k)||
    ctx.upper.step(ctx.x, fx_);                      // x_{k+1} = P(x_k − ξ_x d_x)
    BILEVEL_PETSC_CALL(VecAXPY(ctx.y, -xi_y_, fy_));  // y_{k+1} = y_k − ξ_y d_y
    return r;
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "bome: value-function method with a dynamic barrier (Liu, Ye, Wright, Stone & Liu, NeurIPS 2022, "
        "arXiv 2209.08709, Alg. 1)\n"
        "  inner_steps %d, inner_step %g, lower_step %g, eta %g, barrier %s, inner_warm_start %s, batch %d\n",
        static_cast<int>(o_.inner_steps), a_ > 0 ? a_ : o_.inner_step, xi_y_ > 0 ? xi_y_ : o_.lower_step, o_.eta,
        o_.barrier.c_str(), o_.inner_warm_start ? "yes" : "no (restart from y_k, as the paper)",
        static_cast<int>(batch_)));
  }

 private:
  BomeOptions o_;
  PetscReal a_ = 0, xi_y_ = 0;
  PetscInt batch_ = 0;
  GradientSteps steps_;
  petsc::VecHandle y_hat_, qy_, fy_, qx_, gx_hat_, fx_;
  BatchSampler inner_, lower_, outer_;
};

}  // namespace

std::unique_ptr<Algorithm> create_bome() { return std::make_unique<Bome>(); }

}  // namespace bilevel
