#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "bilevel/bilevel.hpp"
#include "support/seed_harness.hpp"

namespace {

struct OptionGuard {
  OptionGuard(const char* key, const char* value) : key_(key) { PetscOptionsSetValue(nullptr, key, value); }
  ~OptionGuard() { PetscOptionsClearValue(nullptr, key_); }
  const char* key_;
};

bilevel::QuadraticOptions quad(PetscReal kappa) {
  bilevel::QuadraticOptions o;
  o.dim_lower = 61;
  o.dim_upper = 7;
  o.condition = kappa;
  o.seed = 5;
  return o;
}

TEST(AidCg, HypergradientMatchesClosedFormOnQuadratic) {
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, quad(100));
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), v = p.create_lower_vec(),
       fy = p.create_lower_vec(), fx = p.create_upper_vec(), jv = p.create_upper_vec(),
       exact = p.create_upper_vec();
  VecSet(x, 0.4);
  VecSet(v, 0.0);
  bilevel::CgLinearSolver lower(p, y, 200, 1e-13), hyper(p, y, 200, 1e-13);
  p.lower_grad_y(x, y, bilevel::Batch::all(), fy);  // at y = 0: ∇g = −B x, so CG on H y = B x
  VecScale(fy, -1.0);
  VecSet(y, 0.0);
  auto rhs = p.create_lower_vec();
  VecCopy(fy, rhs);

  const PetscInt lower_its = lower.solve(x, y, bilevel::Batch::all(), rhs, y);  // y* = A⁻¹ B x
  p.upper_grad(x, y, bilevel::Batch::all(), fx, fy);
  const PetscInt its = hyper.solve(x, y, bilevel::Batch::all(), fy, v);  // v = A⁻¹ ∇_y f
  p.lower_jvp(x, y, bilevel::Batch::all(), v, jv);
  VecAXPY(fx, -1.0, jv);
  p.exact_hypergradient(x, exact);
  VecAXPY(fx, -1.0, exact);
  PetscReal err = 0, ref = 0;
  VecNorm(fx, NORM_2, &err);
  VecNorm(exact, NORM_2, &ref);

  EXPECT_GT(lower_its, 0);
  EXPECT_GT(its, 0);
  EXPECT_GT(ref, 1e-3);
  EXPECT_LT(err, 1e-8 * ref);
}

/// Runs aidcg on the quadratic on `comm`; returns the final x gathered on every rank and the report.
bilevel::SolveReport run_aidcg(MPI_Comm comm, PetscInt iterations, std::vector<PetscReal>& x_out) {
  OptionGuard t("-bilevel_type", "aidcg"), it("-bilevel_max_it", std::to_string(iterations).c_str());
  auto p = std::make_shared<bilevel::QuadraticProblem>(comm, quad(1000));
  bilevel::BilevelSolver solver(comm);
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  const bilevel::SolveReport r = solver.solve(x, y);
  Vec all = nullptr;
  VecScatter sc = nullptr;
  VecScatterCreateToAll(x, &sc, &all);
  VecScatterBegin(sc, x, all, INSERT_VALUES, SCATTER_FORWARD);
  VecScatterEnd(sc, x, all, INSERT_VALUES, SCATTER_FORWARD);
  const PetscScalar* a = nullptr;
  PetscInt n = 0;
  VecGetSize(all, &n);
  VecGetArrayRead(all, &a);
  x_out.assign(a, a + n);
  VecRestoreArrayRead(all, &a);
  VecScatterDestroy(&sc);
  VecDestroy(&all);
  return r;
}

TEST(AidCg, DrivesTheTrueHypergradientDownAndReachesTheOptimumOnQuadratic) {
  std::vector<PetscReal> x;
  const bilevel::SolveReport r0 = run_aidcg(PETSC_COMM_WORLD, 1, x);
  const bilevel::SolveReport r = run_aidcg(PETSC_COMM_WORLD, 800, x);

  ASSERT_TRUE(r.true_hypergradient_norm && r0.true_hypergradient_norm && r.optimal_upper_objective);
  EXPECT_GT(r.counts.hvp, 0);
  EXPECT_LT(*r.true_hypergradient_norm, 1e-3 * *r0.true_hypergradient_norm);
  EXPECT_LE(
      (r.upper_objective - *r.optimal_upper_objective) / std::max<PetscReal>(1, *r.optimal_upper_objective),
      1e-6);
  EXPECT_EQ(r.reason, bilevel::ConvergedReason::ConvergedMaxIterations);
}

TEST(AidCg, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  std::vector<PetscReal> x_world, x_self;
  run_aidcg(PETSC_COMM_WORLD, 20, x_world);
  run_aidcg(PETSC_COMM_SELF, 20, x_self);

  ASSERT_EQ(x_world.size(), x_self.size());
  for (std::size_t i = 0; i < x_world.size(); ++i)
    EXPECT_NEAR(x_world[i], x_self[i], 1e-9 * (1 + std::abs(x_self[i])));
}

// One name per knob: the CG of the linear system is the KSP -bilevel_hyper_. The method's defaults (N = 10,
// rtol 1e-10, warm start) are what it uses when the user says nothing; -bilevel_hyper_ksp_* win, and
// -bilevel_view prints what the KSP really uses.
TEST(AidCg, TheLinearSystemKspTakesTheMethodDefaultsAndTheUsersValuesWin) {
  const std::string defaults = seedtest::view_text(PETSC_COMM_WORLD, quad(100), "aidcg");
  EXPECT_NE(defaults.find("KSP cg"), std::string::npos) << defaults;
  EXPECT_NE(defaults.find("rtol 1e-10, max_it 10, initial guess the previous solution"), std::string::npos)
      << defaults;
  seedtest::Options o{{"-bilevel_hyper_ksp_max_it", "3"},
                      {"-bilevel_hyper_ksp_rtol", "1e-12"},
                      {"-bilevel_hyper_ksp_initial_guess_nonzero", "0"}};
  const std::string user = seedtest::view_text(PETSC_COMM_WORLD, quad(100), "aidcg");
  EXPECT_NE(user.find("rtol 1e-12, max_it 3, initial guess zero"), std::string::npos) << user;
  // ... and the run obeys it: 3 CG iterations from zero, 3 Hessian products in the one outer iteration
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(100), "aidcg", 1);
  EXPECT_EQ(r.report.counts.hvp, 3);
}

#ifdef SEEDTEST_HAVE_LOGREG
// On logreg minibatches aidcg's lower update auto takes gradient steps (logreg hints Newton, which on a
// 64-row batch jumps to that batch's minimiser) and the upper step decays as 1/√(k+1) (with constant Adam
// steps the noise walked the regularisers to the box edge: the majority-class collapse on ijcnn1); full
// batches keep the Newton hint and constant steps, and the user's values win.
TEST(AidCg, OnLogregMinibatchesTheDefaultsTakeGradientStepsOnYAndADecayingUpperStep) {
  const auto [full, mini, forced] =
      seedtest::batch_default_views(PETSC_COMM_WORLD, "aidcg", "-bilevel_aidcg_lower", "newton");
  seedtest::expect_contains(full, {"lower newton", "decay 0. (auto)"});
  seedtest::expect_contains(mini, {"lower gd", "decay 0.5 (auto)", "batch 64"});
  seedtest::expect_contains(forced, {"lower newton"});
  const std::string given = seedtest::logreg_view_text(
      PETSC_COMM_WORLD,
      {{"-bilevel_type", "aidcg"}, {"-bilevel_batch_size", "64"}, {"-bilevel_upper_decay", "0.2"}});
  seedtest::expect_contains(given, {"decay 0.2,"});
}
#endif

}  // namespace
