// SOBA and MA-SOBA (src/algorithms/soba) and the single-loop block (blocks/single_loop.hpp).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/problems/logreg.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;
using seedtest::quad;

/// A small logistic regression with samples, on `comm` (the same data at every rank count).
std::shared_ptr<bilevel::BilevelProblem> small_logreg(MPI_Comm comm) {
  const auto tr = testdata::make_global(96, 7, 2, 31), va = testdata::make_global(48, 7, 2, 32);
  return std::make_shared<bilevel::LogregProblem>(testdata::to_dataset(comm, tr, bilevel::DataFormat::Dense),
                                                  testdata::to_dataset(comm, va, bilevel::DataFormat::Dense),
                                                  std::nullopt,
                                                  bilevel::LogregOptions{});
}

struct Outcome {
  bilevel::SolveReport report;
  std::vector<double> x;
};

Outcome solve(MPI_Comm comm, const std::shared_ptr<bilevel::BilevelProblem>& p, PetscInt iterations) {
  Options o{{"-bilevel_type", "soba"}, {"-bilevel_max_it", std::to_string(iterations)}};
  bilevel::BilevelSolver solver(comm);
  Outcome r;
  r.report = seedtest::solve_from_initial_point(solver, p, &r.x);
  return r;
}

TEST(Soba, HypergradientErrorFallsAsTheSingleLoopRunsLonger) {
  // At a fixed x and y = y*(x), v_k → H⁻¹∇_y f linearly (step 1/L, κ = 20): the estimate ∇_x f − J v_k
  // approaches the closed-form ∇F. The method's accuracy knob is its iteration count.
  const std::vector<PetscReal> err = seedtest::estimate_errors(PETSC_COMM_WORLD, quad(20), "soba", 600);
  ASSERT_EQ(err.size(), 600u);
  EXPECT_LT(err[50], err[5]);
  EXPECT_LT(err[300], err[50]);
  EXPECT_LT(err[599], 1e-6);
}

TEST(Soba, DrivesTheTrueHypergradientDownByThreeOrdersOnQuadratic) {
  // Full batches: constant steps ρ = 1/L on y and v, the stepper's step on x (decay a = 0 by default).
  for (const char* variant : {"soba", "ma"}) {
    Options o{{"-bilevel_soba_variant", variant}};
    const auto r0 = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(30), "soba", 0);
    const auto r = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(30), "soba", 2000);
    ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
    EXPECT_LT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm) << variant;
  }
}

TEST(Soba, EachIterationCallsEveryOracleOnce) {
  Options o{{"-bilevel_final_lower_solve", "0"}};
  const auto r = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(10), "soba", 7);
  EXPECT_EQ(r.report.counts.grad_g, 7);
  EXPECT_EQ(r.report.counts.hvp, 7);
  EXPECT_EQ(r.report.counts.jvp, 7);
  EXPECT_EQ(r.report.counts.grad_f, 7);
}

TEST(Soba, MinibatchesOfTheGivenSizeAndDecayingSteps) {
  // one training batch of 16 for ∇_y g, H v and J v, one validation batch of 16 for ∇f per iteration
  // the method's own defaults, not logreg's tuned settings (cluster/tuned/logreg/soba.opts)
  Options o{
      {"-bilevel_soba_batch_size", "16"}, {"-bilevel_final_lower_solve", "0"}, {"-bilevel_tuned", "false"}};
  const Outcome r = solve(PETSC_COMM_WORLD, small_logreg(PETSC_COMM_WORLD), 5);
  EXPECT_EQ(r.report.counts.samples, 5 * 4 * 16);
  Options t{{"-bilevel_type", "soba"},
            {"-bilevel_max_it", "1"},
            {"-bilevel_soba_batch_size", "16"},
            {"-bilevel_tuned", "false"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  seedtest::solve_from_initial_point(solver, small_logreg(PETSC_COMM_WORLD));
  const std::string text = seedtest::solver_view_text(PETSC_COMM_WORLD, solver);
  seedtest::expect_contains(text, {"SOBA", "Dagreou", "NeurIPS 2022", "decay 0.5", "lower batch 16"});
}

TEST(Soba, LowersTheValidationLossOfLogisticRegression) {
  for (const char* variant : {"soba", "ma"}) {
    Options o{{"-bilevel_soba_variant", variant}, {"-bilevel_soba_batch_size", "32"}};
    const Outcome start = solve(PETSC_COMM_WORLD, small_logreg(PETSC_COMM_WORLD), 0);
    const Outcome end = solve(PETSC_COMM_WORLD, small_logreg(PETSC_COMM_WORLD), 60);
    EXPECT_LT(end.report.upper_objective, start.report.upper_objective - 1e-3) << variant;
  }
}

TEST(Soba, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  for (const char* variant : {"soba", "ma"}) {
    Options o{{"-bilevel_soba_variant", variant}, {"-bilevel_soba_batch_size", "16"}};
    const Outcome world = solve(PETSC_COMM_WORLD, small_logreg(PETSC_COMM_WORLD), 20);
    const Outcome self = solve(PETSC_COMM_SELF, small_logreg(PETSC_COMM_SELF), 20);
    ASSERT_EQ(world.x.size(), self.x.size());
    for (std::size_t i = 0; i < self.x.size(); ++i)
      EXPECT_NEAR(world.x[i], self.x[i], 1e-10 * (1 + std::abs(self.x[i]))) << variant << " entry " << i;
  }
}

TEST(Soba, ViewOfTheMovingAverageVariantAndBadValues) {
  {
    Options o{{"-bilevel_soba_variant", "ma"}, {"-bilevel_soba_average", "0.25"}};
    const std::string text = seedtest::view_text(PETSC_COMM_WORLD, quad(10), "soba");
    seedtest::expect_contains(text,
                              {"MA-SOBA", "Chen, Xu & Zhang", "average theta 0.25", "decay 0", "(1/L)"});
  }
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"-bilevel_soba_variant", "saga"},
                                                        {"-bilevel_soba_average", "2"},
                                                        {"-bilevel_soba_decay", "-3"}}) {
    Options o{{"-bilevel_type", "soba"}, {key, value}};
    bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
    solver.set_problem(std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, quad(10)));
    EXPECT_THROW(solver.set_from_options(), bilevel::InputError) << key << " " << value;
  }
}

}  // namespace
