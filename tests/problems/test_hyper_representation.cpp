#include <gtest/gtest.h>

#include <cmath>

#include "bilevel/core/derivative_check.hpp"
#include "paper_problems.hpp"

namespace {

using bilevel::Batch;
using bilevel::HyperRepresentationOptions;
using bilevel::HyperRepresentationProblem;

HyperRepresentationOptions small() {
  HyperRepresentationOptions o;
  o.features = 7;
  o.width = 5;  // x has 35 entries, y 5: uneven splits over 2 and 3 ranks
  o.n_train = 97;
  o.n_validation = 61;
  o.seed = 3;
  return o;
}

std::shared_ptr<HyperRepresentationProblem> make(MPI_Comm comm = PETSC_COMM_WORLD) {
  return std::make_shared<HyperRepresentationProblem>(comm, small());
}

TEST(HyperRepresentation, ClosedFormHeadZeroesTheLowerGradient) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::expect_closed_form_lower_solution(*p, x, 0.05, 1e-12);
}

TEST(HyperRepresentation, HypergradientFromTheOraclesMatchesTheClosedForm) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::expect_oracle_hypergradient_matches_closed_form(p, x, y, 1e-11);
}

TEST(HyperRepresentation, ClosedFormHypergradientIsTheDerivativeOfTheValueFunction) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::expect_closed_form_hypergradient_is_the_derivative(*p, x, 1e-5);
}

TEST(HyperRepresentation, EveryOraclePassesTheDerivativeCheck) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::fill_wave(y, 0.5);
  papertest::expect_every_oracle_passes_the_derivative_check(*p, x, y);
}

TEST(HyperRepresentation, XIsTheRowMajorRepresentationMatrix) {
  // ∇_H g = (Σ r_i a_i) wᵀ/n is rank one: entry (α, β) over entry (α, β') is w_β / w_β'
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec(), gx = p->create_upper_vec();
  p->initial_point(x, y);
  papertest::fill_wave(y, 1.0, 0.4);
  p->lower_grad_x(x, y, Batch::all(), gx);
  const auto g = papertest::gather(gx), w = papertest::gather(y);
  const PetscInt d = p->options().width;

  for (PetscInt a = 0; a < p->options().features; ++a)
    for (PetscInt b = 1; b < d; ++b)
      EXPECT_NEAR(g[a * d + b] * w[0], g[a * d] * w[b], 1e-12 * (1 + std::abs(g[a * d] * w[b])));
}

TEST(HyperRepresentation, ValuesDoNotDependOnTheRankCount) {
  auto world = make(), self = make(PETSC_COMM_SELF);
  auto xw = world->create_upper_vec(), yw = world->create_lower_vec();
  auto xs = self->create_upper_vec(), ys = self->create_lower_vec();
  world->initial_point(xw, yw);
  self->initial_point(xs, ys);
  const std::vector<PetscInt> batch{0, 13, 40, 41, 96};

  EXPECT_NEAR(
      world->lower_value(xw, yw, Batch::of(batch)), self->lower_value(xs, ys, Batch::of(batch)), 1e-13);
  EXPECT_NEAR(world->exact_upper_objective(xw), self->exact_upper_objective(xs), 1e-12);
  auto gw = world->create_upper_vec(), gs = self->create_upper_vec();
  world->exact_hypergradient(xw, gw);
  self->exact_hypergradient(xs, gs);
  const auto a = papertest::gather(gw), b = papertest::gather(gs);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12);
}

TEST(HyperRepresentation, DeterministicAndStochasticMethodsReduceTheExactHypergradient) {
  auto p = make();
  auto x0 = p->create_upper_vec(), y0 = p->create_lower_vec(), g = p->create_upper_vec();
  p->initial_point(x0, y0);
  p->exact_hypergradient(x0, g);
  const PetscReal g0 = papertest::norm(g), f0 = p->exact_upper_objective(x0);
  ASSERT_GT(f0, 20 * 0.5 * 0.1 * 0.1);

  for (const char* method : {"aidcg", "stocbio"}) {
    bilevel::petsc::VecHandle x, y;
    const bool stochastic = std::string(method) == "stocbio";
    std::vector<std::pair<std::string, std::string>> o{{"-bilevel_max_it", "150"},
                                                       {"-bilevel_upper_step", "1"}};
    if (stochastic)
      o.insert(
          o.end(),
          {{"-bilevel_batch_size", "32"},
           {"-bilevel_stocbio_neumann_steps", "50"},
           {"-bilevel_upper_decay", "0"}});  // the constant step this test sets (default on minibatches: 1/2)
    const auto r = papertest::solve(p, method, o, x, y);
    p->exact_hypergradient(x, g);
    const PetscReal f = p->exact_upper_objective(x), noise_floor = 0.5 * 0.1 * 0.1;  // σ²/2 of the targets

    EXPECT_GT(r.counts.hvp, 0) << method;
    EXPECT_LT(papertest::norm(g), 5e-2 * g0) << method << ": |grad F| " << g0 << " -> " << papertest::norm(g);
    EXPECT_LT(f, 2.5 * noise_floor) << method << ": F " << f0 << " -> " << f;
  }
}

}  // namespace
