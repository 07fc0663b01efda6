#pragma once
/// \file The two-dimensional subspace step of SubBiO (Yang, Gao & Yuan, ICLR 2025, Alg. 1; algorithms.md
/// §2.4): v <- the Galerkin solution of H v = b on S = span{b, (I − η H) v}.
#include <petscvec.h>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// What one subspace step did.
struct Subspace2DResult {
  PetscReal residual = -1;  ///< ||H v_new − b|| (exact, from the products H W already computed)
  PetscInt dimension = 0;   ///< 2, or 1 when (I − η H) v is (numerically) parallel to b, 0 when b = 0
  PetscInt hvps = 0;        ///< Hessian-vector products spent
};

/// Since one gradient step v − η (H v − b) on ½ vᵀH v − bᵀv lies in S, the step is never worse in the
/// H-norm than that gradient step.
///
/// Preconditioned (setup with precondition = true; the problem's M ≈ H⁻¹, Capability::LowerPreconditioner,
/// rebuilt at (x, y) on every solve): S = span{M b, (I − η M H) v}, which holds the preconditioned Richardson
/// step v + η M (b − H v); the Galerkin solution is never worse in the H-norm than that step, and with
/// M = H⁻¹, η = 1 it is exact. Two M applications per solve, no extra HVP. Not in the paper.
/// Every method is collective on the communicator of the layout Vec.
class SubspaceSolver2D {
 public:
  /// Allocates the work vectors once.
  void setup(Vec y_layout, bool precondition = false);
  bool preconditioned() const { return precondition_; }
  /// With H = H(x, y; batch): v_1 = v − η H v (1 HVP), W = [w_1, w_2] = Gram-Schmidt of [b, v_1] (twice, for
  /// orthogonality), H W (2 HVPs in one lower_hvp_multi pass), s = (Wᵀ H W)⁻¹ Wᵀ b, v <- W s.
  /// An indefinite 2 x 2 Galerkin matrix falls back to the one-dimensional solve on w_1.
  Subspace2DResult solve(
      BilevelProblem& problem, Vec x, Vec y, const Batch& batch, Vec b, PetscReal eta, Vec v);

 private:
  bool precondition_ = false;
  petsc::VecHandle hv_, w1_, w2_, hw1_, hw2_, r_;
};

}  // namespace bilevel
