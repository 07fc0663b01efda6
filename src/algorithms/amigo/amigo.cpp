/// AmIGO: amortized implicit gradient optimization, AmIGO-GD and AmIGO-CG (Arbel & Mairal, ICLR 2022,
/// arXiv 2111.14580; algorithms.md §3.5).
///
/// Per outer iteration: T SGD steps on y (warm start, a fresh training batch each), b = ∇_y f(x, y; D_F) on
/// a validation batch, then M steps on the linear system H v = b warm-started from the previous v (the
/// amortization), then x <- x − γ (∇_x f − J(x, y; D_G) v):
///   gd (AmIGO-GD): v <- v − β (H(x, y; B_m) v − b), a fresh training batch B_m per step;
///   cg (AmIGO-CG): M CG iterations on H(x, y; B) v = b (one batch), the KSP -bilevel_hyper_.
/// Because v is carried over, its error contracts by (1 − β μ)^M per iteration (GD) while x settles, so the
/// estimate becomes exact at a fixed point of the outer loop: no truncation bias as in ITD or stocBiO.
/// Steps: the default β and the y step are 1/L, from the problem's bound L(x) when it has one (renewed every
/// iteration), else the hint or a SLEPc estimate at the start.
/// Options (-bilevel_amigo_*): linear_solver (gd|cg), inner_steps, inner_step, linear_steps, linear_step,
/// batch_size. The CG variant's KSP takes -bilevel_hyper_ksp_* (defaults max_it M, rtol 1e-10).
#include <petscviewer.h>

#include <array>
#include <memory>
#include <optional>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// The solver of H v = b: gradient steps (AmIGO-GD) or conjugate gradients (AmIGO-CG).
enum class AmigoLinearSolver { Gd, Cg };
constexpr std::array<Named<AmigoLinearSolver>, 2> kAmigoSolvers{
    {{"gd", AmigoLinearSolver::Gd}, {"cg", AmigoLinearSolver::Cg}}};

/// Settings of Amigo (benchopt's defaults T = M = 10). Options database keys in brackets.
struct AmigoOptions {
  AmigoLinearSolver solver = AmigoLinearSolver::Gd;  ///< [-bilevel_amigo_linear_solver gd|cg]
  PetscInt inner_steps = 10;                         ///< [-bilevel_amigo_inner_steps] T
  PetscReal inner_step = 0;                          ///< [-bilevel_amigo_inner_step] 0: 1/L
  PetscInt linear_steps = 10;                        ///< [-bilevel_amigo_linear_steps] M
  PetscReal linear_step = 0;                         ///< [-bilevel_amigo_linear_step] β of gd; 0: 1/L
  PetscInt batch_size = 64;   ///< [-bilevel_amigo_batch_size] when -bilevel_batch_size is not given
  PetscReal cg_rtol = 1e-10;  ///< the default of -bilevel_hyper_ksp_rtol
};

class Amigo : public Algorithm {
 public:
  std::string_view type() const override { return "amigo"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.solver = read_choice(
        opts, "linear_solver", o_.solver, kAmigoSolvers, "v-update: gd (AmIGO-GD) or cg (AmIGO-CG)");
    o_.inner_steps = opts.integer("inner_steps", o_.inner_steps, "SGD steps T on y per outer iteration", 0);
    o_.inner_step = opts.real("inner_step", o_.inner_step, "step on y (0: 1/L)", 0.0);
    o_.linear_steps =
        opts.integer("linear_steps", o_.linear_steps, "steps M on v per outer iteration (gd or cg)", 0);
    o_.linear_step = opts.real("linear_step", o_.linear_step, "step beta of the gd steps on v (0: 1/L)", 0.0);
    o_.batch_size = opts.integer(
        "batch_size", o_.batch_size, "minibatch size used when -bilevel_batch_size is not set (0: full)", 0);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const bool need_l = o_.inner_step == 0 || (o_.solver == AmigoLinearSolver::Gd && o_.linear_step == 0);
    const std::optional<PetscReal> bound = need_l ? p.lower_lipschitz_bound(ctx.x) : std::nullopt;
    follow_bound_ = bound.has_value();
    const PetscReal L = !need_l ? 0 : bound ? *bound : resolve_lower_lipschitz(p, ctx.x, ctx.y);
    eta_y_ = o_.inner_step > 0 ? o_.inner_step : 1.0 / L;
    beta_ = o_.linear_step > 0 ? o_.linear_step : (L > 0 ? 1.0 / L : 0);
    batch_ = ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size;
    if (!has(p.capabilities(), Capability::Stochastic)) batch_ = 0;
    LowerUpdateOptions lo;  // SGD on y (the paper's update)
    lo.kind = LowerUpdateKind::Gd;
    lo.steps = o_.inner_steps;
    lo.step = o_.inner_step > 0 || !follow_bound_ ? eta_y_ : 0;  // 0: LowerUpdate follows the bound
    lower_.setup(p, ctx.x, ctx.y, lo, o_.inner_steps, batch_);
    if (o_.solver == AmigoLinearSolver::Cg)
      cg_ = std::make_unique<CgLinearSolver>(p, ctx.y, o_.linear_steps, o_.cg_rtol);
    r_ = p.create_lower_vec();
    const PetscInt ubatch = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    implicit_.setup(p, ctx.seed, {batch_, ubatch});
  }

  StepResult step(AlgorithmContext& ctx) override {
    // T SGD steps on y, b = ∇_y f, M warm-started steps on H v = b, x <- x − γ (∇_x f − J v)
    if (follow_bound_ && o_.linear_step == 0) beta_ = 1.0 / *ctx.problem.lower_lipschitz_bound(ctx.x);
    return implicit_.run(ctx, lower_, [&](Vec b, Vec v, StepResult& r) {
      if (o_.solver == AmigoLinearSolver::Cg) {
        r.inner_iterations = cg_->solve(ctx.x, ctx.y, implicit_.next_hessian_batch(ctx.problem), b, v);
        r.linear_residual = cg_->last_residual();
        return;
      }
      for (PetscInt m = 0; m < o_.linear_steps; ++m) {
        const Batch hb = implicit_.next_hessian_batch(ctx.problem);
        ctx.problem.lower_hvp(ctx.x, ctx.y, hb, v, r_);  // r = H(B_m) v − b
        BILEVEL_PETSC_CALL(VecAXPY(r_, -1.0, b));
        if (m + 1 == o_.linear_steps) BILEVEL_PETSC_CALL(VecNorm(r_, NORM_2, &r.linear_residual));
        BILEVEL_PETSC_CALL(VecAXPY(v, -beta_, r_));  // v <- v − β r
      }
      r.inner_iterations = o_.linear_steps;
    });
  }

  void declare_state(StateRegistry& state) override { implicit_.declare_state(state, "amigo."); }

  void view(PetscViewer viewer) const override {
    const bool cg = o_.solver == AmigoLinearSolver::Cg;
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "amigo: AmIGO-%s, amortized implicit differentiation with a "
                                              "warm-started v (Arbel & Mairal 2022, arXiv 2111.14580)\n",
                                              cg ? "CG" : "GD"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "linear_solver %s, inner_steps %d, inner_step %g, linear_steps "
                                              "%d, linear_step %g, batch %d\n",
                                              name_of(o_.solver, kAmigoSolvers),
                                              static_cast<int>(o_.inner_steps),
                                              eta_y_,
                                              static_cast<int>(o_.linear_steps),
                                              cg ? 0.0 : beta_,
                                              static_cast<int>(batch_)));
    if (cg_) cg_->view(viewer, "linear system H v = grad_y f");
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  AmigoOptions o_;
  PetscReal eta_y_ = 0, beta_ = 0;
  bool follow_bound_ = false;  // default steps 1/L from the problem's bound L(x), renewed every iteration
  PetscInt batch_ = 0;
  LowerUpdate lower_;
  std::unique_ptr<CgLinearSolver> cg_;
  petsc::VecHandle r_;
  ImplicitStep implicit_;
};

}  // namespace

std::unique_ptr<Algorithm> create_amigo() {
  return std::make_unique<Amigo>();
}

}  // namespace bilevel
