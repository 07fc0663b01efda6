// PZOBO / PZOBO-S (Sow, Ji & Liang 2022) on the closed-form quadratic (and a small logreg for the
// stochastic variant). At 2 and 3 ranks the perturbed paths run on sub-communicators by default (the
// quadratic can be rebuilt there), so the comparisons with PETSC_COMM_SELF also cover that mode.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "support/seed_harness.hpp"

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
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 3);
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
    Options o{{"-bilevel_pzobo_directions", q}, {"-bilevel_pzobo_direction_type", "gaussian"}};
    const std::vector<PetscReal> e =
        seedtest::estimate_errors(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 24);
    PetscReal s = 0;
    for (PetscReal v : e) s += v * v;
    rms.push_back(std::sqrt(s / static_cast<PetscReal>(e.size())));
  }
  EXPECT_LT(rms[1], 0.5 * rms[0]);
}

// Default settings (x has dx = 7 <= 32 entries: a full orthogonal frame, Q = dx = 7; heavy ball with
// N = ⌈2√κ⌉ = 20 at κ = 100) reach the relative gap of the acceptance check (≤ 1e-3; the check itself runs
// κ = 1e3 with N = 64 through bilevel-solve). Limit stated: the frame has no sampling error, but N = 2√κ
// leaves the bias of the N-step Jacobian, a floor above three orders of magnitude. With the paper's Gaussian
// directions (Q = 10) the sampling noise sets a floor as well (measured relative gap 2e-4..5e-4, true
// hypergradient norm 0.06..0.09 from 1.14 after 100-300 iterations). With N large enough for the bias
// (N = 40 at κ = 100) the frame reaches three orders.
TEST(Pzobo, DrivesTheTrueHypergradientDownAndReachesTheOptimumOnQuadratic) {
  const auto q = seedtest::quad(100);
  const seedtest::Run r0 = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 0);
  const seedtest::Run r = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 100);
  ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
  EXPECT_LE(seedtest::relative_gap(r.report), 1e-3);
  EXPECT_GT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);  // the bias floor
  EXPECT_EQ(r.report.counts.grad_g, 20 * 8 * 100);  // N (Q + 1) per iteration, sub-communicators included
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
  // The one-step JVP mode, with orthogonal directions (Gram-Schmidt on the distributed vectors) and
  // coordinates.
  for (const char* type : {"orthogonal", "coordinate"}) {
    Options jvp{{"-bilevel_pzobo_inner_steps", "1"}, {"-bilevel_pzobo_direction_type", type}};
    const seedtest::Run one = seedtest::run_quadratic(PETSC_COMM_SELF, q, "pzobo", 10);
    const seedtest::Run all = seedtest::run_quadratic(PETSC_COMM_WORLD, q, "pzobo", 10);
    EXPECT_LT(seedtest::max_relative_difference(all.x, one.x), 1e-9) << type;
    EXPECT_EQ(all.report.counts.jvp, 10) << type;
  }
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

/// Records, after every iteration of a run at an (almost) fixed x (SGD with step 2^-26 as in
/// seedtest::estimate_errors), the estimate h_k = (x_{k−1} − x_k)/s, gathered, and its relative error
/// against the closed-form ∇F(x_{k−1}). Collective.
class EstimateRecorder : public bilevel::Monitor {
 public:
  EstimateRecorder(bilevel::QuadraticProblem& p, Vec x, PetscReal step)
      : p_(p),
        x_(x),
        step_(step),
        prev_(bilevel::petsc::duplicate(x)),
        exact_(bilevel::petsc::duplicate(x)),
        h_(bilevel::petsc::duplicate(x)) {
    VecCopy(x, prev_);
  }
  void on_iteration(const bilevel::IterationRecord& r) override {
    if (r.iteration == 0) return;   // the start point's row: no step yet
    VecWAXPY(h_, -1.0, x_, prev_);  // s h_k = x_{k-1} − x_k
    VecScale(h_, 1.0 / step_);
    estimates.push_back(seedtest::gather(h_));
    p_.exact_hypergradient(prev_, exact_);
    PetscReal err = 0, ref = 0;
    VecNorm(exact_, NORM_2, &ref);
    VecAXPY(h_, -1.0, exact_);
    VecNorm(h_, NORM_2, &err);
    errors.push_back(err / ref);
    VecCopy(x_, prev_);
  }
  std::vector<std::vector<PetscReal>> estimates;
  std::vector<PetscReal> errors;

 private:
  bilevel::QuadraticProblem& p_;
  Vec x_;
  PetscReal step_;
  bilevel::petsc::VecHandle prev_, exact_, h_;
};

struct Estimates {
  std::vector<std::vector<PetscReal>> h;  // h_1..h_K, gathered
  std::vector<PetscReal> errors;          // ||h_k − ∇F|| / ||∇F||
  bilevel::OracleCounts counts;
};

/// `iterations` of pzobo with the options currently set, from y*(x_0), recording every estimate. Collective.
Estimates record_estimates(MPI_Comm comm, const bilevel::QuadraticOptions& q, PetscInt iterations) {
  const PetscReal step = std::ldexp(1.0, -26);
  Options o{{"-bilevel_type", "pzobo"},
            {"-bilevel_max_it", std::to_string(iterations)},
            {"-bilevel_upper_type", "sgd"},
            {"-bilevel_upper_step", "1.4901161193847656e-08"},
            {"-bilevel_final_lower_solve", "0"}};
  auto p = std::make_shared<bilevel::QuadraticProblem>(comm, q);
  bilevel::BilevelSolver solver(comm);
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  p->exact_lower_solution(x, y);
  auto recorder = std::make_unique<EstimateRecorder>(*p, x, step);
  EstimateRecorder* r = recorder.get();
  solver.add_monitor(std::move(recorder));
  const bilevel::SolveReport report = solver.solve(x, y);
  return {r->estimates, r->errors, report.counts};
}

/// max_i |u_i − v_i| / max_i |v_i| (1e300 when the sizes differ or v is 0).
PetscReal max_rel(const std::vector<PetscReal>& u, const std::vector<PetscReal>& v) {
  PetscReal d = 0, m = 0;
  for (std::size_t i = 0; i < v.size() && i < u.size(); ++i) {
    d = std::max(d, std::abs(u[i] - v[i]));
    m = std::max(m, std::abs(v[i]));
  }
  return u.size() == v.size() && m > 0 ? d / m : 1e300;
}

// One-step JVP mode (-bilevel_pzobo_one_step_projection, the default with N = 1): the explicit paths'
// differences −(a/μ)⟨∇_y g(x + μ u_j, y⁰) − ∇_y g(x, y⁰), M ∇_y f⟩ become their limit μ → 0, −a u_jᵀ J M ∇_y
// f, from one JVP. On the quadratic ∇_y g is affine in x, so the limit is reached at any μ and the two
// estimates agree to rounding, for every direction type (with the quadratic's inexact symmetric M). Counts
// per iteration: the JVP mode 1 grad_g (the main path) and 1 jvp; the explicit paths Q + 1 grad_g and no jvp.
// Coordinate directions with Q = dx (-bilevel_pzobo_directions 0) give the same estimate as orthogonal ones.
TEST(Pzobo, OneStepJvpDifferencesEqualTheExplicitPathsOnTheQuadraticWithEveryDirectionType) {
  auto q = seedtest::quad(100);
  q.preconditioner_error = 0.3;
  auto run = [&](const char* type, const char* jvp, const char* directions = "7") {
    Options o{{"-bilevel_pzobo_direction_type", type},
              {"-bilevel_pzobo_one_step_projection", jvp},
              {"-bilevel_pzobo_directions", directions},
              {"-bilevel_pzobo_inner_steps", "1"},
              {"-bilevel_pzobo_inner_momentum", "0"},
              {"-bilevel_pzobo_precondition", "1"},
              {"-bilevel_pzobo_inner_step", "0.7"}};
    return record_estimates(PETSC_COMM_WORLD, q, 3);
  };
  for (const char* type : {"gaussian", "orthogonal", "coordinate"}) {
    const Estimates jvp = run(type, "1"), paths = run(type, "0");
    ASSERT_EQ(jvp.h.size(), 3u) << type;
    ASSERT_EQ(paths.h.size(), 3u) << type;
    for (std::size_t k = 0; k < 3; ++k) {
      EXPECT_GT(paths.errors[k], 1e-3)
          << type;  // M is inexact: the one-step estimate has a bias to reproduce
      EXPECT_LT(max_rel(jvp.h[k], paths.h[k]), 1e-8) << type << " iteration " << k;
    }
    EXPECT_EQ(jvp.counts.grad_g, 3) << type;
    EXPECT_EQ(jvp.counts.jvp, 3) << type;
    EXPECT_EQ(paths.counts.grad_g, 3 * 8) << type;
    EXPECT_EQ(paths.counts.jvp, 0) << type;
  }
  const Estimates orthogonal = run("orthogonal", "1"), coordinate = run("coordinate", "1", "0");
  for (std::size_t k = 0; k < 3; ++k) EXPECT_LT(max_rel(coordinate.h[k], orthogonal.h[k]), 1e-8);
}

// -bilevel_pzobo_directions 0 means one direction per coordinate, which only coordinate directions offer.
TEST(Pzobo, OneDirectionPerCoordinateNeedsCoordinateDirections) {
  Options o{{"-bilevel_pzobo_directions", "0"}, {"-bilevel_pzobo_direction_type", "orthogonal"}};
  try {
    seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 1);
    ADD_FAILURE() << "no error";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("-bilevel_pzobo_direction_type coordinate"), std::string::npos)
        << e.what();
  }
}

// A method that is not offered a preconditioner says so instead of running unpreconditioned.
TEST(Pzobo, PreconditionedPathsNeedAProblemWithAPreconditioner) {
  Options o{{"-bilevel_pzobo_precondition", "1"}};
  EXPECT_THROW(seedtest::run_quadratic(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo", 1),
               bilevel::InputError);
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
  EXPECT_NE(text.find(size > 1 ? "sub-communicators" : "side by side on the full communicator"),
            std::string::npos)
      << text;
  {  // defaults: x has 7 <= 32 entries, so a full orthogonal frame of Q = 7 directions
    Options d{{"-bilevel_pzobo_directions", "-1"}};
    const std::string def = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo");
    EXPECT_NE(def.find("directions 7 orthogonal"), std::string::npos) << def;
    EXPECT_NE(def.find("lower spectrum: L"), std::string::npos) << def;
  }
  Options one_step{{"-bilevel_pzobo_inner_steps", "1"}};
  const std::string jvp = seedtest::view_text(PETSC_COMM_WORLD, seedtest::quad(100), "pzobo");
  EXPECT_NE(jvp.find("smoothing 0.01 (unused)"), std::string::npos) << jvp;
  EXPECT_NE(jvp.find("limit mu -> 0 from one JVP"), std::string::npos) << jvp;
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
  PetscReal upper_value_impl(Vec x, Vec y, const bilevel::Batch& b) override {
    return inner_->upper_value(x, y, b);
  }
  void upper_grad_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gx, Vec gy) override {
    inner_->upper_grad(x, y, b, gx, gy);
  }
  PetscReal lower_value_impl(Vec x, Vec y, const bilevel::Batch& b) override {
    return inner_->lower_value(x, y, b);
  }
  void lower_grad_y_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gy) override {
    lower_batches.emplace_back(b.full ? std::vector<PetscInt>{-1}
                                      : std::vector<PetscInt>(b.indices.begin(), b.indices.end()));
    inner_->lower_grad_y(x, y, b, gy);
  }
  void lower_grad_x_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gx) override {
    inner_->lower_grad_x(x, y, b, gx);
  }
  void lower_hvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    inner_->lower_hvp(x, y, b, w, out);
  }
  void lower_jvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    inner_->lower_jvp(x, y, b, w, out);
  }
  // logreg's Jacobi M: pzobo's paths step in it by default
  void lower_preconditioner_setup_impl(Vec x, Vec y, bilevel::PreconditionerKind kind) override {
    inner_->lower_preconditioner_setup(x, y, kind);
  }
  void lower_precondition_impl(Vec r, Vec out) override { inner_->lower_precondition(r, out); }

 private:
  std::shared_ptr<bilevel::BilevelProblem> inner_;
};

// PZOBO-S: the main path and the Q perturbed paths of one iteration replay the same minibatch sequence,
// and the next iteration draws a new one. (logreg has no μ_g hint: gradient descent with N = 10.)
TEST(Pzobo, StochasticPathsShareOneMinibatchSequencePerIteration) {
  const auto tr = testdata::make_global(240, 12, 2, 11), va = testdata::make_global(120, 12, 2, 12);
  auto inner = std::make_shared<bilevel::LogregProblem>(
      testdata::to_dataset(PETSC_COMM_WORLD, tr, bilevel::DataFormat::Sparse),
      testdata::to_dataset(PETSC_COMM_WORLD, va, bilevel::DataFormat::Sparse),
      std::nullopt,
      bilevel::LogregOptions{});
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
  EXPECT_NE(b[0], b[paths]);      // B_2 differs from B_1
  EXPECT_NE(b[0], b[paths * n]);  // the next iteration draws a new sequence
}

// Directions restricted to the minibatch's sample weights (Capability::PerSampleUpper, hyperclean): with one
// plain step (M = I) the path map is y₁(x) = y₀ − a ∇_y g(x, y₀; B), so the estimate's expectation is
// −a ∇²_xy g(x, y₀; B) ∇_y f(y₁), nonzero only on B. Orthogonal or coordinate directions with Q = |B| on B
// give it exactly in the one-step JVP mode (one lower_jvp, counted as such) and to O(μ) with the explicit
// paths (the weights σ(x) are not affine), the same at every rank count; the same Q directions on all 47
// weights (the paper's support) are far from it. The O(μ) tolerance: row i's difference quotient is u_i
// σ'(x_i) (1 + ε_i) times a factor of the limit, with |ε_i| ≤ (μ |u_i| / 2) max|σ''| / σ'(x_i) ≤ 1e-6 · √8 /
// 2 · 0.45 ≈ 6.4e-7 (|x_i| ≤ 0.8, so σ'(x_i) ≥ 0.21; max|σ''| = 0.096; |u_i| ≤ √d, d = 8). Through h = (1/Q)
// Σ_j c_j u_j that is at most max|ε| ‖u_j‖_∞ ‖u_j‖_1 ≤ max|ε| d √d ≈ 1.4e-5 of max|h|; rounding in the
// quotients (1e-16 / μ relative to ∇_y g) is far below.
TEST(Pzobo, DirectionsOnTheMinibatchsWeightsRecoverTheBatchJacobianProductOnHyperclean) {
  const auto tr = testdata::make_global(47, 6, 4, 11), va = testdata::make_global(23, 6, 4, 12);
  const PetscInt b = 8;
  const PetscReal a = 0.5, s = std::ldexp(1.0, -20);
  auto run = [&](MPI_Comm comm,
                 const char* support,
                 std::vector<PetscReal>* expected,
                 const char* type = "orthogonal",
                 const char* projection = "1") {
    bilevel::HypercleanOptions ho;
    ho.mu = 0.03;
    ho.corruption = 0.4;
    ho.seed = 7;
    auto p = std::make_shared<bilevel::HypercleanProblem>(
        testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
        testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
        std::nullopt,
        ho);
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
    auto x = p->create_upper_vec(), y = p->create_lower_vec(), x0 = p->create_upper_vec(),
         y0 = p->create_lower_vec();
    testdata::fill(x, [](PetscInt i) { return 0.8 * std::sin(0.9 * i + 0.2); });
    testdata::fill(y, [](PetscInt j) { return 0.3 * std::cos(1.3 * j + 0.4); });
    VecCopy(x, x0);
    VecCopy(y, y0);
    const bilevel::SolveReport r = solver.solve(x, y);
    EXPECT_EQ(r.outer_iterations, 1);
    // the JVP mode: the main path's gradient and one JVP; explicit paths: Q + 1 one-step paths
    const bool jvp = std::string(projection) == "1";
    EXPECT_EQ(r.counts.grad_g, jvp ? 1 : b + 1);
    EXPECT_EQ(r.counts.jvp, jvp ? 1 : 0);
    if (expected) {  // −a ∇²_xy g(x₀, y₀; B) ∇_y f(y₁) on the batch the method drew (stream 1 of seed 0)
      std::vector<PetscInt> rows(static_cast<std::size_t>(b));
      bilevel::BatchSampler sampler(0, 1);
      const bilevel::Batch batch = sampler.next(tr.rows, b);
      std::copy(batch.indices.begin(), batch.indices.end(), rows.begin());
      const bilevel::Batch B = bilevel::Batch::of(rows);
      auto g = p->create_lower_vec(), y1 = p->create_lower_vec(), fy = p->create_lower_vec(),
           jv = p->create_upper_vec();
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
  std::vector<PetscReal> expected;
  const std::vector<PetscReal> h = run(PETSC_COMM_WORLD, "batch", &expected);
  const std::vector<PetscReal> h_self = run(PETSC_COMM_SELF, "batch", nullptr);
  const std::vector<PetscReal> h_full = run(PETSC_COMM_WORLD, "full", nullptr);
  // JVP mode against the direct JVP: the same products; h is read back from x₀ − x₁ = s h, which costs
  // ulp(x)/s ≈ 1e-10 against max|h| ≈ 4e-3 (measured difference 3e-8).
  EXPECT_LT(max_rel(h, expected), 1e-6);
  EXPECT_LT(max_rel(h_self, h), 1e-10);
  EXPECT_GT(max_rel(h_full, expected), 0.5);
  const std::vector<PetscReal> paths = run(PETSC_COMM_WORLD, "batch", nullptr, "orthogonal", "0");
  const std::vector<PetscReal> coordinate = run(PETSC_COMM_WORLD, "batch", nullptr, "coordinate", "1");
  const std::vector<PetscReal> coordinate_paths = run(PETSC_COMM_WORLD, "batch", nullptr, "coordinate", "0");
  const std::vector<PetscReal> coordinate_self = run(PETSC_COMM_SELF, "batch", nullptr, "coordinate", "1");
  EXPECT_LT(max_rel(coordinate, expected), 1e-6);
  EXPECT_LT(max_rel(coordinate_self, coordinate), 1e-10);
  // Explicit paths against the JVP mode: O(μ), at most 1.4e-5 (comment above; measured 2.5e-7 and 3.7e-7).
  EXPECT_LT(max_rel(paths, h), 2e-5);
  EXPECT_LT(max_rel(coordinate_paths, coordinate), 2e-5);
  EXPECT_GT(max_rel(paths, h), 0);  // the explicit paths did run: their quotients are not the limit
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
