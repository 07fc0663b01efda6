#include "bilevel/core/lower_solve.hpp"

#include <petscksp.h>

#include <algorithm>
#include <cmath>

#include "bilevel/core/line_search.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/run_clock.hpp"
#include "bilevel/petsc/callback.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

PetscReal solve_lower_accurately(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol, PetscInt max_newton) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  HessianShell shell(problem, y);
  petsc::KspHandle ksp = make_hessian_ksp(shell, "bilevel_final_", 0.5, 200);
  PetscReal configured_rtol = 0;  // 0.5 unless the user set -bilevel_final_ksp_rtol
  BILEVEL_PETSC_CALL(KSPGetTolerances(ksp, &configured_rtol, nullptr, nullptr, nullptr));
  petsc::VecHandle g = petsc::duplicate(y), d = petsc::duplicate(y), trial = petsc::duplicate(y);
  const bool has_value = has(problem.capabilities(), Capability::LowerValue);
  PetscReal g0 = -1, norm = 0;
  for (PetscInt it = 0; it <= max_newton; ++it) {
    problem.lower_grad_y(x, y, Batch::all(), g);
    BILEVEL_PETSC_CALL(VecNorm(g, NORM_2, &norm));
    if (g0 < 0) g0 = norm;
    if (!std::isfinite(norm) || norm <= rtol * std::max<PetscReal>(1, g0) || it == max_newton) break;
    if (phase_deadline_passed(problem.comm())) break;  // the run's time budget (core/run_clock.hpp)
    // Newton step d ≈ H⁻¹ ∇_y g with the forcing term min(0.5, sqrt(|g|/g0)) (Eisenstat-Walker flavour),
    // capped by the user's -bilevel_final_ksp_rtol when that is tighter.
    const PetscReal forcing = std::min<PetscReal>(0.5, std::sqrt(norm / std::max<PetscReal>(g0, 1e-300)));
    BILEVEL_PETSC_CALL(KSPSetTolerances(
        ksp, std::min(forcing, configured_rtol), PETSC_DEFAULT, PETSC_DEFAULT, PETSC_DEFAULT));
    shell.set_point(x, y, Batch::all());
    BILEVEL_PETSC_CALL(VecSet(d, 0.0));
    BILEVEL_PETSC_CALL_GUARDED(shell.pending(), KSPSolve(ksp, g, d));
    if (!has_value) {
      BILEVEL_PETSC_CALL(VecAXPY(y, -1.0, d));  // y <- y - d
      continue;
    }
    // Backtracking on φ(t) = g(x, y − t d) keeps Newton safe far from the solution; after 30 rejected
    // trials the last (tiny) step is taken.
    const PetscReal f0 = problem.lower_value(x, y, Batch::all());
    PetscReal gd = 0;
    BILEVEL_PETSC_CALL(VecDot(g, d, &gd));
    armijo_backtrack(
        [&](PetscReal t) {
          BILEVEL_PETSC_CALL(VecWAXPY(trial, -t, d, y));
          return problem.lower_value(x, trial, Batch::all());
        },
        f0,
        -gd,
        ArmijoOptions{.max_trials = 30});
    BILEVEL_PETSC_CALL(VecCopy(trial, y));
  }
  return norm;
}

}  // namespace bilevel
