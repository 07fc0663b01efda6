#pragma once
// Helpers of the paper-problem suites (finite_sum_quadratic, spectral_logsumexp, hyper_representation,
// multitask): a solve by a registered method with options set for its duration, a direction-wise central
// difference of a reduced objective, the hypergradient computed from the oracles alone (closed form
// hidden) and a value computed on one rank for the rank-count checks.
#include <gtest/gtest.h>
#include <petscvec.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/core/accurate_hypergradient.hpp"
#include "bilevel/core/derivative_check.hpp"
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

// ---- checks shared by the problems with a closed form (finite_sum_quadratic, hyper_representation,
// multitask)

/// The closed-form y*(x) zeroes the full-batch lower gradient, ‖∇_y g(x, y*)‖ ≤ tol max(1, ‖y*‖), and is not
/// trivially small (‖y*‖ > min_norm). Collective.
inline void expect_closed_form_lower_solution(bilevel::BilevelProblem& p,
                                              Vec x,
                                              PetscReal min_norm,
                                              PetscReal tol) {
  auto y = p.create_lower_vec(), g = p.create_lower_vec();
  p.exact_lower_solution(x, y);
  p.lower_grad_y(x, y, bilevel::Batch::all(), g);
  EXPECT_GT(norm(y), min_norm);
  EXPECT_LT(norm(g), tol * std::max<PetscReal>(1, norm(y)));
}

/// ‖∇F(x)‖ from the oracles alone (closed form hidden, Newton-PCG from y, CG at rtol) equals the closed
/// form's to a relative 1e-8, and the oracle path ran (HVPs counted). Collective.
inline void expect_oracle_hypergradient_matches_closed_form(const std::shared_ptr<bilevel::BilevelProblem>& p,
                                                            Vec x,
                                                            Vec y,
                                                            PetscReal rtol) {
  auto g = p->create_upper_vec();
  p->exact_hypergradient(x, g);
  const auto from_oracles = hypergradient_norm_from_oracles(p, x, y, rtol);
  ASSERT_TRUE(from_oracles);
  EXPECT_GT(p->counts().hvp, 0);
  EXPECT_GT(norm(g), 1e-3);
  EXPECT_NEAR(*from_oracles, norm(g), 1e-8 * norm(g));
}

/// The closed-form ∇F(x) is the derivative of the value function F(x) = f(x, y*(x)): along d = wave(1, 2),
/// ⟨∇F, d⟩ equals a central difference of F with step h to 1e-7 max(1, |⟨∇F, d⟩|). Collective.
inline void expect_closed_form_hypergradient_is_the_derivative(bilevel::BilevelProblem& p,
                                                               Vec x,
                                                               PetscReal h) {
  auto d = p.create_upper_vec(), g = p.create_upper_vec();
  fill_wave(d, 1.0, 2.0);
  p.exact_hypergradient(x, g);
  PetscReal gd = 0;
  VecDot(g, d, &gd);
  const PetscReal fd = central_difference([&](Vec xx) { return p.exact_upper_objective(xx); }, x, d, h);
  EXPECT_GT(std::abs(gd), 1e-4);
  EXPECT_NEAR(fd, gd, 1e-7 * std::max<PetscReal>(1, std::abs(gd)));
}

/// Every derivative oracle agrees with finite differences of the values at (x, y) (relative 1e-7), and
/// none of the six was skipped. Collective.
inline void expect_every_oracle_passes_the_derivative_check(bilevel::BilevelProblem& p, Vec x, Vec y) {
  const bilevel::DerivativeReport r = bilevel::check_derivatives(p, x, y);
  EXPECT_TRUE(r.passed(1e-7)) << "largest relative error " << r.max_error();
  for (const char* o : {"grad_y g", "grad_x g", "grad_y f", "grad_x f", "hvp", "jvp"}) {
    ASSERT_NE(r.find(o), nullptr) << o;
    EXPECT_FALSE(r.find(o)->skipped) << o;
  }
}

}  // namespace papertest
