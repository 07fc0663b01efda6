#pragma once
/// \file The outer iteration shared by the implicit-differentiation methods (AID-CG, stocBiO, SubBiO,
/// LancBiO; algorithms.md §1, §2.4, §3.1, §3.3): each method supplies only its v-update.
#include <petscvec.h>

#include <cstdint>
#include <string>

#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// Minibatch sizes of one implicit step (0 = full batch): `lower` training samples for the y-update, each
/// Hessian batch and the Jacobian batch; `upper` validation samples for ∇f.
struct ImplicitBatches {
  PetscInt lower = 0;
  PetscInt upper = 0;
};

/// The tail every implicit-type method ends its iteration with: jv = J(x_k, y; jacobian_batch) v,
/// h = ∇_x f − jv (in place of fx), x <- P(x − step(h)) by the upper stepper; returns ||h||. A non-finite
/// ||h|| is a NumericalFailure(DIVERGED_NAN), thrown before x moves. Collective.
PetscReal hypergradient_step(AlgorithmContext& ctx, const Batch& jacobian_batch, Vec v, Vec fx, Vec jv);

/// The last part of hypergradient_step, for methods that form their estimate h otherwise (unrolling,
/// penalties): x <- P(x − step(h)) by the upper stepper; returns ||h||. A non-finite ||h|| is a
/// NumericalFailure(DIVERGED_NAN), thrown before x moves. Collective.
PetscReal upper_step_along(AlgorithmContext& ctx, Vec h);

/// Per outer iteration k:
///   y_{k+1} = T steps of the lower update at x_k (gradient or Newton, warm start)         [sampler stream 1]
///   b_k = ∇_y f(x_k, y_{k+1}; D_F), and ∇_x f on the same batch                           [stream 4]
///   v_{k+1} = the method's v-update ≈ H(x_k, y_{k+1})⁻¹ b_k (CG, Neumann, subspace, Lanczos) [Hessian
///   batches: stream 2] h_k = ∇_x f − J(x_k, y_{k+1}; B_J) v_{k+1} [stream 3] x_{k+1} = P(x_k − step(h_k)) by
///   the upper stepper on the coordinator.
/// v persists between iterations (the methods warm-start from it). Work vectors are allocated once in
/// setup(). Every method is collective on the problem's communicator.
class ImplicitStep {
 public:
  /// Allocates v (set to 0), ∇_x f, ∇_y f and J v, and seeds the samplers from the run's seed.
  void setup(BilevelProblem& problem, std::uint64_t seed, ImplicitBatches batches);
  /// One outer iteration. `update(b, v, result)` must overwrite v with the new estimate of H⁻¹ b at
  /// (x_k, y_{k+1}), drawing its Hessian batches from next_hessian_batch() or hessian_sampler(), and may set
  /// result.linear_residual and result.inner_iterations. Returns the step's record (lower residual and
  /// hypergradient norm filled in here).
  template <typename VUpdate>
  StepResult run(AlgorithmContext& ctx, LowerUpdate& lower, VUpdate&& update) {
    StepResult r;
    r.lower_residual = lower.run(ctx.problem, ctx.x, ctx.y, samplers_.lower, batches_.lower);  // y_{k+1}
    gradients(ctx);                                          // ∇_x f, b_k = ∇_y f
    update(static_cast<Vec>(fy_), static_cast<Vec>(v_), r);  // v_{k+1}
    finish(ctx, r);                                          // h_k, x_{k+1}
    return r;
  }
  /// The next Hessian batch (full when batches.lower is 0); valid until the next call. Not collective.
  Batch next_hessian_batch(BilevelProblem& problem);
  /// The Hessian-batch sampler, for v-updates that draw one batch per product (Neumann). Not collective.
  BatchSampler& hessian_sampler() { return samplers_.hessian; }
  const ImplicitBatches& batches() const { return batches_; }
  /// v_{k+1} of the last iteration. Not collective.
  Vec v() const { return v_; }
  /// Registers what carries over between iterations (v, the samplers' counters) for checkpoints. Not
  /// collective.
  void declare_state(StateRegistry& state, const std::string& prefix = "implicit.");

 private:
  void gradients(AlgorithmContext& ctx);
  void finish(AlgorithmContext& ctx, StepResult& r);

  ImplicitBatches batches_;
  StepSamplers samplers_;
  petsc::VecHandle v_, fy_, fx_, jv_;
};

}  // namespace bilevel
