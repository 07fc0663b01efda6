/// AID-CG: approximate implicit differentiation with conjugate gradients (Ji, Yang & Liang, ICML 2021;
/// Grazzi et al., ICML 2020; algorithms.md §3.1).
///
/// Per outer iteration: T gradient steps on y (warm start), v ≈ H⁻¹ ∇_y f by N CG iterations on the lower
/// Hessian (KSP, MATSHELL, warm-started from the previous v), then x <- x − β (∇_x f − J v).
/// Options (-bilevel_aidcg_*): lower (auto|gd|newton), inner_steps, inner_step.
/// Sub-solvers: the CG of the linear system is the KSP -bilevel_hyper_ (method defaults: max_it N = 10,
/// rtol 1e-10, warm start from the previous v; -bilevel_hyper_ksp_max_it, -bilevel_hyper_ksp_rtol and
/// -bilevel_hyper_ksp_initial_guess_nonzero override them); Newton steps on y use the KSP -bilevel_inner_.
#include <petscviewer.h>

#include <memory>

#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/registry.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of AidCg. Options database keys in brackets.
struct AidCgOptions {
  /// [-bilevel_aidcg_lower auto|gd|newton], [-bilevel_aidcg_inner_steps] T (0: 10 gd / 1 newton),
  /// [-bilevel_aidcg_inner_step] θ (0: 1/L)
  LowerUpdateOptions lower;
  PetscInt cg_max_it = 10;    ///< N, the default of -bilevel_hyper_ksp_max_it
  PetscReal cg_rtol = 1e-10;  ///< the default of -bilevel_hyper_ksp_rtol
};

class AidCg : public Algorithm {
 public:
  std::string_view type() const override { return "aidcg"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    read_lower_update_options(opts, o_.lower, 10);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    lower_.setup(p, ctx.x, ctx.y, o_.lower, 10, ctx.batch_size);
    cg_ = std::make_unique<CgLinearSolver>(p, ctx.y, o_.cg_max_it, o_.cg_rtol);
    implicit_.setup(p, ctx.seed, {ctx.batch_size, ctx.upper_batch_size});
  }

  StepResult step(AlgorithmContext& ctx) override {
    // y-update (T steps, warm start), ∇f, v ≈ H⁻¹ ∇_y f by CG, x <- P(x − β (∇_x f − J v))
    return implicit_.run(ctx, lower_, [&](Vec b, Vec v, StepResult& r) {
      r.inner_iterations =
          cg_->solve(ctx.x, ctx.y, implicit_.next_hessian_batch(ctx.problem), b, v);  // v ≈ H⁻¹ b
      r.linear_residual = cg_->last_residual();
    });
  }

  void declare_state(StateRegistry& state) override { implicit_.declare_state(state); }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(
        PetscViewerASCIIPrintf(viewer, "aidcg: AID with CG (Ji, Yang & Liang 2021; Grazzi et al. 2020)\n"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    lower_.view(viewer);
    if (cg_)
      cg_->view(viewer, "linear system H v = grad_y f");
    else
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer,
          "linear system H v = grad_y f: KSP -bilevel_hyper_ made at setup (defaults rtol %g, max_it %d)\n",
          o_.cg_rtol,
          static_cast<int>(o_.cg_max_it)));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  AidCgOptions o_;
  LowerUpdate lower_;
  std::unique_ptr<CgLinearSolver> cg_;
  ImplicitStep implicit_;
};

}  // namespace

std::unique_ptr<Algorithm> create_aidcg() {
  return std::make_unique<AidCg>();
}

}  // namespace bilevel
