// F2SA (Kwon, Kwon, Wright & Nowak 2023), fully first order, on the closed-form quadratic.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;

// With the penalty held fixed (lambda_step 0) the estimate tends to ∇L_λ(x), whose distance to ∇F(x) is
// O(1/(λ μ)): the relative error at a fixed x after enough inner steps falls about tenfold per tenfold λ.
TEST(F2sa, HypergradientErrorFallsAsThePenaltyGrows) {
  std::vector<PetscReal> last;
  for (const char* lambda : {"1", "10", "100", "1000"}) {
    Options o{{"-bilevel_f2sa_lambda0", lambda}, {"-bilevel_f2sa_lambda_step", "0"}};
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_SELF, seedtest::quad(10), "f2sa", 200);
    ASSERT_EQ(e.size(), 200u);
    last.push_back(e.back());
  }
  for (std::size_t i = 1; i < last.size(); ++i) EXPECT_LT(last[i], 0.2 * last[i - 1]) << i;
  EXPECT_LT(last.back(), 1e-2);
}

TEST(F2sa, UsesNoSecondOrderOracle) {
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "f2sa", 5);
  EXPECT_EQ(r.report.counts.hvp, 0);
  EXPECT_EQ(r.report.counts.jvp, 0);
  EXPECT_EQ(r.report.counts.grad_g, 5 * (2 * 10 + 2));  // T (∇_y g at z and y) + 2 ∇_x g
  EXPECT_EQ(r.report.counts.grad_f, 5 * (10 + 1));
}

TEST(F2sa, DefaultsDriveTheTrueHypergradientDownTwoOrdersOnQuadratic) {
  const auto q = seedtest::quad(100, 100, 10);
  const seedtest::Run r0 = seedtest::run_quadratic(PETSC_COMM_SELF, q, "f2sa", 0);  // each rank alone
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_SELF, q, "f2sa", 2000);
  ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
  EXPECT_LT(*r.report.true_hypergradient_norm, 1e-2 * *r0.report.true_hypergradient_norm);
}

TEST(F2sa, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  const auto q = seedtest::quad(100);
  const seedtest::Run world = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "f2sa", 40);
  const seedtest::Run self = seedtest::run_quadratic(PETSC_COMM_SELF, q, "f2sa", 40);
  EXPECT_LT(seedtest::max_relative_difference(world.x, self.x), 1e-12);
}

TEST(F2sa, ViewStatesTheMethodTheReferenceAndTheSchedule) {
  const std::string text = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "f2sa");
  EXPECT_NE(text.find("arXiv 2301.10945"), std::string::npos) << text;
  EXPECT_NE(text.find("inner_step 0.01"), std::string::npos) << text;
  EXPECT_NE(text.find("lambda0 1"), std::string::npos) << text;
}

#ifdef SEEDTEST_HAVE_LOGREG
TEST(F2sa, LowersTheValidationLossOnASmallLogreg) {
  const auto [before, after] = seedtest::logreg_losses(PETSC_COMM_WORLD, "f2sa", 10);
  EXPECT_LT(after, before - 1e-3);
}
#endif

}  // namespace
