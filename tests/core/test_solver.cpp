// BilevelSolver's stopping logic (max_it, max_time, gatol, a method's negative reason, NaN) with a scripted
// method whose steps and estimates the tests choose, and the gatol test with real methods on the quadratic.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "support/forwarding_problem.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;

using bilevel::ConvergedReason;

/// What the scripted method does; the tests set it before a solve.
struct Script {
  PetscReal estimate = 1.0;   // the hypergradient_norm each step reports
  std::int64_t fail_at = -1;  // the step (1-based) that returns fail_reason
  ConvergedReason fail_reason = ConvergedReason::DivergedInnerSolve;
  std::int64_t nan_at = -1;  // the step that writes NaN into x
  double sleep_seconds = 0;  // per step
  std::int64_t steps = 0;    // steps taken (output)
};
Script& script() {
  static Script s;
  return s;
}

/// Leaves x and y where they are and reports what the script says.
class ScriptedMethod : public bilevel::Algorithm {
 public:
  std::string_view type() const override { return "test_scripted"; }
  void set_from_options(bilevel::petsc::OptionsReader&) override {}
  void setup(bilevel::AlgorithmContext&) override {}
  bilevel::StepResult step(bilevel::AlgorithmContext& ctx) override {
    Script& s = script();
    ++s.steps;
    if (s.sleep_seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(s.sleep_seconds));
    if (s.steps == s.nan_at) VecSet(ctx.x, NAN);
    bilevel::StepResult r;
    r.hypergradient_norm = s.estimate;
    if (s.steps == s.fail_at) r.reason = s.fail_reason;
    return r;
  }
  void view(PetscViewer) const override {}
};

bilevel::QuadraticOptions quad(PetscReal kappa) {
  bilevel::QuadraticOptions o;
  o.dim_lower = 61;
  o.dim_upper = 7;
  o.condition = kappa;
  o.seed = 5;
  return o;
}

/// One solve of `method` on `problem` with the options in force; the scripted method is registered once.
bilevel::SolveReport run(std::shared_ptr<bilevel::BilevelProblem> problem,
                         const std::string& method,
                         bilevel::BilevelSolver* keep = nullptr) {
  auto& registry = bilevel::algorithm_registry();
  if (!registry.contains("test_scripted"))
    registry.add("test_scripted", "a method scripted by test_solver", [] {
      return std::make_unique<ScriptedMethod>();
    });
  script().steps = 0;
  bilevel::BilevelSolver local(PETSC_COMM_WORLD);
  bilevel::BilevelSolver& solver = keep ? *keep : local;
  solver.set_problem(problem);
  solver.set_type(method);
  solver.set_from_options();
  auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
  problem->initial_point(x, y);
  return solver.solve(x, y);
}

std::shared_ptr<bilevel::QuadraticProblem> quadratic(PetscReal kappa = 100) {
  return std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, quad(kappa));
}

class SolverStopping : public ::testing::Test {
 protected:
  void SetUp() override { script() = Script{}; }
  Options common_{{"-bilevel_final_lower_solve", "false"}};
};

TEST_F(SolverStopping, MaxItRunsExactlyThatManySteps) {
  Options o{{"-bilevel_max_it", "7"}};

  const auto r = run(quadratic(), "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedMaxIterations);
  EXPECT_EQ(r.outer_iterations, 7);
  EXPECT_EQ(script().steps, 7);
}

TEST_F(SolverStopping, ZeroMaxItTakesNoStep) {
  Options o{{"-bilevel_max_it", "0"}};

  const auto r = run(quadratic(), "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedMaxIterations);
  EXPECT_EQ(script().steps, 0);
}

// Debian's PetscInt is 32-bit: 3e9 used to wrap to a negative budget, and the run took no step.
TEST_F(SolverStopping, MaxItBeyondPetscIntIsKeptAndTheTimeBudgetEndsTheRun) {
  Options o{{"-bilevel_max_it", "3000000000"}, {"-bilevel_max_time", "0.2"}, {"-bilevel_seed", "5000000000"}};
  script().sleep_seconds = 0.01;
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);

  const auto r = run(quadratic(), "test_scripted", &solver);

  EXPECT_EQ(solver.options().max_iterations, 3000000000LL);
  EXPECT_EQ(r.reason, ConvergedReason::ConvergedTime);
  EXPECT_GT(r.outer_iterations, 1);
  EXPECT_EQ(r.seed, 5000000000ULL);
}

TEST_F(SolverStopping, TimeBudgetEndsTheRunWithinItLeavingTheFinalReserve) {
  // 0.3 s in all, 10% kept for the final phase: the loop may use 0.27 s, and it does not start an iteration
  // (0.03 s, as long as the last one) that would end past that.
  Options o{{"-bilevel_max_it", "1000"}, {"-bilevel_max_time", "0.3"}};
  script().sleep_seconds = 0.03;

  const auto r = run(quadratic(), "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedTime);
  EXPECT_GE(r.outer_iterations, 6);  // 8 × 0.03 s fit in 0.27 s; a loaded machine may take fewer
  EXPECT_LE(r.outer_iterations, 9);
  EXPECT_LE(r.wall_time_s, 0.3);
}

TEST_F(SolverStopping, NegativeReasonOfAStepEndsTheRunWithThatReason) {
  Options o{{"-bilevel_max_it", "50"}};
  script().fail_at = 4;
  script().fail_reason = ConvergedReason::DivergedInnerSolve;

  const auto r = run(quadratic(), "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::DivergedInnerSolve);
  EXPECT_EQ(r.outer_iterations, 4);
  EXPECT_EQ(script().steps, 4);
}

TEST_F(SolverStopping, NanInTheIterateIsDivergedNan) {
  Options o{{"-bilevel_max_it", "50"}};
  script().nan_at = 3;

  const auto r = run(quadratic(), "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::DivergedNaN);
  EXPECT_EQ(r.outer_iterations, 3);
  EXPECT_TRUE(std::isnan(r.upper_objective));
}

TEST_F(SolverStopping, NanEstimateIsDivergedNan) {
  Options o{{"-bilevel_max_it", "50"}};
  script().estimate = NAN;

  const auto r = run(quadratic(), "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::DivergedNaN);
  EXPECT_EQ(r.outer_iterations, 1);
}

// The scripted method reports 1e-9 at the start point, where the true hypergradient is far from zero:
// every candidate is rejected, checked at iterations 1, 2, 4, ..., 64 (7 checks), and the run ends at max_it.
TEST_F(SolverStopping, GatolRejectsAnEstimateThatTheClosedFormContradicts) {
  Options o{{"-bilevel_max_it", "64"}, {"-bilevel_gatol", "1e-3"}};
  script().estimate = 1e-9;

  const auto r = run(quadratic(), "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedMaxIterations);
  EXPECT_EQ(r.gatol_rejections, 7);
  ASSERT_TRUE(r.true_hypergradient_norm);
  EXPECT_GT(*r.true_hypergradient_norm, 1e-1);
  EXPECT_FALSE(r.verified_hypergradient_norm);
}

// Without the closed form the check solves the lower level accurately and runs CG on the lower Hessian.
TEST_F(SolverStopping, GatolRejectsALyingEstimateThroughAccurateSolvesWithoutAClosedForm) {
  Options o{{"-bilevel_max_it", "8"}, {"-bilevel_gatol", "1e-3"}};
  script().estimate = 1e-9;
  auto problem =
      std::make_shared<testsupport::ForwardingProblem>(quadratic(), bilevel::Capability::ClosedForm);

  const auto r = run(problem, "test_scripted");

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedMaxIterations);
  EXPECT_EQ(r.gatol_rejections, 4);  // iterations 1, 2, 4, 8
  EXPECT_EQ(problem->exact_calls, 0);
  // the checks' products reached the problem but are not counted in the report
  EXPECT_GT(problem->inner().counts().hvp, 0);
  EXPECT_EQ(r.counts.hvp, 0);
}

// The acceptance case: aidcg on a quadratic with condition 1e8 reports estimates that fall below gatol (after
// ~35 iterations here) while the true hypergradient norm stays about 0.25: its lower and linear solves are
// far from converged.
TEST_F(SolverStopping, GatolIsNotClaimedOnAnIllConditionedQuadratic) {
  Options o{{"-bilevel_max_it", "60"}, {"-bilevel_gatol", "5e-2"}};

  const auto r = run(quadratic(1e8), "aidcg");

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedMaxIterations);
  EXPECT_GT(r.gatol_rejections, 0);  // the estimate did fall below gatol
  EXPECT_LT(r.hypergradient_norm, 5e-2);
  ASSERT_TRUE(r.true_hypergradient_norm);
  EXPECT_GT(*r.true_hypergradient_norm, 0.2);
}

TEST_F(SolverStopping, GatolStopsWhenTheEstimateIsRight) {
  Options o{{"-bilevel_max_it", "500"}, {"-bilevel_gatol", "1e-2"}};

  const auto r = run(quadratic(10), "aidcg");

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedGradientTolerance);
  EXPECT_LT(r.outer_iterations, 500);
  EXPECT_EQ(r.gatol_rejections, 0);
  ASSERT_TRUE(r.verified_hypergradient_norm && r.true_hypergradient_norm);
  EXPECT_LE(*r.verified_hypergradient_norm, 1e-2);
  EXPECT_NEAR(*r.true_hypergradient_norm, *r.verified_hypergradient_norm, 1e-12);
}

TEST_F(SolverStopping, GatolStopsWhenTheEstimateIsRightWithoutAClosedForm) {
  Options o{{"-bilevel_max_it", "500"}, {"-bilevel_gatol", "1e-2"}};
  auto problem =
      std::make_shared<testsupport::ForwardingProblem>(quadratic(10), bilevel::Capability::ClosedForm);
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);

  auto x = problem->create_upper_vec(), y = problem->create_lower_vec(), g = problem->create_upper_vec();
  const auto r = [&] {
    solver.set_problem(problem);
    solver.set_type("aidcg");
    solver.set_from_options();
    problem->initial_point(x, y);
    return solver.solve(x, y);
  }();

  EXPECT_EQ(r.reason, ConvergedReason::ConvergedGradientTolerance);
  ASSERT_TRUE(r.verified_hypergradient_norm);
  EXPECT_LE(*r.verified_hypergradient_norm, 1e-2);
  problem->inner().exact_hypergradient(x, g);  // the truth agrees with the accurate solves
  PetscReal truth = 0;
  VecNorm(g, NORM_2, &truth);
  EXPECT_NEAR(truth, *r.verified_hypergradient_norm, 1e-6);  // a ten-thousandth of gatol
  EXPECT_EQ(problem->exact_calls, 0);
}

// set_from_options twice: one progress monitor (one start line), the same settings.
TEST_F(SolverStopping, SetFromOptionsTwiceChangesNothing) {
  Options o{{"-bilevel_max_it", "3"}, {"-bilevel_monitor", ""}, {"-bilevel_upper_step", "0.25"}};
  auto problem = quadratic();
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(problem);
  solver.set_type("test_scripted");
  solver.set_from_options();
  const bilevel::SolverOptions first = solver.options();
  solver.set_from_options();
  auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
  problem->initial_point(x, y);

  ::testing::internal::CaptureStdout();
  solver.solve(x, y);
  solver.view();
  const std::string out = ::testing::internal::GetCapturedStdout();

  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  if (rank == 0) {
    std::size_t starts = 0;
    for (std::size_t at = out.find("bilevel: problem"); at != std::string::npos;
         at = out.find("bilevel: problem", at + 1))
      ++starts;
    EXPECT_EQ(starts, 1u) << out;
    EXPECT_NE(out.find("upper stepper sgd, step 0.25"), std::string::npos) << out;
  }
  EXPECT_EQ(solver.options().max_iterations, first.max_iterations);
  EXPECT_EQ(solver.options().monitor_every, first.monitor_every);
}

}  // namespace
