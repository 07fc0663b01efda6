#pragma once
/// \file Linear-system solvers for v ≈ H⁻¹ b, H = ∇²_yy g(x, y), b = ∇_y f (shared by the methods).
#include <petscksp.h>

#include <string>

#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// KSP (CG by default, prefix -bilevel_hyper_) on the HessianShell, warm-started from the v passed in,
/// with an iteration budget and a relative tolerance. Collective.
class CgLinearSolver {
 public:
  CgLinearSolver(BilevelProblem& problem, Vec y_layout, PetscInt max_it, PetscReal rtol);
  /// v <- approx H(x, y; batch)⁻¹ b starting from v (warm start). Returns the iterations used.
  PetscInt solve(Vec x, Vec y, const Batch& batch, Vec b, Vec v);
  /// Residual norm ||b − H v|| KSP reports at the end of the last solve.
  PetscReal last_residual() const { return residual_; }
  KSP ksp() const { return ksp_; }

 private:
  HessianShell shell_;
  petsc::KspHandle ksp_;
  PetscReal residual_ = -1;
};

/// Neumann series (stocBiO, algorithms.md §3.3): p_0 = b, p_{q+1} = p_q − eta H(B_q) p_q, v = eta Σ_{q=0}^{Q} p_q,
/// with a fresh batch B_q per product (size batch_size, 0 = full). Collective.
class NeumannSolver {
 public:
  void setup(Vec y_layout);
  void solve(BilevelProblem& problem, Vec x, Vec y, Vec b, Vec v, PetscInt q_steps, PetscReal eta,
             BatchSampler* sampler, PetscInt batch_size);

 private:
  petsc::VecHandle p_, hp_;
};

}  // namespace bilevel
