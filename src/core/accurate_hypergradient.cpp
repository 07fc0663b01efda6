#include "bilevel/core/accurate_hypergradient.hpp"

#include <petscksp.h>

#include <algorithm>
#include <cmath>

#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/lower_solve.hpp"
#include "bilevel/petsc/callback.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {
namespace {

PetscReal norm(Vec v) {
  PetscReal n = 0;
  BILEVEL_PETSC_CALL(VecNorm(v, NORM_2, &n));
  return n;
}

}  // namespace

std::optional<PetscReal> accurate_hypergradient_norm(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol) {
  petsc::VecHandle grad = problem.create_upper_vec();
  if (has(problem.capabilities(), Capability::ClosedForm)) {
    problem.exact_hypergradient(x, grad);
    return norm(grad);
  }
  // y* from y: the problem's own solver if it has one, else Newton-PCG
  petsc::VecHandle ys = petsc::duplicate(y), gy = petsc::duplicate(y);
  BILEVEL_PETSC_CALL(VecCopy(y, ys));
  problem.lower_grad_y(x, ys, Batch::all(), gy);
  const PetscReal target = rtol * std::max<PetscReal>(1, norm(gy));
  std::optional<PetscReal> lower = problem.solve_lower(x, ys, rtol);
  if (!lower) lower = solve_lower_accurately(problem, x, ys, rtol);
  if (!std::isfinite(*lower) || *lower > target) return std::nullopt;

  // v* = H⁻¹ ∇_y f by CG, then ∇F = ∇_x f − J v*
  petsc::VecHandle fy = petsc::duplicate(y), v = petsc::duplicate(y), jv = problem.create_upper_vec();
  problem.upper_grad(x, ys, Batch::all(), grad, fy);
  HessianShell shell(problem, ys);
  petsc::KspHandle ksp = make_hessian_ksp(shell, "bilevel_verify_", rtol, 1000);
  shell.set_point(x, ys, Batch::all());
  BILEVEL_PETSC_CALL(VecSet(v, 0.0));
  BILEVEL_PETSC_CALL_GUARDED(shell.pending(), KSPSolve(ksp, fy, v));
  KSPConvergedReason reason = KSP_CONVERGED_ITERATING;
  BILEVEL_PETSC_CALL(KSPGetConvergedReason(ksp, &reason));
  if (reason <= 0) return std::nullopt;
  problem.lower_jvp(x, ys, Batch::all(), v, jv);
  BILEVEL_PETSC_CALL(VecAXPY(grad, -1.0, jv));
  const PetscReal n = norm(grad);
  if (!std::isfinite(n)) return std::nullopt;
  return n;
}

}  // namespace bilevel
