/// LancBiO: bilevel optimisation with a dynamic Lanczos hypergradient (Yang, Gao & Yuan, "Accelerating
/// inexact hypergradient descent for bilevel optimization via Krylov subspace", ICLR 2025, arXiv 2404.03331,
/// Alg. 2 with the DLanczos subroutine Alg. 4; algorithms.md §2.4, synthetic-code version).
///
/// Per outer iteration k: T gradient steps on y (warm start); b_k = ∇_y f(x_k, y_{k+1}); every dim_fre
/// iterations the subspace dimension grows, m <- min(⌈m · dim_inc⌉, max_dim); when the basis holds m
/// vectors (or broke down) the process restarts at the anchor v̄ = v_k with w = H v̄; one Lanczos step with
/// the current Hessian; v_{k+1} = v̄ + Q_j T_j⁻¹ Q_jᵀ(b_k − w) (Thomas algorithm on every rank); then
/// x <- x − λ (∇_x f − J v_{k+1}). Basis in a SLEPc BV (block DynamicLanczos), no re-orthogonalisation.
/// Average cost (1 + 1/m) HVP + T ∇_y g + 1 ∇f + 1 JVP per iteration.
/// The y-update is the paper's T gradient steps unless the problem hints "newton"
/// (ProblemHints::lower_update, for ill-conditioned lower levels; block LowerUpdate); -bilevel_lancbio_lower
/// overrides the hint. With a problem preconditioner M ≈ H⁻¹ (Capability::LowerPreconditioner) the Lanczos
/// process runs on Lᵀ H L (M = L Lᵀ; block DynamicLanczos, preconditioned variant), which the paper does not
/// have: on ill-conditioned lower levels (hyperclean, κ ≈ 1e5) it is what lets a basis of a few vectors solve
/// H v = b. Options (-bilevel_lancbio_*): lower, inner_steps, inner_step, initial_dim, dim_inc, dim_fre,
/// max_dim, exact_residual, precondition. Minibatches follow -bilevel_batch_size / -bilevel_upper_batch_size
/// (default full); on minibatches a cycle keeps the Hessian batch it restarted with (the paper is
/// deterministic; a new batch per Lanczos step mixed operators in one basis and v diverged).
#include <petscviewer.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bilevel/blocks/dynamic_lanczos.hpp"
#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of LancBio (defaults: the authors' synthetic-problem script). Options database keys in brackets.
struct LancBioOptions {
  /// [-bilevel_lancbio_lower auto|gd|newton], [-bilevel_lancbio_inner_steps] T (0: 5 gd / 1 newton),
  /// [-bilevel_lancbio_inner_step] θ (0: 1/L); Newton's CG: KSP -bilevel_inner_
  LowerUpdateOptions lower;
  PetscInt initial_dim = 1;     ///< [-bilevel_lancbio_initial_dim] m_0
  PetscReal dim_inc = 1.1;      ///< [-bilevel_lancbio_dim_inc] growth factor of m
  PetscInt dim_fre = 20;        ///< [-bilevel_lancbio_dim_fre] grow m every dim_fre outer iterations
  PetscInt max_dim = 80;        ///< [-bilevel_lancbio_max_dim] m_max, columns of the basis
  bool exact_residual = false;  ///< [-bilevel_lancbio_exact_residual] report ||H v − b|| with one more HVP
  bool precondition = true;     ///< [-bilevel_lancbio_precondition] Lanczos preconditioned by the problem's M
};

class LancBio : public Algorithm {
 public:
  std::string_view type() const override { return "lancbio"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    read_lower_update_options(opts, o_.lower, 5);
    o_.initial_dim = opts.integer("initial_dim", o_.initial_dim, "initial subspace dimension m_0", 1);
    o_.dim_inc = opts.real("dim_inc", o_.dim_inc, "growth factor of the subspace dimension", 1.0);
    o_.dim_fre = opts.integer("dim_fre", o_.dim_fre, "grow the dimension every dim_fre outer iterations", 1);
    o_.max_dim = opts.integer("max_dim", o_.max_dim, "largest subspace dimension m_max", 1);
    o_.exact_residual = opts.boolean("exact_residual",
                                     o_.exact_residual,
                                     "compute ||H v - grad_y f|| exactly (one more HVP per iteration)");
    o_.precondition = opts.boolean(
        "precondition",
        o_.precondition,
        "precondition the Lanczos process with the problem's M ~ inverse Hessian, if it has one");
    if (o_.initial_dim > o_.max_dim)
      throw InputError("option -bilevel_lancbio_initial_dim must be <= -bilevel_lancbio_max_dim");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    lower_.setup(p, ctx.x, ctx.y, o_.lower, 5, ctx.batch_size);
    dim_ = o_.initial_dim;
    lanczos_.setup(
        ctx.y, o_.max_dim, o_.precondition && has(p.capabilities(), Capability::LowerPreconditioner));
    hv_ = p.create_lower_vec();
    batch_ = has(p.capabilities(), Capability::Stochastic) ? ctx.batch_size : 0;
    implicit_.setup(p, ctx.seed, {batch_, ctx.upper_batch_size});
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    // y-update (T steps, warm start), b_k = ∇_y f, the v-update below, x <- x − λ (∇_x f − J v_{k+1}) (Alg.
    // 2)
    return implicit_.run(ctx, lower_, [&](Vec b, Vec v, StepResult& r) {
      // Dimension schedule (Alg. 2): m <- min(⌈m · dim_inc⌉, m_max) every dim_fre iterations.
      if (ctx.iteration > 0 && ctx.iteration % o_.dim_fre == 0)
        dim_ = std::min<PetscInt>(
            o_.max_dim, static_cast<PetscInt>(std::ceil(static_cast<PetscReal>(dim_) * o_.dim_inc)));
      const Batch drawn = implicit_.next_hessian_batch(p);
      // Restart when the basis holds m vectors (or the recurrence broke down): v̄ = v_k, w = A_k v̄ (Alg. 4).
      // On minibatches a cycle keeps the batch it restarted with, so that its steps are Lanczos steps of one
      // operator H_B(x_k, y_k) that moves with x and y as in the paper; with a new batch per step the basis
      // mixed operators and v grew without bound (docs/benchmarks.md, "Decaying upper steps on minibatches").
      if (lanczos_.dimension() == 0 || lanczos_.dimension() >= dim_ || lanczos_.exhausted()) {
        cycle_full_ = drawn.full;
        cycle_rows_.assign(drawn.indices.begin(), drawn.indices.end());
        lanczos_.restart(p, ctx.x, ctx.y, drawn, v, b);
      }
      const Batch hb = cycle_full_ ? Batch::all() : Batch::of(cycle_rows_);
      lanczos_.extend(p, ctx.x, ctx.y, hb);      // one Lanczos step with A_k = H(x_k, y_{k+1}; B)
      r.linear_residual = lanczos_.solve(b, v);  // v_{k+1} = v̄ + Q_j T_j⁻¹ Q_jᵀ(b_k − w)
      r.inner_iterations = lanczos_.dimension();
      if (o_.exact_residual) {
        p.lower_hvp(ctx.x, ctx.y, hb, v, hv_);  // A_k v_{k+1}
        BILEVEL_PETSC_CALL(VecAXPY(hv_, -1.0, b));
        BILEVEL_PETSC_CALL(VecNorm(hv_, NORM_2, &r.linear_residual));  // ||A_k v_{k+1} − b_k||
      }
    });
  }

  void declare_state(StateRegistry& state) override {
    implicit_.declare_state(state);
    lanczos_.declare_state(state);
    state.add("lancbio.dim", dim_);
    state.add("lancbio.cycle_full", cycle_full_);
    state.add("lancbio.cycle_rows", cycle_rows_);
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "lancbio: dynamic Lanczos hypergradient (Yang, Gao & Yuan, ICLR 2025, arXiv 2404.03331, Alg. 2/4)\n"
        "  lower %s, inner_steps %d, inner_step %g, initial_dim %d, dim_inc %g, dim_fre %d, max_dim %d "
        "(current %d),\n"
        "  basis in a SLEPc BV without re-orthogonalisation, %s, residual %s, batch %d\n",
        lower_.kind_name(),
        static_cast<int>(lower_.steps()),
        lower_.step(),
        static_cast<int>(o_.initial_dim),
        o_.dim_inc,
        static_cast<int>(o_.dim_fre),
        static_cast<int>(o_.max_dim),
        static_cast<int>(dim_),
        lanczos_.preconditioned() ? "preconditioned by the problem's M" : "unpreconditioned",
        o_.exact_residual ? "exact (1 extra HVP)" : "Lanczos estimate (M-norm when preconditioned)",
        static_cast<int>(batch_)));
    lower_.view_ksp(viewer);
  }

 private:
  LancBioOptions o_;
  PetscInt dim_ = 1, batch_ = 0;
  bool cycle_full_ = true;  // the current cycle's Hessian batch: full, or cycle_rows_
  std::vector<PetscInt> cycle_rows_;
  LowerUpdate lower_;
  DynamicLanczos lanczos_;
  ImplicitStep implicit_;
  petsc::VecHandle hv_;
};

}  // namespace

std::unique_ptr<Algorithm> create_lancbio() {
  return std::make_unique<LancBio>();
}

}  // namespace bilevel
