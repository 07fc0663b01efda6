/// stocBiO: stochastic bilevel optimisation with a Neumann-series hypergradient (Ji, Yang & Liang,
/// ICML 2021; algorithms.md §3.3, paper formula).
///
/// Per outer iteration: T SGD steps on y (fresh training batch each), p_0 = ∇_y f(x, y; D_F) on a validation
/// batch, Neumann v = η Σ_{q=0}^{Q} p_q with p_{q+1} = p_q − η H(x, y; B_q) p_q (fresh batch each), then
/// x <- x − β (∇_x f − J(x, y; D_G) v).
/// Steps: the default 1/L (of the y-steps and of the series) comes from the problem's bound L(x) when it has
/// one (BilevelProblem::lower_lipschitz_bound, e.g. logreg), renewed every outer iteration; otherwise from a
/// SLEPc estimate at the start. A fixed 1/L diverged on ijcnn1 once x raised e^{x} (docs/benchmarks.md).
/// Options (-bilevel_stocbio_*): inner_steps, inner_step, neumann_steps, neumann_eta, batch_size.
#include <petscviewer.h>

#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of Stocbio. Options database keys in brackets.
struct StocbioOptions {
  PetscInt inner_steps = 10;    ///< [-bilevel_stocbio_inner_steps] T
  PetscReal inner_step = 0;     ///< [-bilevel_stocbio_inner_step] 0: 1/L
  PetscInt neumann_steps = 10;  ///< [-bilevel_stocbio_neumann_steps] Q
  PetscReal neumann_eta = 0;    ///< [-bilevel_stocbio_neumann_eta] η of the series; 0: 1/L
  PetscInt batch_size = 256;    ///< [-bilevel_stocbio_batch_size] when -bilevel_batch_size is not given
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
    o_.batch_size = opts.integer(
        "batch_size", o_.batch_size, "minibatch size used when -bilevel_batch_size is not set (0: full)", 0);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const bool need_l = o_.inner_step == 0 || o_.neumann_eta == 0;
    // With a bound L(x) from the problem, the default steps 1/L follow x (see step()).
    const std::optional<PetscReal> bound = need_l ? p.lower_lipschitz_bound(ctx.x) : std::nullopt;
    follow_bound_ = bound.has_value();
    const PetscReal L = !need_l ? 0 : bound ? *bound : resolve_lower_lipschitz(p, ctx.x, ctx.y);
    eta_y_ = o_.inner_step > 0 ? o_.inner_step : 1.0 / L;
    eta_n_ = o_.neumann_eta > 0 ? o_.neumann_eta : 1.0 / L;
    batch_ = ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size;
    if (!has(p.capabilities(), Capability::Stochastic)) batch_ = 0;
    LowerUpdateOptions lo;  // SGD on y with the step above (the paper's update, whatever the problem hints)
    lo.kind = LowerUpdateKind::Gd;
    lo.steps = o_.inner_steps;
    lo.step = o_.inner_step > 0 || !follow_bound_ ? eta_y_ : 0;  // 0: LowerUpdate follows the bound
    lower_.setup(p, ctx.x, ctx.y, lo, o_.inner_steps);
    neumann_.setup(ctx.y);
    const PetscInt ubatch = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    implicit_.setup(p, ctx.seed, {batch_, ubatch});
  }

  StepResult step(AlgorithmContext& ctx) override {
    // T SGD steps on y, ∇f on D_F, Neumann v ≈ H⁻¹ ∇_y f (one fresh batch per term), x <- x − β (∇_x f − J v)
    if (follow_bound_ && o_.neumann_eta == 0) eta_n_ = 1.0 / *ctx.problem.lower_lipschitz_bound(ctx.x);
    return implicit_.run(ctx, lower_, [&](Vec b, Vec v, StepResult& r) {
      neumann_.solve(ctx.problem,
                     ctx.x,
                     ctx.y,
                     b,
                     v,
                     o_.neumann_steps,
                     eta_n_,
                     &implicit_.hessian_sampler(),
                     implicit_.batches().lower);
      r.inner_iterations = o_.neumann_steps;
    });
  }

  void declare_state(StateRegistry& state) override { implicit_.declare_state(state); }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "stocbio: Neumann-series stochastic bilevel (Ji, Yang & Liang 2021)\n"
        "  inner_steps %d, inner_step %g, neumann_steps %d, neumann_eta %g, batch %d\n",
        static_cast<int>(o_.inner_steps),
        eta_y_,
        static_cast<int>(o_.neumann_steps),
        eta_n_,
        static_cast<int>(batch_)));
  }

 private:
  StocbioOptions o_;
  PetscReal eta_y_ = 0, eta_n_ = 0;
  bool follow_bound_ = false;  // default steps 1/L from the problem's bound L(x), renewed every iteration
  PetscInt batch_ = 0;
  LowerUpdate lower_;
  NeumannSolver neumann_;
  ImplicitStep implicit_;
};

}  // namespace

std::unique_ptr<Algorithm> create_stocbio() {
  return std::make_unique<Stocbio>();
}

}  // namespace bilevel
