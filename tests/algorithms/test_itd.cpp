// ITD (reverse mode through K unrolled lower steps; Franceschi et al. 2017, Grazzi et al. 2020) on the
// closed-form quadratic.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;

// At y = y*(x) the unrolled map is linear and the estimate's error is J (dy_K/dx − dy*/dx)-shaped: it
// shrinks like ρ^K, ρ the rate of the lower steps. Gradient steps (momentum 0, α = 2/(L + μ)):
// ρ = 99/101 on κ = 100, so K = 10, 50, 200, 800 give ρ^K = 0.82, 0.37, 0.019, 1.4e-7.
TEST(Itd, GradientStepsHypergradientErrorFallsAsTheUnrolledStepsGrow) {
  std::vector<PetscReal> last;
  for (const char* k : {"10", "50", "200", "800"}) {
    Options o{{"-bilevel_itd_inner_steps", k}, {"-bilevel_itd_momentum", "0"}};
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_SELF, seedtest::quad(100), "itd", 2);
    ASSERT_EQ(e.size(), 2u);
    last.push_back(e.back());
  }
  for (std::size_t i = 1; i < last.size(); ++i) EXPECT_LT(last[i], 0.7 * last[i - 1]) << i;
  EXPECT_LT(last.back(), 1e-5);
  EXPECT_GT(last.front(), 0.05);  // K = 10 is far from v*: the test can fail
}

// The default heavy-ball steps (Polyak's α, β from κ = 100): ρ = 9/11, K ρ^K = 1.8, 1.3, 0.36, 0.013 for
// K = 5, 10, 20, 40.
TEST(Itd, HeavyBallHypergradientErrorFallsAsTheUnrolledStepsGrow) {
  std::vector<PetscReal> last;
  for (const char* k : {"5", "10", "20", "40"}) {
    Options o{{"-bilevel_itd_inner_steps", k}};
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "itd", 2);
    ASSERT_EQ(e.size(), 2u);
    last.push_back(e.back());
  }
  for (std::size_t i = 1; i < last.size(); ++i) EXPECT_LT(last[i], 0.8 * last[i - 1]) << i;
  EXPECT_LT(last.back(), 0.05);
}

// In the problem's M (κ(M H) <= 3 against κ(H) = 100) the unrolled steps y <- y − α M ∇_y g with α =
// 1/λ_max(M H) contract at ρ <= 1 − 1/(1.1·3) ≈ 0.7, so ten steps leave ρ^10 <= 0.03 where plain gradient
// steps leave 0.82 (test above), and the backward pass through the same steps gives that accuracy.
TEST(Itd, InTheProblemsPreconditionerTenUnrolledStepsGiveTheHypergradientPlainStepsNeedHundredsFor) {
  auto q = seedtest::quad(100);
  q.preconditioner_error = 0.5;
  PetscReal pc = 0, plain = 0;
  {
    Options o{{"-bilevel_itd_inner_steps", "10"}, {"-bilevel_itd_momentum", "0"}};
    pc = seedtest::estimate_errors(PETSC_COMM_WORLD, q, "itd", 2).back();
    Options off{{"-bilevel_itd_precondition", "false"}};
    plain = seedtest::estimate_errors(PETSC_COMM_WORLD, q, "itd", 2).back();
  }
  EXPECT_LT(pc, 0.05);
  EXPECT_GT(plain, 0.05);
  EXPECT_LT(pc, 0.2 * plain);
  EXPECT_NE(seedtest::view_text(PETSC_COMM_WORLD, q, "itd").find("steps in the problem's M"),
            std::string::npos);
}

TEST(Itd, CostsKGradientsKJacobianAndKMinusOneHessianProductsPerIteration) {
  Options o{{"-bilevel_itd_inner_steps", "7"}};
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "itd", 5);
  EXPECT_EQ(r.report.counts.grad_g, 5 * 7);
  EXPECT_EQ(r.report.counts.jvp, 5 * 7);
  EXPECT_EQ(r.report.counts.hvp, 5 * 6);
  EXPECT_EQ(r.report.counts.grad_f, 5);
}

// On each rank alone (the rank-count independence is the next test's): the default quadratic's size and
// condition; the norm reaches the 1e-3 mark after about 90 iterations and the bias floor (6e-5 of the start)
// after 300.
TEST(Itd, DefaultsDriveTheTrueHypergradientDownThreeOrdersOnQuadratic) {
  const auto q = seedtest::quad(100, 100, 10);
  const seedtest::Run r0 = seedtest::run_quadratic(PETSC_COMM_SELF, q, "itd", 0);
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_SELF, q, "itd", 300);
  ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
  EXPECT_LT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);
}

TEST(Itd, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  Options o{{"-bilevel_itd_inner_steps", "30"}};
  const auto q = seedtest::quad(100);
  const seedtest::Run world = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "itd", 40);
  const seedtest::Run self = seedtest::run_quadratic(PETSC_COMM_SELF, q, "itd", 40);
  EXPECT_LT(seedtest::max_relative_difference(world.x, self.x), 1e-12);
}

TEST(Itd, RefusesAnUnrollingOverTheMemoryLimitNamingTheOption) {
  // 61 doubles per iterate: 100000 iterates are 46.5 MiB on one rank, over a limit of 1 MiB
  Options o{{"-bilevel_itd_inner_steps", "100000"}, {"-bilevel_itd_memory_limit", "1"}};
  std::string message;
  try {
    seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "itd", 1);
  } catch (const bilevel::InputError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("-bilevel_itd_memory_limit"), std::string::npos) << message;
  EXPECT_NE(message.find("-bilevel_itd_inner_steps 100000"), std::string::npos) << message;
}

TEST(Itd, ViewStatesTheMethodTheReferenceTheAutomaticKAndTheMemory) {
  const std::string text = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "itd");
  EXPECT_NE(text.find("arXiv 1703.01785"), std::string::npos) << text;
  // ρ = 9/11 (κ = 100): the smallest K with K ρ^K <= 3e-3 is 49; α = 4/(10 + 1)^2, β = (9/11)^2
  EXPECT_NE(text.find("inner_steps K 49 (automatic"), std::string::npos) << text;
  EXPECT_NE(text.find("inner_step 0.0330579, momentum 0.669421"), std::string::npos) << text;
  EXPECT_NE(text.find("MiB per rank"), std::string::npos) << text;
}

}  // namespace
