/// stocBiO: stochastic bilevel optimisation with a Neumann-series hypergradient (Ji, Yang & Liang,
/// ICML 2021; algorithms.md §3.3, paper formula).
///
/// Per outer iteration: T SGD steps on y (fresh training batch each), p_0 = ∇_y f(x, y; D_F) on a validation
/// batch, Neumann v = η Σ_{q=0}^{Q} p_q with p_{q+1} = p_q − η H(x, y; B_q) p_q (fresh batch each), then
/// x <- x − β (∇_x f − J(x, y; D_G) v).
/// Options (-bilevel_stocbio_*): inner_steps, inner_step, neumann_steps, neumann_eta, batch_size.
#include <petscviewer.h>

#include "bilevel/blocks/hessian_shell.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_solver.hpp"
#include "bilevel/blocks/upper_stepper.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of Stocbio. Options database keys in brackets.
struct StocbioOptions {
  PetscInt inner_steps = 10;     ///< [-bilevel_stocbio_inner_steps] T
  PetscReal inner_step = 0;      ///< [-bilevel_stocbio_inner_step] 0: 1/L
  PetscInt neumann_steps = 10;   ///< [-bilevel_stocbio_neumann_steps] Q
  PetscReal neumann_eta = 0;     ///< [-bilevel_stocbio_neumann_eta] η of the series; 0: 1/L
  PetscInt batch_size = 256;     ///< [-bilevel_stocbio_batch_size] when -bilevel_batch_size is not given
};

class Stocbio : public Algorithm {
 public:
  std::string_view type() const override { return "stocbio"; }
  Capability requirements() const override { return Capability::None; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.inner_steps = opts.integer("inner_steps", o_.inner_steps, "SGD steps on y per outer iteration", 0);
    o_.inner_step = opts.real("inner_step", o_.inner_step, "step on y (0: 1/L estimated by SLEPc)", 0.0);
    o_.neumann_steps = opts.integer("neumann_steps", o_.neumann_steps, "Neumann terms Q", 0);
    o_.neumann_eta = opts.real("neumann_eta", o_.neumann_eta, "Neumann scaling eta (0: 1/L)", 0.0);
    o_.batch_size = opts.integer("batch_size", o_.batch_size,
                                 "minibatch size used when -bilevel_batch_size is not set (0: full)", 0);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const ProblemHints h = p.hints();
    const PetscReal L = (o_.inner_step == 0 || o_.neumann_eta == 0)
                            ? (h.lower_lipschitz ? *h.lower_lipschitz : estimate_lower_lipschitz(p, ctx.x, ctx.y))
                            : 0;
    eta_y_ = o_.inner_step > 0 ? o_.inner_step : 1.0 / L;
    eta_n_ = o_.neumann_eta > 0 ? o_.neumann_eta : 1.0 / L;
    batch_ = ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size;
    if (!has(p.capabilities(), Capability::Stochastic)) batch_ = 0;
    steps_.setup(ctx.y);
    neumann_.setup(ctx.y);
    v_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    jv_ = p.create_upper_vec();
    inner_ = BatchSampler(ctx.seed, 1);
    hess_ = BatchSampler(ctx.seed, 2);
    jac_ = BatchSampler(ctx.seed, 3);
    outer_ = BatchSampler(ctx.seed, 4);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const DatasetSizes n = p.dataset_sizes();
    StepResult r;
    r.lower_residual = steps_.run(p, ctx.x, ctx.y, o_.inner_steps, eta_y_, &inner_, batch_);  // SGD on y
    const PetscInt ubatch = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    const Batch df = (ubatch > 0 && n.upper > 0) ? outer_.next(n.upper, ubatch) : Batch::all();
    p.upper_grad(ctx.x, ctx.y, df, fx_, fy_);                                   // ∇_x f, ∇_y f on D_F
    neumann_.solve(p, ctx.x, ctx.y, fy_, v_, o_.neumann_steps, eta_n_, &hess_, batch_);  // v ≈ H⁻¹ ∇_y f
    const Batch dg = (batch_ > 0 && n.lower > 0) ? jac_.next(n.lower, batch_) : Batch::all();
    p.lower_jvp(ctx.x, ctx.y, dg, v_, jv_);                                     // J v on D_G
    BILEVEL_PETSC_CALL(VecAXPY(fx_, -1.0, jv_));                                // h = ∇_x f − J v
    BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &r.hypergradient_norm));
    ctx.upper.step(ctx.x, fx_);
    r.inner_iterations = o_.neumann_steps;
    return r;
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer, "stocbio: Neumann-series stochastic bilevel (Ji, Yang & Liang 2021)\n"
                "  inner_steps %d, inner_step %g, neumann_steps %d, neumann_eta %g, batch %d\n",
        static_cast<int>(o_.inner_steps), eta_y_, static_cast<int>(o_.neumann_steps), eta_n_,
        static_cast<int>(batch_)));
  }

 private:
  StocbioOptions o_;
  PetscReal eta_y_ = 0, eta_n_ = 0;
  PetscInt batch_ = 0;
  GradientSteps steps_;
  NeumannSolver neumann_;
  petsc::VecHandle v_, fy_, fx_, jv_;
  BatchSampler inner_, hess_, jac_, outer_;
};

}  // namespace

std::unique_ptr<Algorithm> create_stocbio() { return std::make_unique<Stocbio>(); }

}  // namespace bilevel
