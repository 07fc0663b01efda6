// Numerical failure is a converged reason, never an abort: a diverging lower update, a failing Krylov solve
// and a NaN hypergradient each end the solve with their negative reason on every rank, and the summary is
// still written.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>

#include "bilevel/bilevel.hpp"
#include "bilevel/core/summary.hpp"
#include "support/forwarding_problem.hpp"
#include "support/seed_harness.hpp"

namespace {

using bilevel::ConvergedReason;
using seedtest::Options;
using testsupport::ForwardingProblem;
using testsupport::Oracle;

/// Solves `p` with the options currently set; every rank gets its own report. Collective.
bilevel::SolveReport solve(const std::shared_ptr<bilevel::BilevelProblem>& p) {
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  return seedtest::solve_from_initial_point(solver, p);
}

std::shared_ptr<bilevel::QuadraticProblem> quadratic() {
  return std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, seedtest::quad(10));
}

/// The reason of `r`, the same on every rank (checked with an allreduce of min and max).
int agreed_reason(const bilevel::SolveReport& r) {
  int mine = static_cast<int>(r.reason), lo = 0, hi = 0;
  MPI_Allreduce(&mine, &lo, 1, MPI_INT, MPI_MIN, PETSC_COMM_WORLD);
  MPI_Allreduce(&mine, &hi, 1, MPI_INT, MPI_MAX, PETSC_COMM_WORLD);
  EXPECT_EQ(lo, hi) << "ranks disagree on the converged reason";
  return mine;
}

void expect_summary_names(const bilevel::SolveReport& r, const std::string& name) {
  const std::string json = bilevel::summary_json(r, {});
  EXPECT_NE(json.find("\"converged_reason\": \"" + name + "\""), std::string::npos) << json;
}

TEST(NumericalFailure, ReasonsHavePetscStyleNamesAndTheOldValues) {
  EXPECT_EQ(bilevel::to_string(ConvergedReason::DivergedLinearSolve), "DIVERGED_LINEAR_SOLVE");
  EXPECT_EQ(bilevel::to_string(ConvergedReason::DivergedInnerSolve), "DIVERGED_INNER_SOLVE");
  EXPECT_EQ(bilevel::to_string(ConvergedReason::DivergedNaN), "DIVERGED_NAN");
  EXPECT_EQ(static_cast<int>(ConvergedReason::DivergedNaN), -1);
  EXPECT_EQ(static_cast<int>(ConvergedReason::DivergedInnerSolve), -2);
  EXPECT_LT(static_cast<int>(ConvergedReason::DivergedLinearSolve), 0);
  const bilevel::NumericalFailure e(ConvergedReason::DivergedLinearSolve, "KSP broke down");
  EXPECT_EQ(e.reason(), ConvergedReason::DivergedLinearSolve);
  EXPECT_EQ(std::string(e.what()), "DIVERGED_LINEAR_SOLVE: KSP broke down");
  EXPECT_NO_THROW(bilevel::require_finite(1.0, ConvergedReason::DivergedNaN, "x"));
  EXPECT_THROW(bilevel::require_finite(NAN, ConvergedReason::DivergedNaN, "x"), bilevel::NumericalFailure);
}

TEST(NumericalFailure, GradientStepsOnYThatDivergeEndTheRunWithDivergedInnerSolve) {
  Options o{{"-bilevel_type", "aidcg"},
            {"-bilevel_max_it", "100"},
            {"-bilevel_aidcg_lower", "gd"},
            {"-bilevel_aidcg_inner_step", "1e3"}};
  const bilevel::SolveReport r = solve(quadratic());
  EXPECT_EQ(agreed_reason(r), static_cast<int>(ConvergedReason::DivergedInnerSolve));
  EXPECT_LT(r.outer_iterations, 100);  // stopped at the failure, not at the budget
  EXPECT_GT(r.outer_iterations, 0);
  expect_summary_names(r, "DIVERGED_INNER_SOLVE");
}

/// The quadratic with H replaced by H − c I, c between the extreme eigenvalues: an indefinite lower
/// Hessian, on which CG meets curvature of both signs (KSP_DIVERGED_INDEFINITE_MAT).
class IndefiniteQuadratic : public bilevel::QuadraticProblem {
 public:
  using QuadraticProblem::QuadraticProblem;

 protected:
  void lower_hvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    QuadraticProblem::lower_hvp_impl(x, y, b, w, out);
    VecAXPY(out, -0.5 * *hints().lower_lipschitz, w);
  }
  void lower_hvp_multi_impl(
      Vec x, Vec y, const bilevel::Batch& b, std::span<const Vec> w, std::span<const Vec> out) override {
    for (std::size_t i = 0; i < w.size(); ++i) lower_hvp_impl(x, y, b, w[i], out[i]);
  }
};

TEST(NumericalFailure, ConjugateGradientsOnAnIndefiniteHessianEndTheRunWithDivergedLinearSolve) {
  Options o{{"-bilevel_type", "aidcg"}, {"-bilevel_max_it", "20"}, {"-bilevel_aidcg_lower", "gd"}};
  auto p = std::make_shared<IndefiniteQuadratic>(PETSC_COMM_WORLD, seedtest::quad(10));
  ASSERT_TRUE(p->hints().lower_lipschitz.has_value());
  const bilevel::SolveReport r = solve(p);
  EXPECT_EQ(agreed_reason(r), static_cast<int>(ConvergedReason::DivergedLinearSolve));
  EXPECT_EQ(r.outer_iterations, 1);
  EXPECT_TRUE(std::isfinite(r.upper_objective));  // x did not move to garbage: the summary still has F
  expect_summary_names(r, "DIVERGED_LINEAR_SOLVE");
}

TEST(NumericalFailure, ConjugateGradientsOnNanProductsEndTheRunWithDivergedLinearSolve) {
  Options o{{"-bilevel_type", "aidcg"}, {"-bilevel_max_it", "20"}, {"-bilevel_aidcg_lower", "gd"}};
  auto p = std::make_shared<ForwardingProblem>(quadratic(), bilevel::Capability::None, Oracle::Hvp, NAN);
  const bilevel::SolveReport r = solve(p);
  EXPECT_EQ(agreed_reason(r), static_cast<int>(ConvergedReason::DivergedLinearSolve));
  EXPECT_EQ(r.outer_iterations, 1);
  expect_summary_names(r, "DIVERGED_LINEAR_SOLVE");
}

TEST(NumericalFailure, NewtonStepsWhoseConjugateGradientsFailEndTheRunWithDivergedInnerSolve) {
  Options o{{"-bilevel_type", "subbio"}, {"-bilevel_max_it", "20"}, {"-bilevel_subbio_lower", "newton"}};
  auto p = std::make_shared<ForwardingProblem>(quadratic(), bilevel::Capability::None, Oracle::Hvp, NAN);
  const bilevel::SolveReport r = solve(p);
  EXPECT_EQ(agreed_reason(r), static_cast<int>(ConvergedReason::DivergedInnerSolve));
  EXPECT_EQ(r.outer_iterations, 1);
  expect_summary_names(r, "DIVERGED_INNER_SOLVE");
}

TEST(NumericalFailure, ANanHypergradientEstimateEndsTheRunWithDivergedNanBeforeXMoves) {
  for (const char* method : {"aidcg", "nbo", "qnbo", "lancbio"}) {
    Options o{{"-bilevel_type", method}, {"-bilevel_max_it", "20"}};
    auto p = std::make_shared<ForwardingProblem>(quadratic(), bilevel::Capability::None, Oracle::Jvp, NAN);
    const bilevel::SolveReport r = solve(p);
    EXPECT_EQ(agreed_reason(r), static_cast<int>(ConvergedReason::DivergedNaN)) << method;
    EXPECT_EQ(r.outer_iterations, 1) << method;
    expect_summary_names(r, "DIVERGED_NAN");
  }
}

}  // namespace
