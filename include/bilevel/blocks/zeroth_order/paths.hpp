#pragma once
/// \file Inner paths of zeroth-order hypergradient methods: the lower-level iterates y_N(x) from one start,
/// at x and at perturbed points x + μ u_j, whose differences see the response Jacobian ∂y_N/∂x.
///
/// Every path takes the same N steps from the same start (y⁰, y⁻¹) (Sow, Ji & Liang, NeurIPS 2022, Alg. 1):
///   y_{t+1} = y_t − a M ∇_y g(x, y_t; B_t) + β (y_t − y_{t−1}),  t = 0..N−1,
/// on one shared minibatch sequence B_1..B_N, with M = I or the problem's cheap preconditioner M ≈ H⁻¹
/// built at (x, y⁰). The paths advance side by side, one step at a time, so their first gradients (one y⁰,
/// several x) come from one lower_grad_y_multi call and M is applied to all gradients of a step in one call.
#include <petscvec.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "bilevel/blocks/zeroth_order/directions.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/subcomm.hpp"

namespace bilevel {

/// One minibatch sequence B_1..B_N, replayed by every path of an outer iteration. Storage allocated once.
/// Not collective (the batches are replicated).
class BatchSequence {
 public:
  /// N = steps batches of `size` samples (0: N full batches).
  void setup(PetscInt steps, PetscInt size);
  /// Draws the next sequence from `sampler` over n samples (nothing for full batches).
  void draw(BatchSampler& sampler, PetscInt n);
  std::span<const Batch> batches() const { return batches_; }
  /// The samples of B_1..B_N, concatenated (empty for full batches).
  std::span<const PetscInt> indices() const { return indices_; }

 private:
  PetscInt size_ = 0;
  std::vector<PetscInt> indices_;
  std::vector<Batch> batches_;
};

/// a, β and N of the paths: the given ones (a > 0, β ≥ 0, N > 0), the others derived.
///   preconditioned: a = 1/λ_max(M H) (20 power steps, the cheap M at (x, y)), β = 0, N = 10;
///   with μ_g (ProblemHints::lower_strong_convexity) below L: the optimal heavy ball a = 4/(√L + √μ_g)²,
///     β = ((√κ − 1)/(√κ + 1))², N = ⌈2√κ⌉ in [10, 200], κ = L/μ_g, since the bias of the N-step Jacobian
///     decays like (1 − 2/√κ)^N for heavy ball against (1 − a μ_g)^N for gradient descent;
///   otherwise gradient descent, a = 1/L, β = 0, N = 10 (the paper's setting).
/// L: ProblemHints::lower_lipschitz, else SLEPc's estimate at (x, y) (only when something is derived).
struct PathParameters {
  PetscReal a = 0;       ///< step (0: derive)
  PetscReal beta = -1;   ///< heavy-ball momentum (−1: derive; 0: gradient descent)
  PetscInt steps = 0;    ///< N (0: derive)
  bool derived = false;  ///< set by derive_path_parameters: a and β came from L and μ_g (or λ_max(M H))
};
/// The derivation above from given L and μ (μ <= 0: unknown, gradient descent). Not collective.
PathParameters path_parameters_from_spectrum(PathParameters given, PetscReal L, PetscReal mu);
/// With `precondition`, a = 1/λ_max(M H_B): the largest of the full batch's and, for paths on minibatches of
/// `batch_size` (0: full), three minibatches' power estimates (estimate_preconditioned_lipschitz_minibatch,
/// its batches from `seed`; a minibatch's can exceed the full batch's). Collective.
PathParameters derive_path_parameters(BilevelProblem& p,
                                      Vec x,
                                      Vec y,
                                      PathParameters given,
                                      bool precondition,
                                      PetscInt batch_size = 0,
                                      std::uint64_t seed = 0);

/// The path iteration's parameters.
struct PathSteps {
  std::span<const Batch> batches;  ///< B_1..B_N
  PetscReal a = 0;                 ///< step
  PetscReal beta = 0;              ///< heavy-ball momentum (0: gradient descent)
  bool precondition = false;       ///< M = the problem's PreconditionerKind::Cheap (else M = I)
};

/// The main path y_N(x) and Q perturbed paths y_N(x + μ u_j), and their differences
///   c_j = (y_N(x + μ u_j) − y_N(x))ᵀ v / μ.
/// Executors: all paths side by side on the problem's communicator, or on G sub-communicators (contiguous
/// rank blocks; the main path on block 0, path j on block j mod G), each running its own paths on a copy
/// of the problem (BilevelProblem::clone_on): the start goes to the blocks, block 0 returns the main
/// path's (y_N, y_{N−1}), and the Q differences come back in one reduction. The blocks' oracle calls are
/// added to the problem's counts once per block.
class PerturbedPaths {
 public:
  PerturbedPaths();
  ~PerturbedPaths();
  /// Q = q perturbed paths (0: the main path only). groups > 1 asks for that many blocks (at most the
  /// ranks and Q + 1); they are used when the problem can be rebuilt on them. Collective on p.comm().
  void setup(BilevelProblem& p, PetscInt q, PetscInt groups);
  /// Blocks in use (1: the problem's communicator). Not collective.
  PetscInt groups() const { return groups_; }
  /// Runs every path from (y0, y0_prev): the main one at x, path j at x + μ u_j. `u` holds the formed
  /// directions on the problem's communicator (read on one block only; blocks form their own with
  /// dirs.form()). With steps.precondition, first builds the cheap M at (x, y0) where the paths run.
  /// (y, y_prev) get the main path's (y_N, y_{N−1}) (distinct from y0, y0_prev). Returns ||∇_y g|| of the
  /// main path's last step. Collective.
  PetscReal run(Vec x,
                Vec y0,
                Vec y0_prev,
                Directions& dirs,
                std::span<const Vec> u,
                PetscReal mu,
                const PathSteps& steps,
                Vec y,
                Vec y_prev);
  /// c_j = (y_N(x + μ u_j) − y_N(x))ᵀ v / μ, j = 1..Q, after run() (y: its main y_N). Collective.
  void differences(Vec y, Vec v, PetscReal mu, std::span<PetscReal> c);

 private:
  struct Space;  // the paths' vectors on one communicator
  BilevelProblem* problem_ = nullptr;
  PetscInt q_ = 0, groups_ = 1;
  int group_ = 0, group_rank_ = 0;
  // Declaration order: the communicator outlives the problem and the vectors on it.
  petsc::OwnedComm subcomm_;
  std::shared_ptr<BilevelProblem> sub_problem_;
  std::unique_ptr<Space> space_;
  petsc::RedundantCopy upper_copy_, lower_copy_;
};

}  // namespace bilevel
