/// SubBiO: bilevel optimisation with a two-dimensional subspace hypergradient (Yang, Gao & Yuan,
/// "Accelerating inexact hypergradient descent for bilevel optimization via Krylov subspace", ICLR 2025,
/// arXiv 2404.03331, Alg. 1; algorithms.md §2.4).
///
/// Per outer iteration k: T gradient steps on y (warm start); b_k = ∇_y f(x_k, y_{k+1}); with
/// A_k = H(x_k, y_{k+1}), v_{k+1} = W (Wᵀ A_k W)⁻¹ Wᵀ b_k on S_k = span{b_k, (I − η A_k) v_k} (W the
/// orthonormalised pair, as in the hyper-cleaning code; block SubspaceSolver2D); then
/// x <- x − λ (∇_x f − J v_{k+1}). The Hessian products are taken at (x, y) (the synthetic script's
/// products at (x, v) are a bug, algorithms.md). Cost per iteration: T ∇_y g + 3 HVP + 1 ∇f + 1 JVP.
/// The y-update is the paper's T gradient steps unless the problem hints "newton"
/// (ProblemHints::lower_update; block LowerUpdate); -bilevel_subbio_lower overrides the hint. With a problem
/// preconditioner M ≈ H⁻¹ (Capability::LowerPreconditioner) the subspace is span{M b, (I − η M A_k) v_k} with
/// η = 1/λ_max(M A) from 20 power steps at setup (block SubspaceSolver2D, preconditioned; not in the paper).
/// Options (-bilevel_subbio_*): lower, inner_steps, inner_step, subspace_step (η), precondition. Minibatches
/// follow -bilevel_batch_size / -bilevel_upper_batch_size (default full).
#include <petscviewer.h>

#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/blocks/subspace_2d.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of SubBio (defaults: the authors' synthetic script, η = θ). Options database keys in brackets.
struct SubBioOptions {
  /// [-bilevel_subbio_lower auto|gd|newton], [-bilevel_subbio_inner_steps] T (0: 5 gd / 1 newton),
  /// [-bilevel_subbio_inner_step] θ (0: 1/L); Newton's CG: KSP -bilevel_inner_
  LowerUpdateOptions lower;
  PetscReal subspace_step = 0;  ///< [-bilevel_subbio_subspace_step] η of (I − η A) v; 0: θ (1/L with newton)
  bool precondition = true;  ///< [-bilevel_subbio_precondition] subspace span{M b, (I − η M A) v}
};

class SubBio : public Algorithm {
 public:
  std::string_view type() const override { return "subbio"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    read_lower_update_options(opts, o_.lower, 5);
    o_.subspace_step = opts.real(
        "subspace_step",
        o_.subspace_step,
        "eta of the second direction (I - eta H) v (0: the step on y; 1/lambda_max(M H) when preconditioned)",
        0.0);
    o_.precondition =
        opts.boolean("precondition",
                     o_.precondition,
                     "build the subspace from the problem's M ~ inverse Hessian, if it has one");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    lower_.setup(p, ctx.x, ctx.y, o_.lower, 5, ctx.batch_size);
    const bool pc = o_.precondition && has(p.capabilities(), Capability::LowerPreconditioner);
    // η: the step of the Richardson iteration the subspace contains; with M, 1/λ_max(M H) (power method)
    eta_ = o_.subspace_step > 0 ? o_.subspace_step
           : pc                 ? 1.0 / estimate_preconditioned_lipschitz(p, ctx.x, ctx.y)
                                : lower_.step();
    if (eta_ == 0) eta_ = 1.0 / resolve_lower_lipschitz(p, ctx.x, ctx.y);  // Newton on y: η = 1/L
    subspace_.setup(ctx.y, pc);
    batch_ = has(p.capabilities(), Capability::Stochastic) ? ctx.batch_size : 0;
    implicit_.setup(p, ctx.seed, {batch_, ctx.upper_batch_size});
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    // y-update (T steps, warm start), b_k = ∇_y f, the v-update below, x <- x − λ (∇_x f − J v_{k+1}) (Alg.
    // 1)
    return implicit_.run(ctx, lower_, [&](Vec b, Vec v, StepResult& r) {
      // v_{k+1} = W (Wᵀ A_k W)⁻¹ Wᵀ b_k,  W = orth[b_k, (I − η A_k) v_k]  (Alg. 1, v-update)
      const Subspace2DResult s =
          subspace_.solve(p, ctx.x, ctx.y, implicit_.next_hessian_batch(p), b, eta_, v);
      r.linear_residual = s.residual;  // ||A_k v_{k+1} − b_k|| from the products A_k W
      r.inner_iterations = s.dimension;
    });
  }

  void declare_state(StateRegistry& state) override { implicit_.declare_state(state); }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "subbio: two-dimensional subspace hypergradient (Yang, Gao & Yuan, ICLR 2025, arXiv 2404.03331, Alg. "
        "1)\n"
        "  lower %s, inner_steps %d, inner_step %g, subspace_step %g, %s, batch %d\n",
        lower_.kind_name(),
        static_cast<int>(lower_.steps()),
        lower_.step(),
        eta_ > 0 ? eta_ : o_.subspace_step,
        subspace_.preconditioned() ? "subspace span{M b, (I - eta M H) v} (problem's M)"
                                   : "subspace span{b, (I - eta H) v}",
        static_cast<int>(batch_)));
    lower_.view_ksp(viewer);
  }

 private:
  SubBioOptions o_;
  PetscReal eta_ = 0;
  PetscInt batch_ = 0;
  LowerUpdate lower_;
  SubspaceSolver2D subspace_;
  ImplicitStep implicit_;
};

}  // namespace

std::unique_ptr<Algorithm> create_subbio() {
  return std::make_unique<SubBio>();
}

}  // namespace bilevel
