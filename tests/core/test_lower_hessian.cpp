// Sentences about src/core/lower_hessian.cpp: SLEPc's estimates of the lower Hessian's extreme eigenvalues,
// on the quadratic, whose spectrum is known (eigenvalues in [1, κ]).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/problems/quadratic.hpp"
#include "support/seed_harness.hpp"

namespace {

struct Quadratic {
  std::shared_ptr<bilevel::QuadraticProblem> p;
  bilevel::petsc::VecHandle x, y;
  explicit Quadratic(PetscReal condition) {
    bilevel::QuadraticOptions q;
    q.dim_lower = 400;
    q.dim_upper = 5;
    q.condition = condition;
    p = std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, q);
    x = p->create_upper_vec();
    y = p->create_lower_vec();
    p->initial_point(x, y);
  }
};

TEST(LowerHessianEstimates, ConvergedEstimatesAreTheExtremeEigenvalues) {
  Quadratic q(100.0);
  EXPECT_NEAR(bilevel::estimate_lower_strong_convexity(*q.p, q.x, q.y), 1.0, 1e-3);
  EXPECT_NEAR(bilevel::estimate_lower_lipschitz(*q.p, q.x, q.y), 100.0, 0.2);
}

// 20 Newsgroups per-feature logreg once failed here: SLEPc converged no eigenpair within its budget and
// EPSGetEigenvalue(0) raised PETSc error 63, ending pzobo's run. The last Ritz value is the estimate then.
TEST(LowerHessianEstimates, AnEstimateThatDoesNotConvergeFallsBackOnTheLastRitzValue) {
  Quadratic q(1e4);
  seedtest::Options budget{{"-bilevel_eig_eps_max_it", "1"}, {"-bilevel_eig_eps_tol", "1e-14"}};
  const PetscReal mu = bilevel::estimate_lower_strong_convexity(*q.p, q.x, q.y);
  // 0.5 × a Ritz value from one restart: above λ_min / 2, and not the converged λ_min = 1
  EXPECT_TRUE(std::isfinite(mu));
  EXPECT_GE(mu, 0.5 * (1.0 - 1e-9));
  EXPECT_GT(std::abs(mu - 1.0), 1e-3) << "the unconverged path did not run";
  const PetscReal L = bilevel::estimate_lower_lipschitz(*q.p, q.x, q.y);
  // 1.1 × a Ritz value below λ_max = 10^4
  EXPECT_GT(L, 0.0);
  EXPECT_LE(L, 1.1 * 1e4 * (1 + 1e-9));
  EXPECT_GT(std::abs(L - 1e4), 1.0) << "the unconverged path did not run";
}

}  // namespace
