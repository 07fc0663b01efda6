#pragma once
/// \file Linear-system solvers for v ≈ H⁻¹ b, H = ∇²_yy g(x, y), b = ∇_y f (shared by the methods).
#include <petscksp.h>
#include <petscviewer.h>

#include <optional>
#include <string>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/converged_reason.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// The one KSP on the lower Hessian every method uses: core's make_hessian_ksp under `prefix` (the
/// method's defaults rtol and max_it go into the KSP first, then the problem's preconditioner, then
/// KSPSetFromOptions, so -<prefix>ksp_* always win; nothing resets them later), plus the failure check:
/// a KSP that stops for any reason but its iteration budget (breakdown, indefinite H, NaN) is a
/// NumericalFailure with `on_failure`. Collective on the problem's communicator.
class HessianKsp {
 public:
  HessianKsp(BilevelProblem& problem,
             Vec y_layout,
             std::string prefix,
             PetscReal rtol,
             PetscInt max_it,
             bool warm_start,
             ConvergedReason on_failure);
  struct Result {
    PetscInt iterations = 0;
    PetscReal residual = -1;  ///< ||b − H v|| KSP reports at the end
  };
  /// v <- ≈ H(x, y; batch)⁻¹ b, from v when the KSP warm-starts. `bnorm`, when known, saves a reduction;
  /// b = 0 gives v = 0 without a KSP solve, a non-finite b is a NumericalFailure (DIVERGED_NAN).
  Result solve(Vec x, Vec y, const Batch& batch, Vec b, Vec v, std::optional<PetscReal> bnorm = std::nullopt);
  KSP ksp() const { return ksp_; }
  /// One line: "<what>: KSP cg (prefix -<prefix>), rtol r, max_it n, initial guess ..." with the values
  /// the KSP really uses. Collective on the viewer.
  void view(PetscViewer viewer, const char* what) const;

 private:
  std::string prefix_;
  ConvergedReason on_failure_;
  HessianShell shell_;
  petsc::KspHandle ksp_;
};

/// KSP (CG by default, prefix -bilevel_hyper_) on the HessianShell, warm-started from the v passed in,
/// with method defaults max_it and rtol (-bilevel_hyper_ksp_max_it, -bilevel_hyper_ksp_rtol win). A failed
/// solve is a NumericalFailure(DIVERGED_LINEAR_SOLVE). Collective.
class CgLinearSolver {
 public:
  CgLinearSolver(BilevelProblem& problem, Vec y_layout, PetscInt max_it, PetscReal rtol);
  /// v <- approx H(x, y; batch)⁻¹ b starting from v (warm start). Returns the iterations used.
  PetscInt solve(Vec x, Vec y, const Batch& batch, Vec b, Vec v);
  /// Residual norm ||b − H v|| KSP reports at the end of the last solve.
  PetscReal last_residual() const { return residual_; }
  KSP ksp() const { return ksp_.ksp(); }
  void view(PetscViewer viewer, const char* what) const { ksp_.view(viewer, what); }

 private:
  HessianKsp ksp_;
  PetscReal residual_ = -1;
};

/// Neumann series (stocBiO, algorithms.md §3.3): p_0 = b, p_{q+1} = p_q − eta H(B_q) p_q, v = eta Σ_{q=0}^{Q}
/// p_q, with a fresh batch B_q per product (size batch_size, 0 = full). With `precondition`, the series of
/// (M H)⁻¹ M = H⁻¹ with the problem's M of its last lower_preconditioner_setup (the caller's): p_0 = M b,
/// p_{q+1} = p_q − eta M H(B_q) p_q, converging for eta < 2/λ_max(M H) at the rate of M H's condition
/// number. Collective.
class NeumannSolver {
 public:
  void setup(Vec y_layout);
  void solve(BilevelProblem& problem,
             Vec x,
             Vec y,
             Vec b,
             Vec v,
             PetscInt q_steps,
             PetscReal eta,
             BatchSampler* sampler,
             PetscInt batch_size,
             bool precondition = false);

 private:
  petsc::VecHandle p_, hp_, mhp_;
};

}  // namespace bilevel
