// LancBiO (Yang, Gao & Yuan 2025) on the closed-form quadratic (its block:
// tests/blocks/test_dynamic_lanczos.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;

// LancBiO with the preconditioned process: the estimate approaches ∇F at a fixed x with a basis of at most
// 4 vectors on a κ = 1e4 lower level.
TEST(LancBio, PreconditionedEstimateApproachesTheClosedFormWithASmallBasis) {
  bilevel::QuadraticOptions o = seedtest::quad(1e4);
  o.preconditioner_error = 0.5;
  seedtest::Options opts{{"-bilevel_lancbio_max_dim", "4"}, {"-bilevel_lancbio_initial_dim", "4"}};
  const std::vector<PetscReal> e = seedtest::estimate_errors(PETSC_COMM_WORLD, o, "lancbio", 60);
  ASSERT_EQ(e.size(), 60u);
  EXPECT_LT(e[59], 1e-6 * e[0]);
}

TEST(LancBio, HypergradientEstimateApproachesTheClosedFormAsTheSubspaceGrows) {
  std::vector<PetscReal>
      last;  // relative error after 48 iterations at a fixed x (measured 0.14, 6e-3, 7e-5, 1.4e-6)
  for (const char* m : {"1", "4", "16", "48"}) {
    Options o{{"-bilevel_lancbio_initial_dim", m}, {"-bilevel_lancbio_max_dim", m}};
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "lancbio", 48);
    ASSERT_EQ(e.size(), 48u);
    last.push_back(e.back());
  }
  EXPECT_LT(last[1], 0.1 * last[0]);
  EXPECT_LT(last[2], 0.05 * last[1]);
  EXPECT_LT(last[3], 0.1 * last[2]);
  EXPECT_LT(last[3], 1e-5);
}

TEST(LancBio, DrivesTheTrueHypergradientDownAndReachesTheOptimumOnQuadratic) {
  const auto q = seedtest::quad(1000);
  const seedtest::Run r0 = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "lancbio", 0);
  const seedtest::Run r =
      seedtest::run_quadratic(PETSC_COMM_WORLD, q, "lancbio", 1000);  // ratio 5e-5 measured
  ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
  EXPECT_LT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);
  EXPECT_LE(seedtest::relative_gap(r.report), 1e-4);
  // (1 + 1/m) HVPs per iteration on average: between 1 and 2 per iteration, no CG.
  EXPECT_GT(r.report.counts.hvp, 1000);
  EXPECT_LT(r.report.counts.hvp, 2 * 1000);
  EXPECT_EQ(r.report.counts.jvp, 1000);
  EXPECT_EQ(r.report.counts.grad_g, 5 * 1000);
}

// 60 iterations cover restarts at m = 1, 2, 3, 4, all in the SLEPc BV. The method itself amplifies rounding
// (no re-orthogonalisation, restarts, a nonlinear map): perturbing x_0 by 1e-15 in a serial prototype grows
// to 1e-10 after 100 iterations and 4e-5 after 400 with m_max = 80, exactly like the 1-vs-3-rank
// difference (1e-12 at 60, 4e-9 at 120, 1e-4 at 400, shrinking again as both runs converge), so the
// comparison stops before that growth dominates.
TEST(LancBio, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  const auto q = seedtest::quad(1000);
  const seedtest::Run world = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "lancbio", 60);
  const seedtest::Run self = seedtest::run_quadratic(PETSC_COMM_SELF, q, "lancbio", 60);
  EXPECT_LT(seedtest::max_relative_difference(world.x, self.x), 1e-9);
}

TEST(LancBio, ExactResidualOptionCostsOneHvpAndAgreesWithTheEstimateOnAFixedOperator) {
  const auto q = seedtest::quad(100);
  const seedtest::Run plain = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "lancbio", 40);
  Options o{{"-bilevel_lancbio_exact_residual", "1"}};
  const seedtest::Run exact = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "lancbio", 40);
  EXPECT_EQ(exact.report.counts.hvp, plain.report.counts.hvp + 40);
  EXPECT_LT(seedtest::max_relative_difference(exact.x, plain.x), 1e-12);
}

TEST(LancBio, ViewStatesTheMethodTheReferenceAndTheSettings) {
  Options o{{"-bilevel_lancbio_max_dim", "12"}};
  const std::string text = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "lancbio");
  EXPECT_NE(text.find("lancbio"), std::string::npos) << text;
  EXPECT_NE(text.find("arXiv 2404.03331"), std::string::npos) << text;
  EXPECT_NE(text.find("max_dim 12"), std::string::npos) << text;
  EXPECT_NE(text.find("inner_step 0.01"), std::string::npos) << text;  // 1/L with L = κ = 100
}

#ifdef SEEDTEST_HAVE_LOGREG
TEST(LancBio, LowersTheValidationLossOnASmallLogreg) {
  const auto [before, after] = seedtest::logreg_losses(PETSC_COMM_WORLD, "lancbio", 10);
  EXPECT_LT(after, before - 1e-3);
}

// The lower update's auto is logreg's Newton hint on a full batch and gradient steps on minibatches (the
// shared LowerUpdate block); an explicit -bilevel_lancbio_lower newton wins.
TEST(LancBio, OnLogregMinibatchesTheAutoLowerUpdateTakesGradientStepsAndAnExplicitNewtonWins) {
  const auto [full, mini, forced] =
      seedtest::batch_default_views(PETSC_COMM_WORLD, "lancbio", "-bilevel_lancbio_lower", "newton");
  seedtest::expect_contains(full, {"lower newton"});
  seedtest::expect_contains(mini, {"lower gd", "decay 0.5 (auto)"});
  seedtest::expect_contains(forced, {"lower newton"});
}
#endif

}  // namespace
