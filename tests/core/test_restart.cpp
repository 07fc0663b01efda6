// Checkpoint and restart through BilevelSolver (docs/operations.md): a run stopped halfway with a checkpoint
// and continued from it ends with the uninterrupted run's iterates, bit for bit, for every registered method,
// deterministic and stochastic; a stop signal on one rank stops every rank at the same iteration with
// CANCELLED_SIGNAL and a checkpoint; checkpoints of another run are refused with one line saying what
// differs.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;

using bilevel::ConvergedReason;

/// A file name every rank agrees on (rank 0's temporary folder), removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& stem) {
    char name[256] = "";
    int rank = 0;
    MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
    if (rank == 0)
      std::snprintf(
          name, sizeof name, "/tmp/bilevel_restart_%d_%s", static_cast<int>(getpid()), stem.c_str());
    MPI_Bcast(name, sizeof name, MPI_CHAR, 0, PETSC_COMM_WORLD);
    path_ = name;
  }
  ~TempFile() {
    MPI_Barrier(PETSC_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
    if (rank == 0) std::remove(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::shared_ptr<bilevel::BilevelProblem> quadratic() {
  bilevel::QuadraticOptions o;
  o.dim_lower = 37;
  o.dim_upper = 5;
  o.condition = 50;
  o.seed = 11;
  return std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, o);
}

/// A small logistic regression with samples (so minibatches are drawn), sparse rows.
std::shared_ptr<bilevel::BilevelProblem> small_logreg() {
  const auto tr = testdata::make_global(61, 6, 2, 21), va = testdata::make_global(33, 6, 2, 22);
  return std::make_shared<bilevel::LogregProblem>(
      testdata::to_dataset(PETSC_COMM_WORLD, tr, bilevel::DataFormat::Sparse),
      testdata::to_dataset(PETSC_COMM_WORLD, va, bilevel::DataFormat::Sparse),
      std::nullopt,
      bilevel::LogregOptions{});
}

struct RunResult {
  bilevel::SolveReport report;
  std::vector<double> x, y;  // gathered on every rank
};

/// One solve of `method` with the options in force, from the problem's start point.
RunResult solve(const std::shared_ptr<bilevel::BilevelProblem>& problem,
                const std::string& method,
                std::vector<std::unique_ptr<bilevel::Monitor>> monitors = {}) {
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(problem);
  solver.set_type(method);
  for (auto& m : monitors) solver.add_monitor(std::move(m));
  solver.set_from_options();
  auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
  problem->initial_point(x, y);
  RunResult r;
  r.report = solver.solve(x, y);
  r.x = testdata::gather(x);
  r.y = testdata::gather(y);
  return r;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

/// Full run of `n` iterations against n/2 with a checkpoint plus a restart to n.
void expect_restart_equals_uninterrupted(const std::shared_ptr<bilevel::BilevelProblem>& problem,
                                         const std::string& method,
                                         std::int64_t n,
                                         std::vector<std::pair<std::string, std::string>> extra = {}) {
  TempFile ckpt(method + ".ckpt");
  extra.push_back({"-bilevel_seed", "7"});
  extra.push_back({"-bilevel_final_lower_solve", "false"});
  Options common(extra);
  RunResult full, half, rest;
  {
    Options o{{"-bilevel_max_it", std::to_string(n)}};
    full = solve(problem, method);
  }
  {
    Options o{{"-bilevel_max_it", std::to_string(n / 2)}, {"-bilevel_checkpoint", ckpt.path()}};
    half = solve(problem, method);
  }
  {
    Options o{{"-bilevel_max_it", std::to_string(n)}, {"-bilevel_restart", ckpt.path()}};
    rest = solve(problem, method);
  }
  EXPECT_EQ(half.report.checkpoints_written, 1);
  ASSERT_TRUE(rest.report.restarted_from_iteration.has_value());
  EXPECT_EQ(*rest.report.restarted_from_iteration, n / 2);
  EXPECT_EQ(rest.report.outer_iterations, n);
  EXPECT_FALSE(same_bits(half.x, full.x))
      << "the halfway point must differ from the end (else the test proves nothing)";
  EXPECT_TRUE(same_bits(rest.x, full.x))
      << method << ": x after the restart differs from the uninterrupted run";
  EXPECT_TRUE(same_bits(rest.y, full.y))
      << method << ": y after the restart differs from the uninterrupted run";
  EXPECT_EQ(rest.report.hypergradient_norm, full.report.hypergradient_norm);
  EXPECT_EQ(rest.report.counts.grad_g, full.report.counts.grad_g);
  EXPECT_EQ(rest.report.counts.hvp, full.report.counts.hvp);
}

class RestartEveryMethod : public ::testing::TestWithParam<std::string> {};

TEST_P(RestartEveryMethod, OnTheQuadraticContinuesBitForBit) {
  expect_restart_equals_uninterrupted(quadratic(), GetParam(), 12);
}

TEST_P(RestartEveryMethod, OnAStochasticLogregContinuesBitForBit) {
  // minibatches of 16 of the 61 training samples: the samplers' counters are part of the state
  expect_restart_equals_uninterrupted(
      small_logreg(), GetParam(), 10, {{"-bilevel_batch_size", "16"}, {"-bilevel_upper_batch_size", "8"}});
}

INSTANTIATE_TEST_SUITE_P(Registered,
                         RestartEveryMethod,
                         ::testing::ValuesIn(bilevel::algorithm_registry().names()));

TEST(RestartVariants, OfTheSagaAndMovingAverageMethodsContinueBitForBit) {
  // the SAGA tables and the moving averages are state too (the registered defaults
  // cover soba, saba, ttsa)
  const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> cases{
      {"nbo", {"-bilevel_nbo_variant", "saga"}},
      {"saba", {"-bilevel_saba_variant", "ma"}},
      {"soba", {"-bilevel_soba_variant", "ma"}},
      {"ttsa", {"-bilevel_ttsa_variant", "bsa"}}};
  for (const auto& [method, option] : cases)
    expect_restart_equals_uninterrupted(
        small_logreg(),
        method,
        10,
        {{"-bilevel_batch_size", "16"}, {"-bilevel_upper_batch_size", "8"}, option});
  // lancbio's cycles of 4 Lanczos steps, the halfway point (5) inside one: the cycle's Hessian batch is
  // state (unpreconditioned: a restart of a preconditioned run opens a new cycle, M is not checkpointed)
  expect_restart_equals_uninterrupted(small_logreg(),
                                      "lancbio",
                                      10,
                                      {{"-bilevel_batch_size", "16"},
                                       {"-bilevel_upper_batch_size", "8"},
                                       {"-bilevel_lancbio_initial_dim", "4"},
                                       {"-bilevel_lancbio_precondition", "false"}});
}

/// Raises SIGTERM in the last rank only, after iteration `at`.
class SignalAt : public bilevel::Monitor {
 public:
  explicit SignalAt(std::int64_t at) : at_(at) {}
  void on_iteration(const bilevel::IterationRecord& r) override {
    int rank = 0, size = 1;
    MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
    MPI_Comm_size(PETSC_COMM_WORLD, &size);
    if (r.iteration == at_ && rank == size - 1) std::raise(SIGTERM);
  }

 private:
  std::int64_t at_;
};

TEST(StopSignal, OnOneRankStopsEveryRankAfterTheNextIterationWithACheckpointToContinueFrom) {
  bilevel::install_stop_signal_handlers();
  TempFile ckpt("signal.ckpt");
  Options common{{"-bilevel_final_lower_solve", "false"}};
  RunResult full, stopped, rest;
  {
    Options o{{"-bilevel_max_it", "10"}};
    full = solve(quadratic(), "aidcg");
  }
  {
    Options o{{"-bilevel_max_it", "10"}, {"-bilevel_checkpoint", ckpt.path()}};
    std::vector<std::unique_ptr<bilevel::Monitor>> m;
    m.push_back(std::make_unique<SignalAt>(3));
    stopped = solve(quadratic(), "aidcg", std::move(m));
  }
  bilevel::clear_stop_signal();
  EXPECT_EQ(stopped.report.reason, ConvergedReason::CancelledSignal);
  EXPECT_EQ(stopped.report.stop_signal, SIGTERM);
  EXPECT_EQ(stopped.report.outer_iterations, 4);  // the signal came during iteration 4's monitoring
  EXPECT_EQ(stopped.report.checkpoints_written, 1);
  EXPECT_GT(stopped.report.checkpoint_bytes, 0);
  {
    Options o{{"-bilevel_max_it", "10"}, {"-bilevel_restart", ckpt.path()}};
    rest = solve(quadratic(), "aidcg");
  }
  EXPECT_EQ(rest.report.reason, ConvergedReason::ConvergedMaxIterations);
  EXPECT_TRUE(same_bits(rest.x, full.x));
}

/// The InputError message of a restart from `ckpt` with the options in force.
std::string restart_error(const std::string& method,
                          const std::string& ckpt,
                          std::shared_ptr<bilevel::BilevelProblem> problem = quadratic()) {
  Options o{{"-bilevel_max_it", "4"}, {"-bilevel_restart", ckpt}};
  try {
    solve(problem, method);
  } catch (const bilevel::InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RestartRefuses, ACheckpointOfAnotherMethodSeedOrProblemSayingWhatDiffers) {
  TempFile ckpt("mismatch.ckpt");
  {
    Options o{{"-bilevel_max_it", "2"}, {"-bilevel_checkpoint", ckpt.path()}, {"-bilevel_seed", "3"}};
    solve(quadratic(), "stocbio");
  }
  {
    Options o{{"-bilevel_seed", "3"}};
    EXPECT_NE(restart_error("aidcg", ckpt.path()).find("method is 'stocbio' there and 'aidcg' here"),
              std::string::npos);
  }
  {
    Options o{{"-bilevel_seed", "4"}};
    EXPECT_NE(restart_error("stocbio", ckpt.path()).find("-bilevel_seed is '3' there and '4' here"),
              std::string::npos);
  }
  {
    Options o{{"-bilevel_seed", "3"}};
    EXPECT_NE(restart_error("stocbio", ckpt.path(), small_logreg())
                  .find("problem is 'quadratic' there and 'logreg' here"),
              std::string::npos);
  }
  {
    // the options that may change between a run and its restart, such as the budget, are not compared
    Options o{{"-bilevel_seed", "3"}, {"-bilevel_max_time", "1000"}};
    EXPECT_EQ(restart_error("stocbio", ckpt.path()), "(no error)");
  }
}

TEST(RestartRefuses, ATruncatedOrCorruptedCheckpointWithOneLine) {
  TempFile ckpt("good.ckpt"), cut("cut.ckpt"), flipped("flipped.ckpt");
  {
    Options o{{"-bilevel_max_it", "2"}, {"-bilevel_checkpoint", ckpt.path()}};
    solve(quadratic(), "aidcg");
  }
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  if (rank == 0) {
    std::ifstream in(ckpt.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut.path(), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    bytes[bytes.size() / 4] ^= 0x5a;  // inside the first vector's values
    std::ofstream(flipped.path(), std::ios::binary) << bytes;
  }
  MPI_Barrier(PETSC_COMM_WORLD);
  const std::string a = restart_error("aidcg", cut.path()), b = restart_error("aidcg", flipped.path());
  EXPECT_NE(a.find("truncated"), std::string::npos) << a;
  EXPECT_NE(b.find("corrupted"), std::string::npos) << b;
  EXPECT_EQ(a.find('\n'), std::string::npos);
  EXPECT_EQ(b.find('\n'), std::string::npos);
}

}  // namespace
