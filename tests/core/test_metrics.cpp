// The exact metrics of the trace (value function, exact hypergradient, relative error, cosine, distance to
// y*) and the a-posteriori bound on the hypergradient error (docs/metrics.md): known answers on the
// quadratic's closed form and the bound holding on every monitored row of quadratic and logreg runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/core/exact_metrics.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;

/// Keeps every record the solver emits. Collective (every rank keeps the same records).
class Recorder : public bilevel::Monitor {
 public:
  explicit Recorder(std::vector<bilevel::IterationRecord>* out) : out_(out) {}
  void on_iteration(const bilevel::IterationRecord& r) override { out_->push_back(r); }

 private:
  std::vector<bilevel::IterationRecord>* out_;
};

struct Outcome {
  std::vector<bilevel::IterationRecord> rows;
  bilevel::SolveReport report;
};

Outcome run(const std::shared_ptr<bilevel::BilevelProblem>& p,
            const std::vector<std::pair<std::string, std::string>>& kv) {
  Options o(kv);
  Outcome out;
  bilevel::BilevelSolver solver(p->comm());
  solver.add_monitor(std::make_unique<Recorder>(&out.rows));
  out.report = seedtest::solve_from_initial_point(solver, p);
  return out;
}

/// Rows with a bound and an exact hypergradient; every one must satisfy ||h − ∇F|| <= bound.
int check_bound(const Outcome& o, const std::string& what) {
  int n = 0;
  for (const auto& r : o.rows) {
    if (std::getenv("BILEVEL_TEST_VERBOSE"))
      std::printf("%s %lld bound %g relerr %g exact %g\n",
                  what.c_str(),
                  (long long)r.iteration,
                  r.hypergradient_error_bound.value_or(-1),
                  r.hypergradient_relative_error.value_or(-1),
                  r.exact_hypergradient_norm.value_or(-1));
    if (!r.hypergradient_error_bound || !r.hypergradient_relative_error) continue;
    ++n;
    const PetscReal err = *r.hypergradient_relative_error * *r.exact_hypergradient_norm;
    EXPECT_LE(err, *r.hypergradient_error_bound * (1 + 1e-9)) << what << " iteration " << r.iteration;
    EXPECT_LE(std::abs(*r.hypergradient_cosine), 1 + 1e-12) << what;
    EXPECT_GE(*r.lower_distance, 0) << what;
  }
  return n;
}

TEST(ErrorBound, IsTheFormulaOfTheDocsOnKnownInputs) {
  bilevel::SmoothnessConstants c;
  c.upper_grad_x_lipschitz = 2, c.upper_grad_y_lipschitz = 3, c.cross_norm = 5, c.cross_lipschitz = 7,
  c.hessian_lipschitz = 11;
  bilevel::BoundInputs in;
  in.lower_gradient_norm = 0.5, in.linear_residual = 0.25, in.v_norm = 2, in.sampling = 0.125, in.mu = 0.5;
  // δ = 1, e = (0.25 + 3 + 22) / 0.5 = 50.5, B = 0.125 + 2 + (5 + 7) 50.5 + 7 · 2
  EXPECT_DOUBLE_EQ(bilevel::hypergradient_error_bound(in, c), 0.125 + 2 + 12 * 50.5 + 14);
  in.lower_gradient_norm = 0, in.linear_residual = 0, in.sampling = 0;  // the exact pair: no error
  EXPECT_EQ(bilevel::hypergradient_error_bound(in, c), 0);
  in.mu = 0;
  EXPECT_TRUE(std::isinf(bilevel::hypergradient_error_bound(in, c)));
}

TEST(ExactMetrics, OnTheQuadraticAreTheClosedFormAtThePointOfTheEstimate) {
  // aidcg with an accurate CG: its estimate is ∇F(x_{k-1}) up to the lower-level error of its T steps
  auto q = std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, seedtest::quad(10));
  const Outcome o = run(q,
                        {{"-bilevel_type", "aidcg"},
                         {"-bilevel_max_it", "6"},
                         {"-bilevel_aidcg_inner_steps", "200"},
                         {"-bilevel_hyper_ksp_rtol", "1e-12"},
                         {"-bilevel_hyper_ksp_max_it", "200"}});
  ASSERT_EQ(o.rows.size(), 7u);
  // row 0: the start point, exact metrics but nothing to compare yet
  ASSERT_TRUE(o.rows[0].exact_hypergradient_norm && o.rows[0].value_function);
  EXPECT_FALSE(o.rows[0].hypergradient_relative_error);
  EXPECT_NEAR(*o.rows[0].exact_hypergradient_norm, *o.rows[0].true_hypergradient_norm, 1e-12);
  for (std::size_t k = 1; k < o.rows.size(); ++k) {
    const auto& r = o.rows[k];
    ASSERT_TRUE(r.hypergradient_relative_error && r.hypergradient_cosine && r.lower_distance);
    EXPECT_LT(*r.hypergradient_relative_error, 1e-6) << k;
    EXPECT_NEAR(*r.hypergradient_cosine, 1.0, 1e-9) << k;
    EXPECT_LT(*r.lower_distance, 1e-6) << k;
    // the row's exact norm is at x_{k-1}: the true norm of the previous row
    EXPECT_NEAR(*r.exact_hypergradient_norm,
                *o.rows[k - 1].true_hypergradient_norm,
                1e-9 * *r.exact_hypergradient_norm);
  }
  EXPECT_EQ(check_bound(o, "aidcg accurate"), 6);
  EXPECT_TRUE(o.report.hypergradient_error_bound && o.report.exact_hypergradient_norm &&
              o.report.value_function);
}

TEST(ErrorBound, HoldsOnTheQuadraticForInexactMethods) {
  // few lower steps and few linear iterations on κ = 100: errors of order one that the bound must cover
  for (const std::string m : {"aidcg", "stocbio", "nbo", "qnbo", "lancbio", "subbio"}) {
    auto q = std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, seedtest::quad(100));
    const Outcome o = run(q,
                          {{"-bilevel_type", m},
                           {"-bilevel_max_it", "12"},
                           {"-bilevel_" + m + "_inner_steps", "2"},
                           {"-bilevel_hyper_ksp_max_it", "2"},
                           {"-bilevel_stocbio_neumann_steps", "3"}});
    EXPECT_EQ(check_bound(o, m), 12) << m;
    PetscReal worst = 0;
    for (const auto& r : o.rows)
      if (r.hypergradient_relative_error) worst = std::max(worst, *r.hypergradient_relative_error);
    EXPECT_GT(worst, 1e-4) << m << ": the estimates were not inexact, the test proves nothing";
  }
}

TEST(ErrorBound, HoldsOnLogregWithAnEstimatedMuAndMinibatches) {
  const auto tr = testdata::make_global(240, 12, 2, 11), va = testdata::make_global(120, 12, 2, 12);
  for (const std::string m : {"aidcg", "stocbio"}) {
    auto p = std::make_shared<bilevel::LogregProblem>(
        testdata::to_dataset(PETSC_COMM_WORLD, tr, bilevel::DataFormat::Sparse),
        testdata::to_dataset(PETSC_COMM_WORLD, va, bilevel::DataFormat::Sparse),
        std::nullopt,
        bilevel::LogregOptions{});
    const Outcome o = run(p,
                          {{"-bilevel_type", m},
                           {"-bilevel_max_it", "10"},
                           {"-bilevel_monitor_exact_every", "2"},
                           {"-bilevel_stocbio_batch_size", "32"}});
    EXPECT_EQ(check_bound(o, m), 5) << m;  // rows 2, 4, ..., 10
    int bounds = 0;
    for (const auto& r : o.rows) bounds += r.hypergradient_error_bound ? 1 : 0;
    EXPECT_EQ(bounds, 10) << m << ": a bound on every row after the start point";
    EXPECT_FALSE(o.rows[1].exact_hypergradient_norm) << "exact metrics only every 2 iterations";
  }
}

}  // namespace
