#pragma once
/// \file The most accurate hypergradient the solver can compute at a point, for its gatol stopping test.
#include <petscvec.h>

#include <optional>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// ‖∇F(x)‖ with ∇F(x) = ∇_x f(x, y*) − J(x, y*) v*,  H(x, y*) v* = ∇_y f(x, y*)  (algorithms.md §1), on full
/// batches:
///  * a problem with Capability::ClosedForm gives it exactly (exact_hypergradient);
///  * otherwise y* comes from the problem's own lower solver (BilevelProblem::solve_lower), else from
///    solve_lower_accurately, started at y, until ‖∇_y g‖ <= rtol · max(1, ‖∇_y g(x, y)‖); and v* from CG on
///    the lower Hessian (make_hessian_ksp, prefix -bilevel_verify_, relative tolerance rtol, 1000 iterations;
///    -bilevel_verify_ksp_* override them).
/// Returns nullopt when a solve did not reach its tolerance or broke down: the value could not be trusted.
/// x and y are not modified. The oracle calls are counted by the problem as usual. Collective on
/// problem.comm().
std::optional<PetscReal> accurate_hypergradient_norm(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol);

/// The same computation, keeping ∇F(x) in `grad` (x's layout) and y*(x) in `y_star` (y's layout; the closed
/// form's exact_lower_solution on ClosedForm problems). Returns false when a solve did not reach its
/// tolerance, broke down or gave a non-finite value. Collective on problem.comm().
bool accurate_hypergradient(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol, Vec grad, Vec y_star);

}  // namespace bilevel
