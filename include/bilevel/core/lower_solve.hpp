#pragma once
/// \file The accurate lower-level solve the solver runs for the final model of a run when the problem has
/// no solver of its own (BilevelProblem::solve_lower returns nullopt).
#include <petscvec.h>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// Solves min_y g(x, y) on the full batch with Newton-PCG: KSP CG on the lower Hessian (prefix
/// -bilevel_final_, the problem's M as preconditioner when it has one), forcing term
/// min(0.5, sqrt(‖∇_y g‖/‖∇_y g(x, y₀)‖)), Armijo backtracking on g when the problem provides its values.
/// Stops when ‖∇_y g‖ ≤ rtol · max(1, ‖∇_y g(x, y₀)‖) or after max_newton steps. Returns the final
/// gradient norm (non-finite when the iteration broke down). Collective on problem.comm().
PetscReal solve_lower_accurately(
    BilevelProblem& problem, Vec x, Vec y, PetscReal rtol, PetscInt max_newton = 50);

}  // namespace bilevel
