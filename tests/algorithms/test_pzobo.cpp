// PZOBO / PZOBO-S (Sow, Ji & Liang 2022) on the closed-form quadratic (and a small logreg for the
// stochastic variant). At 2 and 3 ranks the perturbed paths run on sub-communicators by default (the
// quadratic can be rebuilt there), so the comparisons with PETSC_COMM_SELF also cover that mode.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "algorithms/seed_harness.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/problems/hyperclean.hpp"

namespace {

using seedtest::Options;

// The paths are affine in x on the quadratic, so the finite difference is exact and the estimate's error
// is the N-step Jacobian's bias (orthogonal directions with Q = dx remove the sampling noise). It decays
// with N at the heavy-ball rate (measured 0.10, 3.3e-4, 5e-9 for N = 10, 40, 160 at κ = 100).
TEST(Pzobo, HypergradientEstimateApproachesTheClosedFormAsTheInnerStepsGrow) {
  std::vector<PetscReal> last;
  for (const char* n : {"10", "40", "160"}) {
    Options o{{"-bilevel_pzobo_direction_type", "orthogonal"},
              {"-bilevel_pzobo_directions", "7"},
              {"-bilevel_pzobo_inner_steps", n}};
    const std::vector<PetscReal> e = seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 3);
    ASSERT_EQ(e.size(), 3u);
    last.push_back(e.back());
  }
  EXPECT_LT(last[1], 1e-2 * last[0]);
  EXPECT_LT(last[2], 1e-3 * last[1]);
  EXPECT_LT(last[2], 1e-7);
}

// Limit stated: on the quadratic the smoothing μ has no effect (the paths are affine in x), so "smaller
// smoothing" cannot improve the estimate there; the estimates agree to rounding.
TEST(Pzobo, SmoothingDoesNotChangeTheEstimateOnTheQuadratic) {
  std::vector<std::vector<PetscReal>> runs;
  for (const char* mu : {"1", "1e-4"}) {
    Options o{{"-bilevel_pzobo_direction_type", "orthogonal"},
              {"-bilevel_pzobo_directions", "7"},
              {"-bilevel_pzobo_inner_steps", "40"},
              {"-bilevel_pzobo_smoothing", mu}};
    runs.push_back(seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 3));
  }
  for (std::size_t k = 0; k < 3; ++k) EXPECT_NEAR(runs[0][k], runs[1][k], 1e-8 * runs[1][k]);
}

// With i.i.d. Gaussian directions (the paper) the estimate is unbiased up to the N-step bias and its
// sampling error falls like 1/√Q (measured RMS over 40 iterations: 2.3, 1.2, 0.58 for Q = 1, 4, 16).
TEST(Pzobo, GaussianEstimateErrorFallsWithTheNumberOfDirections) {
  std::vector<PetscReal> rms;
  for (const char* q : {"1", "16"}) {
    Options o{{"-bilevel_pzobo_directions", q}};
    const std::vector<PetscReal> e = seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 24);
    PetscReal s = 0;
    for (PetscReal v : e) s += v * v;
    rms.push_back(std::sqrt(s / static_cast<PetscReal>(e.size())));
  }
  EXPECT_LT(rms[1], 0.5 * rms[0]);
}

// Default settings (Gaussian directions, Q = 10, heavy ball with N = ⌈2√κ⌉ = 20 at κ = 100) reach the
// relative gap of the acceptance check (≤ 1e-3; the check itself runs κ = 1e3 with N = 64 through
// bilevel-solve). Limit stated: with constant outer steps the sampling noise of the Gaussian estimate sets a
// floor (measured relative gap 2e-4..5e-4, true hypergradient norm 0.06..0.09 from 1.14 after 100-300 iterations, and 0.04..0.07
// from 0.87 at κ = 1e3), so three orders of magnitude are out of reach with the paper's directions.
// Orthogonal directions with Q = dx remove the noise, and with N large enough for the bias (N = 40 at
// κ = 100) they reach them.
TEST(Pzobo, DrivesTheTrueHypergradientDownAndReachesTheOptimumOnQuadratic) {
  const auto q = seedtest::quad(100);
  const seedtest::Run r0 = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 0);
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 100);
  ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
  EXPECT_LE(seedtest::relative_gap(r.report), 1e-3);
  EXPECT_GT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);  // the noise floor
  EXPECT_EQ(r.report.counts.grad_g, 20 * 11 * 100);  // N (Q + 1) per iteration, sub-communicators included
  EXPECT_EQ(r.report.counts.hvp + r.report.counts.jvp, 0);

  Options o{{"-bilevel_pzobo_direction_type", "orthogonal"},
            {"-bilevel_pzobo_directions", "7"},
            {"-bilevel_pzobo_inner_steps", "40"}};
  const seedtest::Run exact = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 100);
  EXPECT_LT(*exact.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);
  EXPECT_LE(seedtest::relative_gap(exact.report), 1e-6);
}

TEST(Pzobo, IteratesAreTheSameOnOneRankAndOnAllRanksWithAndWithoutSubCommunicators) {
  const auto q = seedtest::quad(1000);
  const seedtest::Run self = seedtest::run_quadratic(PETSC_COMM_SELF, q, "pzobo", 10);
  const seedtest::Run grouped = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 10);
  EXPECT_LT(seedtest::max_relative_difference(grouped.x, self.x), 1e-9);
  Options o{{"-bilevel_pzobo_path_groups", "1"}};
  const seedtest::Run sequential = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 10);
  EXPECT_LT(seedtest::max_relative_difference(sequential.x, self.x), 1e-9);
  EXPECT_EQ(sequential.report.counts.grad_g, grouped.report.counts.grad_g);
}

// Preconditioned paths (our addition): with M = A⁻¹ exactly (quadratic, preconditioner error 0) one step of
// size 1 lands on y*(x) from anywhere, so the one-step path map is x ↦ y*(x) and its Jacobian is the true
// response Jacobian: orthogonal directions with Q = dx give the closed-form hypergradient to rounding
// (the paths are affine in x). Plain one-step paths are far from it (their Jacobian is −a ∂_x∇_y g).
TEST(Pzobo, PreconditionedPathsWithTheExactInverseGiveTheExactHypergradientInOneStep) {
  auto q = seedtest::quad(100);
  q.preconditioner_error = 0;
  Options o{{"-bilevel_pzobo_direction_type", "orthogonal"},
            {"-bilevel_pzobo_directions", "7"},
            {"-bilevel_pzobo_inner_steps", "1"},
            {"-bilevel_pzobo_inner_momentum", "0"}};
  std::vector<PetscReal> plain, preconditioned;
  {
    Options step{{"-bilevel_pzobo_inner_step", "0.01"}};
    plain = seedtest::estimate_errors(PETSC_COMM_WORLD, q, "pzobo", 2);
  }
  {
    Options pc{{"-bilevel_pzobo_precondition", "1"}, {"-bilevel_pzobo_inner_step", "1"}};
    preconditioned = seedtest::estimate_errors(PETSC_COMM_WORLD, q, "pzobo", 2);
  }
  ASSERT_EQ(plain.size(), 2u);
  ASSERT_EQ(preconditioned.size(), 2u);
  for (PetscReal e : preconditioned) EXPECT_LT(e, 1e-8);
  for (PetscReal e : plain) EXPECT_GT(e, 0.5);
}

// One-step paths: the Q differences formed from gradient projections on z = M ∇_y f (the default,
// -bilevel_pzobo_one_step_projection) are an exact rewrite of the perturbed paths' differences when M is
// symmetric, so the estimates agree to rounding (here through BilevelProblem's default projection oracles,
// with the quadratic's inexact symmetric M). Coordinate directions with Q = dx (also asked for as
// -bilevel_pzobo_directions 0, one per coordinate) are exact like orthogonal ones.
TEST(Pzobo, OneStepProjectionsGiveThePathsEstimateWithEveryDirectionType) {
  auto q = seedtest::quad(100);
  q.preconditioner_error = 0.3;
  auto errors = [&](const char* type, const char* projection, const char* directions = "7") {
    Options o{{"-bilevel_pzobo_direction_type", type},
              {"-bilevel_pzobo_one_step_projection", projection},
              {"-bilevel_pzobo_directions", directions},
              {"-bilevel_pzobo_inner_steps", "1"},
              {"-bilevel_pzobo_inner_momentum", "0"},
              {"-bilevel_pzobo_precondition", "1"},
              {"-bilevel_pzobo_inner_step", "0.7"}};
    return seedtest::estimate_errors(PETSC_COMM_WORLD, q, "pzobo", 3);
  };
  for (const char* type : {"gaussian", "orthogonal", "coordinate"}) {
    const std::vector<PetscReal> projected = errors(type, "1"), paths = errors(type, "0");
    ASSERT_EQ(projected.size(), 3u) << type;
    ASSERT_EQ(paths.size(), 3u) << type;
    for (std::size_t k = 0; k < 3; ++k) {
      EXPECT_GT(paths[k], 1e-3) << type;  // M is inexact: the one-step estimate has a bias to reproduce
      EXPECT_NEAR(projected[k], paths[k], 1e-8 * paths[k]) << type;
    }
  }
  const std::vector<PetscReal> orthogonal = errors("orthogonal", "1"), coordinate = errors("coordinate", "1", "0");
  for (std::size_t k = 0; k < 3; ++k) EXPECT_NEAR(coordinate[k], orthogonal[k], 1e-8 * orthogonal[k]);
}

// -bilevel_pzobo_directions 0 means one direction per coordinate, which only coordinate directions offer.
TEST(Pzobo, OneDirectionPerCoordinateNeedsCoordinateDirections) {
  Options o{{"-bilevel_pzobo_directions", "0"}, {"-bilevel_pzobo_direction_type", "orthogonal"}};
  try {
    seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 1);
    ADD_FAILURE() << "no error";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("-bilevel_pzobo_direction_type coordinate"), std::string::npos) << e.what();
  }
}

// A method that is not offered a preconditioner says so instead of running unpreconditioned.
TEST(Pzobo, PreconditionedPathsNeedAProblemWithAPreconditioner) {
  Options o{{"-bilevel_pzobo_precondition", "1"}};
  EXPECT_THROW(seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 1), bilevel::InputError);
}

TEST(Pzobo, ViewStatesTheMethodTheReferenceAndTheSettings) {
  Options o{{"-bilevel_pzobo_directions", "3"}};
  const std::string text = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo");
  EXPECT_NE(text.find("pzobo"), std::string::npos) << text;
  EXPECT_NE(text.find("arXiv 2110.07004"), std::string::npos) << text;
  EXPECT_NE(text.find("directions 3 gaussian"), std::string::npos) << text;
  EXPECT_NE(text.find("inner_steps 20"), std::string::npos) << text;  // ⌈2√κ⌉ with κ = 100
  int size = 1;
  MPI_Comm_size(PETSC_COMM_WORLD, &size);
  EXPECT_NE(text.find(size > 1 ? "sub-communicators" : "side by side on the full communicator"), std::string::npos) << text;
}

#ifdef SEEDTEST_HAVE_LOGREG
/// Delegates every oracle to another problem and records, for each ∇_y g call, the batch it saw.
class RecordingProblem : public bilevel::BilevelProblem {
 public:
  explicit RecordingProblem(std::shared_ptr<bilevel::BilevelProblem> inner) : inner_(std::move(inner)) {}
  MPI_Comm comm() const override { return inner_->comm(); }
  std::string name() const override { return "recording"; }
  bilevel::petsc::VecHandle create_upper_vec() const override { return inner_->create_upper_vec(); }
  bilevel::petsc::VecHandle create_lower_vec() const override { return inner_->create_lower_vec(); }
  bilevel::Capability capabilities() const override { return inner_->capabilities(); }
  bilevel::DatasetSizes dataset_sizes() const override { return inner_->dataset_sizes(); }
  bilevel::ProblemHints hints() const override { return inner_->hints(); }
  void initial_point(Vec x, Vec y) override { inner_->initial_point(x, y); }
  std::vector<std::vector<PetscInt>> lower_batches;

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const bilevel::Batch& b) override { return inner_->upper_value(x, y, b); }
  void upper_grad_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gx, Vec gy) override {
    inner_->upper_grad(x, y, b, gx, gy);
  }
  PetscReal lower_value_impl(Vec x, Vec y, const bilevel::Batch& b) override { return inner_->lower_value(x, y, b); }
  void lower_grad_y_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gy) override {
    lower_batches.emplace_back(b.full ? std::vector<PetscInt>{-1} : std::vector<PetscInt>(b.indices.begin(), b.indices.end()));
    inner_->lower_grad_y(x, y, b, gy);
  }
  void lower_grad_x_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gx) override { inner_->lower_grad_x(x, y, b, gx); }
  void lower_hvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    inner_->lower_hvp(x, y, b, w, out);
  }
  void lower_jvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    inner_->lower_jvp(x, y, b, w, out);
  }

 private:
  std::shared_ptr<bilevel::BilevelProblem> inner_;
};

// PZOBO-S: the main path and the Q perturbed paths of one iteration replay the same minibatch sequence,
// and the next iteration draws a new one. (logreg has no μ_g hint: gradient descent with N = 10.)
TEST(Pzobo, StochasticPathsShareOneMinibatchSequencePerIteration) {
  const auto tr = testdata::make_global(240, 12, 2, 11), va = testdata::make_global(120, 12, 2, 12);
  auto inner = std::make_shared<bilevel::LogregProblem>(
      testdata::to_dataset(PETSC_COMM_WORLD, tr, bilevel::DataFormat::Sparse),
      testdata::to_dataset(PETSC_COMM_WORLD, va, bilevel::DataFormat::Sparse), std::nullopt, bilevel::LogregOptions{});
  auto p = std::make_shared<RecordingProblem>(inner);
  Options o{{"-bilevel_type", "pzobo"},
            {"-bilevel_max_it", "2"},
            {"-bilevel_pzobo_directions", "3"},
            {"-bilevel_pzobo_batch_size", "16"},
            {"-bilevel_final_lower_solve", "0"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  p->lower_batches.clear();
  solver.solve(x, y);
  const auto& b = p->lower_batches;
  const std::size_t n = 10, paths = 4;
  ASSERT_EQ(b.size(), 2 * paths * n);
  // The paths advance side by side: call (k, t, j) is number k·paths·n + t·paths + j.
  for (std::size_t k = 0; k < 2; ++k)
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t j = 1; j < paths; ++j) EXPECT_EQ(b[(k * n + t) * paths + j], b[(k * n + t) * paths]);
  EXPECT_EQ(b[0].size(), 16u);
  EXPECT_NE(b[0], b[paths]);          // B_2 differs from B_1
  EXPECT_NE(b[0], b[paths * n]);      // the next iteration draws a new sequence
}

// Directions restricted to the minibatch's sample weights (Capability::PerSampleUpper, hyperclean): with one
// plain step (M = I) the path map is y₁(x) = y₀ − a ∇_y g(x, y₀; B), so the estimate's expectation is
// −a ∇²_xy g(x, y₀; B) ∇_y f(y₁), nonzero only on B. Orthogonal or coordinate directions with Q = |B| on B
// recover it to O(μ) (the weights σ(x) are not affine), the same at every rank count, whether the Q
// differences come from the perturbed paths or from the one-step projections (hyperclean's
// lower_grad_y_dot_multi and lower_grad_y_dot_coordinates); the same Q directions on all 47 weights (the
// paper's support) are far from it.
TEST(Pzobo, DirectionsOnTheMinibatchsWeightsRecoverTheBatchJacobianProductOnHyperclean) {
  const auto tr = testdata::make_global(47, 6, 4, 11), va = testdata::make_global(23, 6, 4, 12);
  const PetscInt b = 8;
  const PetscReal a = 0.5, s = std::ldexp(1.0, -20);
  auto run = [&](MPI_Comm comm, const char* support, std::vector<PetscReal>* expected,
                 const char* type = "orthogonal", const char* projection = "1") {
    bilevel::HypercleanOptions ho;
    ho.mu = 0.03;
    ho.corruption = 0.4;
    ho.seed = 7;
    auto p = std::make_shared<bilevel::HypercleanProblem>(testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
                                                          testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
                                                          std::nullopt, ho);
    Options o{{"-bilevel_type", "pzobo"},
              {"-bilevel_max_it", "1"},
              {"-bilevel_upper_type", "sgd"},
              {"-bilevel_upper_step", "9.5367431640625e-07"},  // 2^-20
              {"-bilevel_upper_batch_size", "1000"},           // the whole validation set
              {"-bilevel_final_lower_solve", "0"},
              {"-bilevel_pzobo_support", support},
              {"-bilevel_pzobo_direction_type", type},
              {"-bilevel_pzobo_one_step_projection", projection},
              {"-bilevel_pzobo_directions", std::to_string(b)},
              {"-bilevel_pzobo_batch_size", std::to_string(b)},
              {"-bilevel_pzobo_inner_steps", "1"},
              {"-bilevel_pzobo_inner_momentum", "0"},
              {"-bilevel_pzobo_inner_step", "0.5"},
              {"-bilevel_pzobo_precondition", "0"},  // hyperclean's tuned default is on
              {"-bilevel_pzobo_smoothing", "1e-6"}};
    bilevel::BilevelSolver solver(comm);
    solver.set_problem(p);
    solver.set_from_options();
    auto x = p->create_upper_vec(), y = p->create_lower_vec(), x0 = p->create_upper_vec(), y0 = p->create_lower_vec();
    testdata::fill(x, [](PetscInt i) { return 0.8 * std::sin(0.9 * i + 0.2); });
    testdata::fill(y, [](PetscInt j) { return 0.3 * std::cos(1.3 * j + 0.4); });
    VecCopy(x, x0);
    VecCopy(y, y0);
    const bilevel::SolveReport r = solver.solve(x, y);
    EXPECT_EQ(r.outer_iterations, 1);
    // Q + 1 one-step paths; the coordinate projections also count the base projection they recompute
    const bool sparse = std::string(type) == "coordinate" && std::string(projection) == "1";
    EXPECT_EQ(r.counts.grad_g, b + (sparse ? 2 : 1));
    if (expected) {  // −a ∇²_xy g(x₀, y₀; B) ∇_y f(y₁) on the batch the method drew (stream 1 of seed 0)
      std::vector<PetscInt> rows(static_cast<std::size_t>(b));
      bilevel::BatchSampler sampler(0, 1);
      const bilevel::Batch batch = sampler.next(tr.rows, b);
      std::copy(batch.indices.begin(), batch.indices.end(), rows.begin());
      const bilevel::Batch B = bilevel::Batch::of(rows);
      auto g = p->create_lower_vec(), y1 = p->create_lower_vec(), fy = p->create_lower_vec(), jv = p->create_upper_vec();
      p->lower_grad_y(x0, y0, B, g);
      VecWAXPY(y1, -a, g, y0);
      p->upper_grad(x0, y1, bilevel::Batch::all(), nullptr, fy);
      p->lower_jvp(x0, y0, B, fy, jv);
      VecScale(jv, -a);
      *expected = testdata::gather(jv);
    }
    VecAXPY(x0, -1.0, x);  // s h = x₀ − x₁
    VecScale(x0, 1.0 / s);
    return testdata::gather(x0);
  };
  auto max_rel = [](const std::vector<PetscReal>& u, const std::vector<PetscReal>& v) {  // max|u − v| / max|v|
    PetscReal d = 0, m = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      d = std::max(d, std::abs(u[i] - v[i]));
      m = std::max(m, std::abs(v[i]));
    }
    return u.size() == v.size() && m > 0 ? d / m : 1e300;
  };
  std::vector<PetscReal> expected;
  const std::vector<PetscReal> h = run(PETSC_COMM_WORLD, "batch", &expected);
  const std::vector<PetscReal> h_self = run(PETSC_COMM_SELF, "batch", nullptr);
  const std::vector<PetscReal> h_full = run(PETSC_COMM_WORLD, "full", nullptr);
  EXPECT_LT(max_rel(h, expected), 1e-4);
  EXPECT_LT(max_rel(h_self, h), 1e-10);
  EXPECT_GT(max_rel(h_full, expected), 0.5);
  const std::vector<PetscReal> paths = run(PETSC_COMM_WORLD, "batch", nullptr, "orthogonal", "0");
  const std::vector<PetscReal> coordinate = run(PETSC_COMM_WORLD, "batch", nullptr, "coordinate", "1");
  const std::vector<PetscReal> coordinate_paths = run(PETSC_COMM_WORLD, "batch", nullptr, "coordinate", "0");
  const std::vector<PetscReal> coordinate_self = run(PETSC_COMM_SELF, "batch", nullptr, "coordinate", "1");
  EXPECT_LT(max_rel(paths, h), 1e-6);  // the projections are an exact rewrite of the paths' differences
  EXPECT_LT(max_rel(coordinate, expected), 1e-4);
  EXPECT_LT(max_rel(coordinate_paths, coordinate), 1e-6);
  EXPECT_LT(max_rel(coordinate_self, coordinate), 1e-10);
  std::size_t nonzero = 0;
  for (PetscReal v : expected) nonzero += v != 0 ? 1 : 0;
  EXPECT_EQ(nonzero, static_cast<std::size_t>(b));
}

TEST(Pzobo, LowersTheValidationLossOnASmallLogreg) {
  const auto [before, after] = seedtest::logreg_losses(PETSC_COMM_WORLD, "pzobo", 10);
  EXPECT_LT(after, before - 1e-3);
}
#endif

}  // namespace
