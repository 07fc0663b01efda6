/// AID-CG: approximate implicit differentiation with conjugate gradients (Ji, Yang & Liang, ICML 2021;
/// Grazzi et al., ICML 2020; algorithms.md §3.1).
///
/// Per outer iteration: T gradient steps on y (warm start), v ≈ H⁻¹ ∇_y f by N CG iterations on the lower
/// Hessian (KSP, MATSHELL, warm-started from the previous v), then x <- x − β (∇_x f − J v).
/// Options (-bilevel_aidcg_*): lower (gd|newton), inner_steps, inner_step, newton_cg_its, cg_max_it, cg_rtol,
/// warm_start.
/// Sub-solver prefix: -bilevel_hyper_ksp_* (the CG of the linear system).
#include <petscviewer.h>

#include <memory>
#include <optional>

#include "bilevel/blocks/hessian_shell.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_solver.hpp"
#include "bilevel/blocks/upper_stepper.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/registry.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of AidCg. Options database keys in brackets.
struct AidCgOptions {
  std::string lower = "auto";   ///< [-bilevel_aidcg_lower auto|gd|newton] how y is updated; auto: the problem's hint
  PetscInt inner_steps = 0;     ///< [-bilevel_aidcg_inner_steps] T steps on y per outer iteration; 0: 10 gd / 1 newton
  PetscReal inner_step = 0;     ///< [-bilevel_aidcg_inner_step] step on y; 0: 1/L with L from SLEPc
  PetscInt cg_max_it = 10;      ///< [-bilevel_aidcg_cg_max_it] N CG iterations per outer iteration
  PetscReal cg_rtol = 1e-10;    ///< [-bilevel_aidcg_cg_rtol] CG relative tolerance
  bool warm_start = true;       ///< [-bilevel_aidcg_warm_start] start CG from the previous v
  PetscInt newton_cg_its = 5;   ///< [-bilevel_aidcg_newton_cg_its] CG iterations per Newton step (lower newton)
};

class AidCg : public Algorithm {
 public:
  std::string_view type() const override { return "aidcg"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.lower = opts.choice("lower", o_.lower, {"auto", "gd", "newton"}, "lower-level update (auto: problem hint)");
    o_.inner_steps = opts.integer("inner_steps", o_.inner_steps, "steps on y per outer iteration (0: 10 gd / 1 newton)", 0);
    o_.newton_cg_its = opts.integer("newton_cg_its", o_.newton_cg_its, "CG iterations per Newton step", 1);
    o_.inner_step = opts.real("inner_step", o_.inner_step, "step size on y (0: 1/L estimated by SLEPc)", 0.0);
    o_.cg_max_it = opts.integer("cg_max_it", o_.cg_max_it, "CG iterations per outer iteration", 1);
    o_.cg_rtol = opts.real("cg_rtol", o_.cg_rtol, "CG relative tolerance", 0.0, 1.0);
    o_.warm_start = opts.boolean("warm_start", o_.warm_start, "warm-start CG from the previous v");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    lower_kind_ = o_.lower == "auto" ? p.hints().lower_update : o_.lower;
    steps_per_iteration_ = o_.inner_steps > 0 ? o_.inner_steps : (lower_kind_ == "newton" ? 1 : 10);
    eta_ = o_.inner_step;
    if (eta_ == 0 && lower_kind_ == "gd") {
      const ProblemHints h = p.hints();
      eta_ = 1.0 / (h.lower_lipschitz ? *h.lower_lipschitz : estimate_lower_lipschitz(p, ctx.x, ctx.y));
    }
    steps_.setup(ctx.y);
    if (lower_kind_ == "newton") newton_.setup(p, ctx.y);
    cg_ = std::make_unique<CgLinearSolver>(p, ctx.y, o_.cg_max_it, o_.cg_rtol);
    v_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    jv_ = p.create_upper_vec();
    BILEVEL_PETSC_CALL(VecSet(v_, 0.0));
    lower_ = BatchSampler(ctx.seed, 1);
    upper_ = BatchSampler(ctx.seed, 4);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    StepResult r;
    const PetscInt batch = ctx.batch_size > 0 ? ctx.batch_size : 0;
    const DatasetSizes n = p.dataset_sizes();
    if (lower_kind_ == "newton") {
      // y <- y − H⁻¹∇_y g (truncated CG), T times, warm start from the previous outer iteration
      const Batch nb = batch > 0 ? lower_.next(n.lower, batch) : Batch::all();
      r.lower_residual = newton_.run(p, ctx.x, ctx.y, steps_per_iteration_, o_.newton_cg_its, nb);
    } else {
      // y <- y − η ∇_y g(x, y), T times (warm start from the previous outer iteration)
      r.lower_residual = steps_.run(p, ctx.x, ctx.y, steps_per_iteration_, eta_, &lower_, batch);
    }
    const Batch ub = ctx.upper_batch_size > 0 ? upper_.next(n.upper, ctx.upper_batch_size) : Batch::all();
    p.upper_grad(ctx.x, ctx.y, ub, fx_, fy_);  // ∇_x f, ∇_y f at (x, y_T)
    if (!o_.warm_start) BILEVEL_PETSC_CALL(VecSet(v_, 0.0));
    const Batch hb = batch > 0 ? lower_.next(n.lower, batch) : Batch::all();
    r.inner_iterations = cg_->solve(ctx.x, ctx.y, hb, fy_, v_);  // v ≈ H⁻¹ ∇_y f
    r.linear_residual = cg_->last_residual();
    p.lower_jvp(ctx.x, ctx.y, hb, v_, jv_);                     // J v
    BILEVEL_PETSC_CALL(VecAXPY(fx_, -1.0, jv_));                 // h = ∇_x f − J v
    BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &r.hypergradient_norm));
    ctx.upper.step(ctx.x, fx_);                                  // x <- P(x − β h) on the coordinator
    return r;
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer, "aidcg: AID with CG (Ji, Yang & Liang 2021; Grazzi et al. 2020)\n"
                "  lower %s, inner_steps %d, inner_step %g, cg_max_it %d, cg_rtol %g, warm_start %s\n",
        (lower_kind_.empty() ? o_.lower : lower_kind_).c_str(), static_cast<int>(steps_per_iteration_), eta_ > 0 ? eta_ : o_.inner_step, static_cast<int>(o_.cg_max_it),
        o_.cg_rtol, o_.warm_start ? "yes" : "no"));
  }

 private:
  AidCgOptions o_;
  std::string lower_kind_;
  PetscInt steps_per_iteration_ = 0;
  PetscReal eta_ = 0;
  GradientSteps steps_;
  NewtonSteps newton_;
  std::unique_ptr<CgLinearSolver> cg_;
  petsc::VecHandle v_, fy_, fx_, jv_;
  BatchSampler lower_, upper_;
};

}  // namespace

std::unique_ptr<Algorithm> create_aidcg() { return std::make_unique<AidCg>(); }

}  // namespace bilevel
