#include <gtest/gtest.h>

#include <cmath>

#include "bilevel/core/derivative_check.hpp"
#include "paper_problems.hpp"

namespace {

using bilevel::Batch;
using bilevel::FiniteSumQuadraticOptions;
using bilevel::FiniteSumQuadraticProblem;

FiniteSumQuadraticOptions small() {
  FiniteSumQuadraticOptions o;
  o.dim_lower = 23;  // uneven splits over 2 and 3 ranks
  o.dim_upper = 5;
  o.n_lower = 401;
  o.n_upper = 157;
  o.seed = 7;
  return o;
}

std::shared_ptr<FiniteSumQuadraticProblem> make(MPI_Comm comm = PETSC_COMM_WORLD) {
  return std::make_shared<FiniteSumQuadraticProblem>(comm, small());
}

TEST(FiniteSumQuadratic, ClosedFormLowerSolutionZeroesTheFullBatchLowerGradient) {
  auto p = make();
  auto x = p->create_upper_vec();
  papertest::fill_wave(x, 0.8);
  papertest::expect_closed_form_lower_solution(*p, x, 0.1, 1e-11);
}

TEST(FiniteSumQuadratic, HypergradientFromTheOraclesMatchesTheClosedForm) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  papertest::fill_wave(x, 0.5);
  papertest::expect_oracle_hypergradient_matches_closed_form(p, x, y, 1e-11);
}

TEST(FiniteSumQuadratic, ClosedFormHypergradientIsTheDerivativeOfTheValueFunction) {
  auto p = make();
  auto x = p->create_upper_vec();
  papertest::fill_wave(x, 0.3);
  papertest::expect_closed_form_hypergradient_is_the_derivative(*p, x, 1e-4);
}

TEST(FiniteSumQuadratic, OptimalPointHasZeroHypergradientAndTheLowestValue) {
  auto p = make();
  auto xs = p->create_upper_vec(), g = p->create_upper_vec();
  p->optimal_upper_point(xs);
  p->exact_hypergradient(xs, g);
  const PetscReal fstar = p->optimal_upper_objective();
  VecShift(xs, 0.01);

  EXPECT_LT(papertest::norm(g), 1e-10);
  EXPECT_LT(fstar, p->exact_upper_objective(xs));
}

TEST(FiniteSumQuadratic, EveryOraclePassesTheDerivativeCheck) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  papertest::fill_wave(x, 0.4);
  papertest::fill_wave(y, 0.2);
  papertest::expect_every_oracle_passes_the_derivative_check(*p, x, y);
}

TEST(FiniteSumQuadratic, MinibatchMeansOverAPartitionAverageToTheFullBatch) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec(), w = p->create_lower_vec();
  papertest::fill_wave(x, 0.4);
  papertest::fill_wave(y, 0.2);
  papertest::fill_wave(w, 1.0, 3.0);
  const PetscInt n = p->dataset_sizes().lower;
  std::vector<PetscInt> first, second;
  for (PetscInt i = 0; i < n; ++i) (i % 3 == 0 ? first : second).push_back(i);
  const PetscReal a = static_cast<PetscReal>(first.size()) / n, b = static_cast<PetscReal>(second.size()) / n;

  for (int oracle = 0; oracle < 2; ++oracle) {
    auto full = p->create_lower_vec(), g1 = p->create_lower_vec(), g2 = p->create_lower_vec();
    auto run = [&](const Batch& batch, Vec out) {
      if (oracle == 0) p->lower_grad_y(x, y, batch, out);
      if (oracle == 1) p->lower_hvp(x, y, batch, w, out);
    };
    run(Batch::all(), full);
    run(Batch::of(first), g1);
    run(Batch::of(second), g2);
    VecAXPBY(g1, b, a, g2);  // a g1 + b g2 = the full mean

    EXPECT_LT(papertest::relative_error(g1, full), 1e-12) << "oracle " << oracle;
    EXPECT_GT(papertest::relative_error(g2, full), 1e-3);  // a minibatch differs from the full batch
  }
  EXPECT_EQ(p->counts().samples, 2 * (n + n));
}

TEST(FiniteSumQuadratic, ValuesDoNotDependOnTheRankCount) {
  auto world = make(), self = make(PETSC_COMM_SELF);
  auto xw = world->create_upper_vec(), yw = world->create_lower_vec();
  auto xs = self->create_upper_vec(), ys = self->create_lower_vec();
  for (Vec v : {xw.get(), xs.get()}) papertest::fill_wave(v, 0.6);
  for (Vec v : {yw.get(), ys.get()}) papertest::fill_wave(v, -0.3);
  const std::vector<PetscInt> batch{3, 50, 51, 200, 399};

  EXPECT_NEAR(
      world->lower_value(xw, yw, Batch::of(batch)), self->lower_value(xs, ys, Batch::of(batch)), 1e-13);
  EXPECT_NEAR(world->upper_value(xw, yw, Batch::all()), self->upper_value(xs, ys, Batch::all()), 1e-12);
  EXPECT_NEAR(world->exact_upper_objective(xw), self->exact_upper_objective(xs), 1e-12);
  EXPECT_NEAR(world->optimal_upper_objective(), self->optimal_upper_objective(), 1e-12);
  auto gw = world->create_upper_vec(), gs = self->create_upper_vec();
  world->exact_hypergradient(xw, gw);
  self->exact_hypergradient(xs, gs);
  const auto a = papertest::gather(gw), b = papertest::gather(gs);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12);
}

TEST(FiniteSumQuadratic, ASingularLowerLevelIsAnInputErrorNamingTheOption) {
  FiniteSumQuadraticOptions o = small();
  o.n_lower = 10;  // 10 samples of a 23-dimensional y: rank-deficient mean Hessian
  try {
    FiniteSumQuadraticProblem p(PETSC_COMM_WORLD, o);
    FAIL() << "no error";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("-bilevel_finite_sum_quadratic_lower_reg"), std::string::npos);
  }
}

TEST(FiniteSumQuadratic, DeterministicMethodReachesTheClosedFormOptimum) {
  auto p = make();
  bilevel::petsc::VecHandle x, y;
  const auto r = papertest::solve(p, "aidcg", {{"-bilevel_max_it", "60"}}, x, y);
  auto xs = p->create_upper_vec();
  p->optimal_upper_point(xs);

  ASSERT_TRUE(r.optimal_upper_objective);
  EXPECT_GT(r.counts.hvp, 0);
  EXPECT_LT(papertest::relative_error(x, xs), 1e-5);
  EXPECT_LT(p->exact_upper_objective(x) - *r.optimal_upper_objective, 1e-9);
}

TEST(FiniteSumQuadratic, StochasticMethodOnMinibatchesApproachesTheClosedFormOptimum) {
  auto p = make();
  auto x0 = p->create_upper_vec(), y0 = p->create_lower_vec(), g = p->create_upper_vec();
  p->initial_point(x0, y0);
  p->exact_hypergradient(x0, g);
  const PetscReal g0 = papertest::norm(g), gap0 = p->exact_upper_objective(x0) - p->optimal_upper_objective();
  bilevel::petsc::VecHandle x, y;
  // batches of 200 of the 401 samples, decaying upper steps 1/sqrt(k+1): the noise floor is what remains
  const auto r = papertest::solve(p,
                                  "stocbio",
                                  {{"-bilevel_max_it", "150"},
                                   {"-bilevel_batch_size", "200"},
                                   {"-bilevel_stocbio_neumann_steps", "20"},
                                   {"-bilevel_upper_step", "1"},
                                   {"-bilevel_upper_decay", "0.5"}},
                                  x,
                                  y);
  p->exact_hypergradient(x, g);

  // every lower oracle ran on 200 samples, every upper one on the 157 of the full set
  EXPECT_EQ(r.counts.samples, (r.counts.grad_g + r.counts.hvp + r.counts.jvp) * 200 + r.counts.grad_f * 157);
  EXPECT_LT(papertest::norm(g), 0.15 * g0) << "|grad F| " << g0 << " -> " << papertest::norm(g);
  EXPECT_LT(p->exact_upper_objective(x) - p->optimal_upper_objective(), 0.05 * gap0);
}

}  // namespace
