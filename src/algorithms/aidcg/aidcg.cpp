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

#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
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
    LowerUpdateOptions lo;
    lo.kind = o_.lower;
    lo.steps = o_.inner_steps;
    lo.step = o_.inner_step;
    lo.newton_cg_its = o_.newton_cg_its;
    lower_.setup(p, ctx.x, ctx.y, lo, 10);
    cg_ = std::make_unique<CgLinearSolver>(p, ctx.y, o_.cg_max_it, o_.cg_rtol);
    implicit_.setup(p, ctx.seed, {ctx.batch_size, ctx.upper_batch_size});
  }

  StepResult step(AlgorithmContext& ctx) override {
    // y-update (T steps, warm start), ∇f, v ≈ H⁻¹ ∇_y f by CG, x <- P(x − β (∇_x f − J v))
    return implicit_.run(ctx, lower_, [&](Vec b, Vec v, StepResult& r) {
      if (!o_.warm_start) BILEVEL_PETSC_CALL(VecSet(v, 0.0));
      r.inner_iterations = cg_->solve(ctx.x, ctx.y, implicit_.next_hessian_batch(ctx.problem), b, v);  // v ≈ H⁻¹ b
      r.linear_residual = cg_->last_residual();
    });
  }

  void declare_state(StateRegistry& state) override {
    implicit_.declare_state(state);
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer, "aidcg: AID with CG (Ji, Yang & Liang 2021; Grazzi et al. 2020)\n"
                "  lower %s, inner_steps %d, inner_step %g, cg_max_it %d, cg_rtol %g, warm_start %s\n",
        lower_.kind().c_str(), static_cast<int>(lower_.steps()), lower_.step() > 0 ? lower_.step() : o_.inner_step,
        static_cast<int>(o_.cg_max_it),
        o_.cg_rtol, o_.warm_start ? "yes" : "no"));
  }

 private:
  AidCgOptions o_;
  LowerUpdate lower_;
  std::unique_ptr<CgLinearSolver> cg_;
  ImplicitStep implicit_;
};

}  // namespace

std::unique_ptr<Algorithm> create_aidcg() { return std::make_unique<AidCg>(); }

}  // namespace bilevel
