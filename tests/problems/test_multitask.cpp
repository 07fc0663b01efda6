#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "bilevel/core/derivative_check.hpp"
#include "bilevel/data/idx.hpp"
#include "paper_problems.hpp"

namespace {

using bilevel::Batch;
using bilevel::MultitaskOptions;
using bilevel::MultitaskProblem;

MultitaskOptions small() {
  MultitaskOptions o;
  o.tasks = 7;  // uneven task split over 2 and 3 ranks
  o.ways = 3;
  o.shots = 2;
  o.queries = 3;
  o.features = 6;
  o.width = 4;
  o.classes = 5;
  o.seed = 9;
  return o;
}

std::shared_ptr<MultitaskProblem> make(MPI_Comm comm = PETSC_COMM_WORLD) {
  return std::make_shared<MultitaskProblem>(comm, small());
}

TEST(Multitask, TasksAreShardedWithTheirHeadsWhole) {
  auto p = make();
  auto y = p->create_lower_vec();
  PetscInt local = 0, global = 0;
  VecGetLocalSize(y, &local);
  VecGetSize(y, &global);
  const PetscInt head = 4 * 3;  // r x k

  EXPECT_EQ(global, 7 * head);
  EXPECT_EQ(local % head, 0);
  EXPECT_EQ(p->dataset_sizes().lower, 0);  // every inner problem on the lower level
  EXPECT_EQ(p->dataset_sizes().upper, 7);  // tasks are the upper level's samples
}

TEST(Multitask, ClosedFormHeadsZeroTheLowerGradient) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::expect_closed_form_lower_solution(*p, x, 0.05, 1e-13);
}

TEST(Multitask, HypergradientFromTheOraclesMatchesTheClosedForm) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::expect_oracle_hypergradient_matches_closed_form(p, x, y, 1e-12);
}

TEST(Multitask, ClosedFormHypergradientIsTheDerivativeOfTheValueFunction) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::expect_closed_form_hypergradient_is_the_derivative(*p, x, 1e-5);
}

TEST(Multitask, EveryOraclePassesTheDerivativeCheck) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::fill_wave(y, 0.5);
  papertest::expect_every_oracle_passes_the_derivative_check(*p, x, y);
}

TEST(Multitask, AMetaBatchOfTasksTouchesOnlyTheirHeads) {
  auto p = make();
  auto x = p->create_upper_vec(), y = p->create_lower_vec(), gy = p->create_lower_vec(),
       full = p->create_lower_vec();
  p->initial_point(x, y);
  papertest::fill_wave(y, 0.3);
  const std::vector<PetscInt> batch{1, 4, 6};

  p->upper_grad(x, y, Batch::of(batch), nullptr, gy);
  p->upper_grad(x, y, Batch::all(), nullptr, full);
  const auto a = papertest::gather(gy), b = papertest::gather(full);
  const PetscInt head = 12;

  for (PetscInt t = 0; t < 7; ++t) {
    const bool in = t == 1 || t == 4 || t == 6;
    for (PetscInt i = t * head; i < (t + 1) * head; ++i)  // (1/|B|) ∇f_t in the batch, 0 elsewhere
      EXPECT_NEAR(a[i], in ? b[i] * 7.0 / 3.0 : 0.0, 1e-13) << "task " << t;
  }
  EXPECT_EQ(p->counts().samples, 3 + 7);
}

TEST(Multitask, ValuesDoNotDependOnTheRankCount) {
  auto world = make(), self = make(PETSC_COMM_SELF);
  auto xw = world->create_upper_vec(), yw = world->create_lower_vec();
  auto xs = self->create_upper_vec(), ys = self->create_lower_vec();
  world->initial_point(xw, yw);
  self->initial_point(xs, ys);

  EXPECT_NEAR(world->exact_upper_objective(xw), self->exact_upper_objective(xs), 1e-13);
  auto gw = world->create_upper_vec(), gs = self->create_upper_vec();
  world->exact_hypergradient(xw, gw);
  self->exact_hypergradient(xs, gs);
  const auto a = papertest::gather(gw), b = papertest::gather(gs);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-13);
}

TEST(Multitask, DeterministicAndStochasticMethodsReduceTheExactHypergradient) {
  auto p = make();
  auto x0 = p->create_upper_vec(), y0 = p->create_lower_vec(), g = p->create_upper_vec();
  p->initial_point(x0, y0);
  p->exact_hypergradient(x0, g);
  const PetscReal g0 = papertest::norm(g), f0 = p->exact_upper_objective(x0);

  for (const char* method : {"aidcg", "stocbio"}) {
    bilevel::petsc::VecHandle x, y;
    std::vector<std::pair<std::string, std::string>> o{{"-bilevel_max_it", "200"}};
    if (std::string(method) == "stocbio")
      o.insert(o.end(),
               {{"-bilevel_upper_batch_size", "3"},
                {"-bilevel_stocbio_neumann_steps", "50"},
                {"-bilevel_upper_decay", "0.5"}});
    const auto r = papertest::solve(p, method, o, x, y);
    p->exact_hypergradient(x, g);

    EXPECT_GT(r.counts.hvp, 0) << method;
    // meta-batches of 3 of the 7 tasks leave a noise floor that decaying steps shrink slowly
    const PetscReal factor = std::string(method) == "stocbio" ? 0.1 : 1e-2;
    EXPECT_LT(papertest::norm(g), factor * g0)
        << method << ": |grad F| " << g0 << " -> " << papertest::norm(g);
    EXPECT_LT(p->exact_upper_objective(x), 0.5 * f0) << method;
  }
}

TEST(Multitask, FashionMnistEpisodesDrawImagesOfDistinctClasses) {
  if (!std::filesystem::exists(bilevel::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "no Fashion-MNIST (apt-get install dataset-fashion-mnist)";
  MultitaskOptions o;
  o.tasks = 5;
  o.pool = 1000;
  o.width = 8;
  o.source = bilevel::EpisodeSource::FashionMnist;
  auto p = std::make_shared<MultitaskProblem>(PETSC_COMM_WORLD, o);
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  p->exact_lower_solution(x, y);
  const auto acc0 = p->validation_accuracy(x, y);

  EXPECT_EQ(p->features(), 784);
  ASSERT_TRUE(acc0);
  EXPECT_GT(*acc0, 0.3);  // 5-way: chance is 0.2; the heads of a random representation already beat it
}

}  // namespace
