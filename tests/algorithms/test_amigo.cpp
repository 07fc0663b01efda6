// AmIGO-GD and AmIGO-CG (Arbel & Mairal 2022) on the closed-form quadratic.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;

// At a fixed x with y = y*(x), after k iterations of M warm-started gradient steps the error of v is
// (I − βH)^{kM} v*: the relative hypergradient error after 4 iterations falls as M grows (κ = 100:
// (0.99)^{4M} = 0.67, 0.20, 0.018, 1e-4 for M = 10, 40, 100, 230).
TEST(Amigo, GdHypergradientErrorFallsAsTheLinearStepsGrow) {
  std::vector<PetscReal> last;
  for (const char* m : {"10", "40", "100", "230"}) {
    Options o{{"-bilevel_amigo_linear_steps", m}};
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "amigo", 4);
    ASSERT_EQ(e.size(), 4u);
    last.push_back(e.back());
  }
  for (std::size_t i = 1; i < last.size(); ++i) EXPECT_LT(last[i], 0.5 * last[i - 1]) << i;
  EXPECT_LT(last.back(), 1e-3);
  EXPECT_GT(last.front(), 0.05);
}

// The warm start is the amortization: with M = 10 steps per iteration at a fixed x the error keeps
// falling from one outer iteration to the next (a cold start would stay at (0.99)^10 = 0.9).
TEST(Amigo, WarmStartedVKeepsImprovingAcrossIterations) {
  const std::vector<PetscReal> e =
      seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "amigo", 60);
  ASSERT_EQ(e.size(), 60u);
  EXPECT_GT(e[0], 0.5);
  EXPECT_LT(e[59], 1e-2);
}

TEST(Amigo, CgHypergradientErrorFallsAsTheCgStepsGrow) {
  std::vector<PetscReal> last;
  for (const char* m : {"1", "3", "10"}) {
    Options o{{"-bilevel_amigo_linear_solver", "cg"}, {"-bilevel_amigo_linear_steps", m}};
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "amigo", 2);
    ASSERT_EQ(e.size(), 2u);
    last.push_back(e.back());
  }
  EXPECT_LT(last[1], 0.5 * last[0]);
  EXPECT_LT(last[2], 0.1 * last[1]);
}

TEST(Amigo, CostsTGradientsMProductsAndOneJacobianProductPerIteration) {
  Options o{{"-bilevel_amigo_inner_steps", "3"}, {"-bilevel_amigo_linear_steps", "4"}};
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "amigo", 5);
  EXPECT_EQ(r.report.counts.grad_g, 5 * 3);
  EXPECT_EQ(r.report.counts.hvp, 5 * 4);
  EXPECT_EQ(r.report.counts.jvp, 5);
}

TEST(Amigo, DefaultsDriveTheTrueHypergradientDownThreeOrdersOnQuadratic) {
  for (const char* solver : {"gd", "cg"}) {
    Options o{{"-bilevel_amigo_linear_solver", solver}};
    const auto q = seedtest::quad(100, 100, 10);
    const seedtest::Run r0 = seedtest::run_quadratic(PETSC_COMM_SELF, q, "amigo", 0);  // each rank alone
    const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_SELF, q, "amigo", 1000);
    ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
    EXPECT_LT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm) << solver;
  }
}

TEST(Amigo, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  for (const char* solver : {"gd", "cg"}) {
    Options o{{"-bilevel_amigo_linear_solver", solver}};
    const auto q = seedtest::quad(100);
    const seedtest::Run world = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "amigo", 40);
    const seedtest::Run self = seedtest::run_quadratic(PETSC_COMM_SELF, q, "amigo", 40);
    EXPECT_LT(seedtest::max_relative_difference(world.x, self.x), 1e-10) << solver;
  }
}

TEST(Amigo, RejectsAnUnknownLinearSolverNamingTheChoices) {
  Options o{{"-bilevel_amigo_linear_solver", "lu"}};
  std::string message;
  try {
    seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "amigo", 1);
  } catch (const bilevel::InputError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("-bilevel_amigo_linear_solver"), std::string::npos) << message;
  EXPECT_NE(message.find("cg"), std::string::npos) << message;
}

TEST(Amigo, ViewStatesTheVariantTheReferenceAndTheSettings) {
  {
    const std::string text = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "amigo");
    EXPECT_NE(text.find("AmIGO-GD"), std::string::npos) << text;
    EXPECT_NE(text.find("arXiv 2111.14580"), std::string::npos) << text;
    EXPECT_NE(text.find("linear_step 0.01"), std::string::npos) << text;  // 1/L with L = κ = 100
  }
  Options o{{"-bilevel_amigo_linear_solver", "cg"}};
  const std::string text = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "amigo");
  EXPECT_NE(text.find("AmIGO-CG"), std::string::npos) << text;
  EXPECT_NE(text.find("KSP"), std::string::npos) << text;
}

#ifdef SEEDTEST_HAVE_LOGREG
TEST(Amigo, LowersTheValidationLossOnASmallLogreg) {
  const auto [before, after] = seedtest::logreg_losses(PETSC_COMM_WORLD, "amigo", 10);
  EXPECT_LT(after, before - 1e-3);
}
#endif

}  // namespace
