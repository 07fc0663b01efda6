#pragma once
// Helpers of the paper-problem suites (finite_sum_quadratic, spectral_logsumexp, hyper_representation,
// multitask): a solve by a registered method with options set for its duration, a direction-wise central
// difference of a reduced objective, the hypergradient computed from the oracles alone (closed form
// hidden) and a value computed on one rank for the rank-count checks.
#include <petscvec.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/core/accurate_hypergradient.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "support/forwarding_problem.hpp"
#include "support/seed_harness.hpp"

namespace papertest {

using seedtest::norm;
using seedtest::Options;
using seedtest::relative_error;

/// Entries sin(1 + 0.7 i) * scale on the global index i: the same Vec at every rank count. Collective.
inline void fill_wave(Vec v, PetscReal scale, PetscReal phase = 1.0) {
  PetscInt lo = 0, hi = 0;
  VecGetOwnershipRange(v, &lo, &hi);
  PetscScalar* a = nullptr;
  VecGetArray(v, &a);
  for (PetscInt i = lo; i < hi; ++i) a[i - lo] = scale * std::sin(phase + 0.7 * static_cast<double>(i));
  VecRestoreArray(v, &a);
}

/// All entries of a Vec on every rank. Collective.
inline std::vector<PetscReal> gather(Vec v) {
  VecScatter sc = nullptr;
  Vec all = nullptr;
  VecScatterCreateToAll(v, &sc, &all);
  VecScatterBegin(sc, v, all, INSERT_VALUES, SCATTER_FORWARD);
  VecScatterEnd(sc, v, all, INSERT_VALUES, SCATTER_FORWARD);
  PetscInt n = 0;
  VecGetSize(all, &n);
  const PetscScalar* a = nullptr;
  VecGetArrayRead(all, &a);
  std::vector<PetscReal> out(a, a + n);
  VecRestoreArrayRead(all, &a);
  VecScatterDestroy(&sc);
  VecDestroy(&all);
  return out;
}

/// ‖∇F(x)‖ from the oracles only: accurate_hypergradient_norm on the problem with its closed form hidden
/// (Newton-PCG on y, CG on v, at tolerance rtol). Collective.
inline std::optional<PetscReal> hypergradient_norm_from_oracles(std::shared_ptr<bilevel::BilevelProblem> p,
                                                                Vec x,
                                                                Vec y,
                                                                PetscReal rtol) {
  testsupport::ForwardingProblem oracles(std::move(p), bilevel::Capability::ClosedForm);
  return bilevel::accurate_hypergradient_norm(oracles, x, y, rtol);
}

/// (F(x + h d) − F(x − h d)) / 2h for a reduced objective F. Collective.
inline PetscReal central_difference(const std::function<PetscReal(Vec)>& F, Vec x, Vec d, PetscReal h) {
  bilevel::petsc::VecHandle xp = bilevel::petsc::duplicate(x);
  VecWAXPY(xp, h, d, x);
  const PetscReal fp = F(xp);
  VecWAXPY(xp, -h, d, x);
  const PetscReal fm = F(xp);
  return (fp - fm) / (2 * h);
}

/// A run of `method` from the problem's initial point with `options` set for its duration; x and y are
/// returned in place. Collective.
inline bilevel::SolveReport solve(std::shared_ptr<bilevel::BilevelProblem> p,
                                  const std::string& method,
                                  std::vector<std::pair<std::string, std::string>> options,
                                  bilevel::petsc::VecHandle& x,
                                  bilevel::petsc::VecHandle& y) {
  options.emplace_back("-bilevel_type", method);
  Options guard(options);
  bilevel::BilevelSolver solver(p->comm());
  solver.set_problem(p);
  solver.set_from_options();
  x = p->create_upper_vec();
  y = p->create_lower_vec();
  p->initial_point(x, y);
  return solver.solve(x, y);
}

}  // namespace papertest
