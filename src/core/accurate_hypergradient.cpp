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

bool accurate_hypergradient(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol, Vec grad, Vec y_star) {
  if (has(problem.capabilities(), Capability::ClosedForm)) {
    problem.exact_lower_solution(x, y_star);
    problem.exact_hypergradient(x, grad);
    return std::isfinite(norm(grad));
  }
  // y* from y: the problem's own solver if it has one, else Newton-PCG
  petsc::VecHandle gy = petsc::duplicate(y);
  BILEVEL_PETSC_CALL(VecCopy(y, y_star));
  problem.lower_grad_y(x, y_star, Batch::all(), gy);
  const PetscReal target = rtol * std::max<PetscReal>(1, norm(gy));
  std::optional<PetscReal> lower = problem.solve_lower(x, y_star, rtol);
  if (!lower) lower = solve_lower_accurately(problem, x, y_star, rtol);
  if (!std::isfinite(*lower) || *lower > target) return false;

  // v* = H⁻¹ ∇_y f by CG, then ∇F = ∇_x f − J v*
  petsc::VecHandle fy = petsc::duplicate(y), v = petsc::duplicate(y), jv = problem.create_upper_vec();
  problem.upper_grad(x, y_star, Batch::all(), grad, fy);
  HessianShell shell(problem, y_star);
  petsc::KspHandle ksp = make_hessian_ksp(shell, "bilevel_verify_", rtol, 1000);
  shell.set_point(x, y_star, Batch::all());
  BILEVEL_PETSC_CALL(VecSet(v, 0.0));
  BILEVEL_PETSC_CALL_GUARDED(shell.pending(), KSPSolve(ksp, fy, v));
  KSPConvergedReason reason = KSP_CONVERGED_ITERATING;
  BILEVEL_PETSC_CALL(KSPGetConvergedReason(ksp, &reason));
  if (reason <= 0) return false;
  problem.lower_jvp(x, y_star, Batch::all(), v, jv);
  BILEVEL_PETSC_CALL(VecAXPY(grad, -1.0, jv));
  return std::isfinite(norm(grad));
}

std::optional<PetscReal> accurate_hypergradient_norm(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol) {
  petsc::VecHandle grad = problem.create_upper_vec(), y_star = petsc::duplicate(y);
  if (has(problem.capabilities(), Capability::ClosedForm)) {
    problem.exact_hypergradient(x, grad);  // y* is not needed
    return norm(grad);
  }
  if (!accurate_hypergradient(problem, x, y, rtol, grad, y_star)) return std::nullopt;
  return norm(grad);
}

}  // namespace bilevel
