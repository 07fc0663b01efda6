// NBO / NSBO (src/algorithms/nbo) and its building block TwoSystemSolver (blocks/two_system_solver.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/blocks/two_system_solver.hpp"
#include "bilevel/problems/logreg.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::CountingQuadratic;
using seedtest::relative_error;

using bilevel::petsc::VecHandle;

using seedtest::Options;
using seedtest::quad;

using Outcome = seedtest::Run;

/// One solve of nbo on `problem` with the options currently set; x gathered to every rank. Collective.
Outcome solve(MPI_Comm comm, std::shared_ptr<bilevel::BilevelProblem> problem, PetscInt iterations) {
  return seedtest::run_method(comm, std::move(problem), "nbo", iterations);
}

Outcome solve_quadratic(MPI_Comm comm, const bilevel::QuadraticOptions& q, PetscInt iterations) {
  return seedtest::run_quadratic(comm, q, "nbo", iterations);
}

/// Relative error of the first outer iteration's hypergradient estimate against ∇F(x_0), recovered from
/// x_1 = x_0 − h (SGD stepper, step 1). The run starts at y_0 = y*(x_0): NBO solves for u with ∇_y f at y_k
/// (the point before its Newton step), so from another y_0 the first estimate carries ∇_y f(y_0) − ∇_y f(y*)
/// whatever T is. Collective.
PetscReal first_estimate_error(const bilevel::QuadraticOptions& q) {
  Options o{{"-bilevel_upper_type", "sgd"},
            {"-bilevel_upper_step", "1"},
            {"-bilevel_type", "nbo"},
            {"-bilevel_max_it", "1"}};
  auto p = std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, q);
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec(), x0 = p->create_upper_vec(),
       exact = p->create_upper_vec();
  p->initial_point(x, y);
  VecCopy(x, x0);
  p->exact_lower_solution(x, y);
  solver.solve(x, y);
  p->exact_hypergradient(x0, exact);
  VecAYPX(x, -1.0, x0);  // h = x_0 − x_1
  return relative_error(x, exact);
}

// ------------------------------------------------------------------------------------------------------
// The method on the closed-form quadratic.

TEST(Nbo, HypergradientApproachesTheClosedFormAsInnerStepsGrow) {
  // One outer iteration from y_0 = y*(x_0): u comes from T inner steps on H u = ∇_y f, so the error of the
  // estimate vanishes as T grows.
  {
    Options o{{"-bilevel_nbo_variant", "cg"}, {"-bilevel_nbo_cg_rtol", "0"}};  // T alone ends CG
    std::vector<PetscReal> err;
    for (const char* t : {"2", "8", "25", "70"}) {
      Options ot{{"-bilevel_nbo_inner_steps", t}};
      err.push_back(first_estimate_error(quad(100)));
    }
    for (std::size_t i = 1; i < err.size(); ++i) EXPECT_LT(err[i], err[i - 1]) << "cg, T index " << i;
    EXPECT_LT(err.back(), 1e-8);
  }
  {
    Options o{{"-bilevel_nbo_variant", "gd"}};
    std::vector<PetscReal> err;
    for (const char* t : {"1", "10", "60", "300"}) {
      Options ot{{"-bilevel_nbo_inner_steps", t}};
      err.push_back(first_estimate_error(quad(10)));
    }
    for (std::size_t i = 1; i < err.size(); ++i) EXPECT_LT(err[i], err[i - 1]) << "gd, T index " << i;
    EXPECT_LT(err.back(), 1e-8);
  }
}

TEST(Nbo, WithoutAPreconditionerCgRunsToAResidualOf1e6RatherThanThePapersFiveIterations) {
  // The quadratic offers no preconditioner: the default is CG to relative residual 1e-6 within T = 50,
  // far more accurate than the paper's T = 5 at κ = 100 (relative error <= κ · 1e-6).
  Options o{{"-bilevel_nbo_variant", "cg"}};
  const PetscReal by_default = first_estimate_error(quad(100));
  PetscReal paper = 0;
  {
    Options five{{"-bilevel_nbo_inner_steps", "5"}, {"-bilevel_nbo_cg_rtol", "0"}};
    paper = first_estimate_error(quad(100));
  }
  EXPECT_LT(by_default, 1e-4);
  EXPECT_LT(by_default, 1e-2 * paper) << "the default did not run past T = 5";
}

TEST(Nbo, DrivesTheTrueHypergradientDownByThreeOrdersOnQuadratic) {
  struct Case {
    const char* variant;
    PetscReal kappa;
    PetscInt iterations;
    const char* steps;
  };
  // NBO-GD takes steps 1/L on both systems: with the paper's T = 1 it needs ~500 iterations at κ = 1e2, at
  // κ = 1e3 ~500 with T = 20 (the limit at T = 1 is the next test); NSBO-SGD on a problem without samples is
  // NBO-GD with full batches.
  for (const Case c : {Case{"cg", 1000, 400, "5"},
                       Case{"gd", 1000, 500, "20"},
                       Case{"gd", 100, 500, "1"},
                       Case{"sgd", 100, 500, "1"}}) {
    Options o{{"-bilevel_nbo_variant", c.variant}, {"-bilevel_nbo_inner_steps", c.steps}};
    const Outcome r0 = solve_quadratic(PETSC_COMM_WORLD, quad(c.kappa), 1);
    const Outcome r = solve_quadratic(PETSC_COMM_WORLD, quad(c.kappa), c.iterations);
    ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
    EXPECT_LT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm)
        << c.variant << " kappa " << c.kappa;
    EXPECT_LE((r.report.upper_objective - *r.report.optimal_upper_objective) /
                  std::max<PetscReal>(1, std::abs(*r.report.optimal_upper_objective)),
              1e-6)
        << c.variant << " kappa " << c.kappa;
  }
}

TEST(Nbo, GradientVariantWithOneStepIsSlowAtHighCondition) {
  // The limit of the paper's T = 1 at κ = 1e3: after 600 iterations the true hypergradient has not yet
  // dropped by three orders (it does with CG, above).
  Options o{{"-bilevel_nbo_variant", "gd"}, {"-bilevel_nbo_inner_steps", "1"}};
  const Outcome r0 = solve_quadratic(PETSC_COMM_WORLD, quad(1000), 1);
  const Outcome r = solve_quadratic(PETSC_COMM_WORLD, quad(1000), 600);
  EXPECT_GT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);
  EXPECT_LT(*r.report.true_hypergradient_norm, *r0.report.true_hypergradient_norm);
}

TEST(Nbo, TwoSystemsShareOnePassAndTheHvpCountMatchesThePaper) {
  // NBO-CG with T iterations: 2T + 1 products per outer iteration (H u_k, then H on both directions), T + 1
  // passes; the first iteration starts u from 0 (2T products, T passes).
  auto p = std::make_shared<CountingQuadratic>(PETSC_COMM_WORLD, quad(1000));
  Options o{{"-bilevel_nbo_variant", "cg"},
            {"-bilevel_nbo_inner_steps", "4"},
            {"-bilevel_nbo_cg_rtol", "0"},
            {"-bilevel_nbo_warmup_newton", "0"},
            {"-bilevel_final_lower_solve", "0"}};
  const Outcome r = solve(PETSC_COMM_WORLD, p, 10);
  EXPECT_EQ(r.report.counts.hvp, 2 * 4 + 9 * (2 * 4 + 1));
  EXPECT_EQ(p->multi_calls, 4 + 9 * 5);
  EXPECT_EQ(p->single_calls, 0);
  EXPECT_EQ(r.report.counts.grad_g, 10);
  EXPECT_EQ(r.report.counts.grad_f, 20);
  EXPECT_EQ(r.report.counts.jvp, 10);
}

TEST(Nbo, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  // The paper's fixed T = 5 (cg_rtol 0): a tolerance stop is discontinuous (a residual that lands on the
  // threshold can end CG one iteration apart at different rank counts, as any KSP with rtol), and CG run
  // past convergence iterates on rounding noise; the arithmetic is what this sentence checks.
  for (const char* variant : {"cg", "gd"}) {
    Options o{{"-bilevel_nbo_variant", variant}, {"-bilevel_nbo_cg_rtol", "0"}};
    Options t{{"-bilevel_nbo_inner_steps", std::string(variant) == "cg" ? "5" : "1"}};
    const Outcome world = solve_quadratic(PETSC_COMM_WORLD, quad(1000), 25);
    const Outcome self = solve_quadratic(PETSC_COMM_SELF, quad(1000), 25);
    ASSERT_EQ(world.x.size(), self.x.size());
    for (std::size_t i = 0; i < self.x.size(); ++i)
      EXPECT_NEAR(world.x[i], self.x[i], 1e-9 * (1 + std::abs(self.x[i]))) << variant << " entry " << i;
  }
}

TEST(Nbo, ViewStatesMethodReferenceAndSettings) {
  Options o{{"-bilevel_nbo_variant", "gd"}, {"-bilevel_nbo_inner_steps", "2"}};
  auto p = std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, quad(10));
  Options t{{"-bilevel_type", "nbo"}, {"-bilevel_max_it", "1"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  solver.solve(x, y);
  const std::string text = seedtest::solver_view_text(PETSC_COMM_WORLD, solver);
  for (const char* s :
       {"NBO-GD", "Dong", "ICML 2025", "T+1 = 3", "eta 0.1", "one Hessian pass", "5 inexact Newton"})
    EXPECT_NE(text.find(s), std::string::npos) << "missing '" << s << "' in:\n" << text;
}

TEST(Nbo, BadOptionValuesAreInputErrors) {
  auto p = std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, quad(10));
  Options o{{"-bilevel_type", "nbo"}, {"-bilevel_nbo_variant", "svrg"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(p);
  EXPECT_THROW(solver.set_from_options(), bilevel::InputError);
}

// ------------------------------------------------------------------------------------------------------
// A small data problem: deterministic NBO-CG / NBO-GD and the stochastic NSBO-SGD.

TEST(Nbo, LowersTheValidationLossOfLogisticRegression) {
  const auto tr = testdata::make_global(240, 9, 2, 11), va = testdata::make_global(160, 9, 2, 12);
  auto make = [&] {
    return std::make_shared<bilevel::LogregProblem>(
        testdata::to_dataset(PETSC_COMM_WORLD, tr, bilevel::DataFormat::Dense),
        testdata::to_dataset(PETSC_COMM_WORLD, va, bilevel::DataFormat::Dense),
        std::nullopt,
        bilevel::LogregOptions{});
  };
  for (const char* variant : {"cg", "gd", "sgd"}) {
    Options o{{"-bilevel_nbo_variant", variant}, {"-bilevel_nbo_batch_size", "32"}};
    const Outcome start = solve(PETSC_COMM_WORLD, make(), 0);
    const Outcome end = solve(PETSC_COMM_WORLD, make(), 40);
    EXPECT_LT(end.report.upper_objective, start.report.upper_objective - 1e-3)
        << variant << " " << bilevel::to_string(end.report.reason) << " after "
        << end.report.outer_iterations;
  }
}

TEST(Nbo, StochasticVariantDrawsMinibatchesOfTheGivenSize) {
  const auto tr = testdata::make_global(240, 9, 2, 11), va = testdata::make_global(160, 9, 2, 12);
  auto p = std::make_shared<bilevel::LogregProblem>(
      testdata::to_dataset(PETSC_COMM_WORLD, tr, bilevel::DataFormat::Dense),
      testdata::to_dataset(PETSC_COMM_WORLD, va, bilevel::DataFormat::Dense),
      std::nullopt,
      bilevel::LogregOptions{});
  Options o{{"-bilevel_nbo_variant", "sgd"},
            {"-bilevel_nbo_batch_size", "16"},
            {"-bilevel_nbo_inner_steps", "2"},
            {"-bilevel_nbo_warmup_newton", "0"},
            {"-bilevel_final_lower_solve", "0"}};
  const Outcome r = solve(PETSC_COMM_WORLD, p, 3);
  // per iteration: ∇_y g, ∇_y f, ∇_x f and J u on 16 samples each, and one pass of 16 per step with products:
  // 2 in the first iteration (u_0 = 0 and v = 0: the first step needs none), 3 afterwards
  EXPECT_EQ(r.report.counts.samples, 3 * 4 * 16 + (2 + 3 + 3) * 16);
}

// ------------------------------------------------------------------------------------------------------
// NSBO-SAGA: the sgd variant with SAGA memory tables (blocks/saga.hpp).

TEST(NboSaga, OnAProblemWithoutSamplesIsNboGdBitForBit) {
  // one slot: every SAGA direction is the oracle itself
  std::vector<std::vector<double>> x;
  for (const char* variant : {"saga", "gd"}) {
    Options o{{"-bilevel_nbo_variant", variant}};
    x.push_back(solve_quadratic(PETSC_COMM_WORLD, quad(100), 10).x);
  }
  EXPECT_EQ(x[0], x[1]);
}

TEST(NboSaga, DrivesTheTrueHypergradientDownByThreeOrdersOnQuadratic) {
  Options o{{"-bilevel_nbo_variant", "saga"}};
  const Outcome r0 = solve_quadratic(PETSC_COMM_WORLD, quad(30), 0);
  const Outcome r = solve_quadratic(PETSC_COMM_WORLD, quad(30), 400);
  ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
  EXPECT_LT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);
}

std::shared_ptr<bilevel::BilevelProblem> saga_logreg(MPI_Comm comm) {
  const auto tr = testdata::make_global(240, 9, 2, 11), va = testdata::make_global(160, 9, 2, 12);
  return std::make_shared<bilevel::LogregProblem>(testdata::to_dataset(comm, tr, bilevel::DataFormat::Dense),
                                                  testdata::to_dataset(comm, va, bilevel::DataFormat::Dense),
                                                  std::nullopt,
                                                  bilevel::LogregOptions{});
}

/// The residuals of the last monitored iteration.
class LastResiduals : public bilevel::Monitor {
 public:
  void on_iteration(const bilevel::IterationRecord& r) override { linear = r.linear_residual; }
  PetscReal linear = -1;
};

TEST(NboSaga, VarianceReductionLetsTheLinearResidualVanishWhereNsboSgdStaysAtTheNoise) {
  // At a fixed x (SGD of step 2^-30), constant η, minibatches of 16 (15 training and 10 validation slots):
  // NSBO-SAGA's residual of H u = ∇_y f (SAGA products and right-hand side) falls with the run length, the
  // minibatch residual of NSBO-SGD stays at the sampling noise.
  auto run = [](const char* variant, PetscInt iterations) {
    Options o{{"-bilevel_nbo_variant", variant},
              {"-bilevel_nbo_batch_size", "16"},
              {"-bilevel_upper_type", "sgd"},
              {"-bilevel_upper_step", "9.313225746154785e-10"},
              {"-bilevel_final_lower_solve", "0"},
              {"-bilevel_type", "nbo"},
              {"-bilevel_max_it", std::to_string(iterations)}};
    bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
    auto monitor = std::make_unique<LastResiduals>();
    LastResiduals* last = monitor.get();
    solver.add_monitor(std::move(monitor));
    seedtest::solve_from_initial_point(solver, saga_logreg(PETSC_COMM_WORLD));
    return last->linear;
  };
  std::vector<PetscReal> saga;
  for (PetscInt k : {25, 100, 400}) saga.push_back(run("saga", k));
  const PetscReal sgd = run("sgd", 400);
  EXPECT_LT(saga[1], saga[0]);
  EXPECT_LT(saga[2], saga[1]);
  EXPECT_LT(saga[2], 1e-3 * sgd) << "NSBO-SAGA " << saga[2] << ", NSBO-SGD " << sgd;
}

TEST(NboSaga, IteratesAreTheSameOnOneRankAndOnAllRanksAndTheViewStatesTheMemory) {
  Options o{{"-bilevel_nbo_variant", "saga"}, {"-bilevel_nbo_batch_size", "16"}};
  const Outcome world = solve(PETSC_COMM_WORLD, saga_logreg(PETSC_COMM_WORLD), 20);
  const Outcome self = solve(PETSC_COMM_SELF, saga_logreg(PETSC_COMM_SELF), 20);
  ASSERT_EQ(world.x.size(), self.x.size());
  for (std::size_t i = 0; i < self.x.size(); ++i)
    EXPECT_NEAR(world.x[i], self.x[i], 1e-10 * (1 + std::abs(self.x[i]))) << "entry " << i;
  Options t{{"-bilevel_type", "nbo"}, {"-bilevel_max_it", "1"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  seedtest::solve_from_initial_point(solver, saga_logreg(PETSC_COMM_WORLD));
  const std::string text = seedtest::solver_view_text(PETSC_COMM_WORLD, solver);
  seedtest::expect_contains(text, {"NSBO-SAGA", "SAGA memory: 15 training", "10 validation"});
}

// The default variant (auto) is the paper's pairing: NBO-CG on full batches, NSBO-SGD on minibatches (the cg
// variant on a 64-row Hessian is a Newton step to that batch's minimiser: DIVERGED_NAN on ijcnn1); an
// explicit -bilevel_nbo_variant wins.
TEST(Nbo, AutoTakesConjugateGradientsOnFullBatchesAndGradientStepsOnMinibatchesAndAnExplicitVariantWins) {
  const auto [full, mini, forced] =
      seedtest::batch_default_views(PETSC_COMM_WORLD, "nbo", "-bilevel_nbo_variant", "cg");
  seedtest::expect_contains(full, {"nbo: NBO-CG"});
  seedtest::expect_contains(mini, {"nbo: NSBO-SGD", "lower batch 64"});
  seedtest::expect_contains(forced, {"nbo: NBO-CG"});
}

}  // namespace
