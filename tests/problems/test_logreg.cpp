#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../../src/problems/data_parallel.hpp"
#include "bilevel/core/derivative_check.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/problems/logreg.hpp"
#include "synthetic.hpp"

namespace {

using bilevel::Batch;
using bilevel::DataFormat;
using testdata::gather;
using testdata::rel_diff;

/// Serial reference of the logreg oracles, computed redundantly on every rank from the global matrices.
struct Reference {
  const testdata::Global& tr;
  const testdata::Global& va;
  bool scalar, intercept;

  PetscInt nf() const { return tr.cols; }
  PetscInt dy() const { return nf() + (intercept ? 1 : 0); }
  static double sign(const testdata::Global& g, PetscInt i) {
    return g.labels[static_cast<std::size_t>(i)] == 1 ? 1.0 : -1.0;
  }
  double lam(const std::vector<double>& x, PetscInt j) const {
    return std::exp(scalar ? x[0] : x[static_cast<std::size_t>(j)]);
  }
  double z(const testdata::Global& g, PetscInt i, const std::vector<double>& y) const {
    double s = intercept ? y[static_cast<std::size_t>(nf())] : 0.0;
    for (PetscInt j = 0; j < nf(); ++j) s += g.at(i, j) * y[static_cast<std::size_t>(j)];
    return s;
  }
  static std::vector<PetscInt> all(const testdata::Global& g) {
    std::vector<PetscInt> r;
    for (PetscInt i = 0; i < g.rows; ++i) r.push_back(i);
    return r;
  }
  double loss(const testdata::Global& g,
              const std::vector<PetscInt>& rows,
              const std::vector<double>& y) const {
    double s = 0;
    for (PetscInt i : rows) s += std::log1p(std::exp(-sign(g, i) * z(g, i, y)));
    return s / static_cast<double>(rows.size());
  }
  std::vector<double> loss_grad(const testdata::Global& g,
                                const std::vector<PetscInt>& rows,
                                const std::vector<double>& y) const {
    std::vector<double> out(static_cast<std::size_t>(dy()), 0.0);
    for (PetscInt i : rows) {
      const double b = sign(g, i), r = -b / (1 + std::exp(b * z(g, i, y)));
      for (PetscInt j = 0; j < nf(); ++j)
        out[static_cast<std::size_t>(j)] += r * g.at(i, j) / static_cast<double>(rows.size());
      if (intercept) out[static_cast<std::size_t>(nf())] += r / static_cast<double>(rows.size());
    }
    return out;
  }
  double g_value(const std::vector<double>& x,
                 const std::vector<double>& y,
                 const std::vector<PetscInt>& rows) const {
    double reg = 0;
    for (PetscInt j = 0; j < nf(); ++j)
      reg += 0.5 * lam(x, j) * y[static_cast<std::size_t>(j)] * y[static_cast<std::size_t>(j)];
    return loss(tr, rows, y) + reg;
  }
  std::vector<double> g_grad(const std::vector<double>& x,
                             const std::vector<double>& y,
                             const std::vector<PetscInt>& rows) const {
    auto out = loss_grad(tr, rows, y);
    for (PetscInt j = 0; j < nf(); ++j)
      out[static_cast<std::size_t>(j)] += lam(x, j) * y[static_cast<std::size_t>(j)];
    return out;
  }
  std::vector<double> hessian(const std::vector<double>& x,
                              const std::vector<double>& y,
                              const std::vector<PetscInt>& rows) const {
    const PetscInt n = dy();
    std::vector<double> h(static_cast<std::size_t>(n * n), 0.0);
    for (PetscInt i : rows) {
      const double p = 1 / (1 + std::exp(-z(tr, i, y))), d = p * (1 - p) / static_cast<double>(rows.size());
      for (PetscInt j = 0; j < n; ++j)
        for (PetscInt k = 0; k < n; ++k) {
          const double aj = j < nf() ? tr.at(i, j) : 1.0, ak = k < nf() ? tr.at(i, k) : 1.0;
          h[static_cast<std::size_t>(j * n + k)] += d * aj * ak;
        }
    }
    for (PetscInt j = 0; j < nf(); ++j) h[static_cast<std::size_t>(j * n + j)] += lam(x, j);
    return h;
  }
  std::vector<double> times(const std::vector<double>& h, const std::vector<double>& v) const {
    const PetscInt n = dy();
    std::vector<double> out(static_cast<std::size_t>(n), 0.0);
    for (PetscInt j = 0; j < n; ++j)
      for (PetscInt k = 0; k < n; ++k)
        out[static_cast<std::size_t>(j)] +=
            h[static_cast<std::size_t>(j * n + k)] * v[static_cast<std::size_t>(k)];
    return out;
  }
};

using Param = std::tuple<DataFormat, bool, bool, const char*>;  // format, scalar, intercept, model_comm

class LogregTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    tr_ = testdata::make_global(53, 7, 2, 1);
    va_ = testdata::make_global(31, 7, 2, 2);
    te_ = testdata::make_global(29, 6, 2, 3);  // fewer features: padded
    opts_.scalar = std::get<1>(GetParam());
    opts_.intercept = std::get<2>(GetParam());
    opts_.model_comm = std::get<3>(GetParam());
    const DataFormat fmt = std::get<0>(GetParam());
    problem_ = std::make_unique<bilevel::LogregProblem>(testdata::to_dataset(PETSC_COMM_WORLD, tr_, fmt),
                                                        testdata::to_dataset(PETSC_COMM_WORLD, va_, fmt),
                                                        testdata::to_dataset(PETSC_COMM_WORLD, te_, fmt),
                                                        opts_);
    x_ = problem_->create_upper_vec();
    y_ = problem_->create_lower_vec();
    testdata::fill(x_, [](PetscInt j) { return -1.5 + 0.4 * std::sin(3.0 * j + 1); });
    testdata::fill(y_, [](PetscInt j) { return 0.6 * std::cos(1.7 * j + 0.3); });
  }
  Reference ref() const { return Reference{tr_, va_, opts_.scalar, opts_.intercept}; }

  testdata::Global tr_, va_, te_;
  bilevel::LogregOptions opts_;
  std::unique_ptr<bilevel::LogregProblem> problem_;
  bilevel::petsc::VecHandle x_, y_;
};

TEST_P(LogregTest, ValuesAndGradientsMatchASerialComputation) {
  auto& p = *problem_;
  auto gy = p.create_lower_vec(), gx = p.create_upper_vec(), fy = p.create_lower_vec(),
       fx = p.create_upper_vec();
  const auto r = ref();
  const auto x = gather(x_), y = gather(y_);
  const auto rows = Reference::all(tr_);

  const PetscReal g = p.lower_value(x_, y_, Batch::all());
  p.lower_grad_y(x_, y_, Batch::all(), gy);
  p.lower_grad_x(x_, y_, Batch::all(), gx);
  const PetscReal f = p.upper_value(x_, y_, Batch::all());
  p.upper_grad(x_, y_, Batch::all(), fx, fy);

  EXPECT_NEAR(g, r.g_value(x, y, rows), 1e-12);
  EXPECT_LT(rel_diff(gather(gy), r.g_grad(x, y, rows)), 1e-12);
  std::vector<double> gx_ref;
  if (opts_.scalar) {
    double s = 0;
    for (PetscInt j = 0; j < r.nf(); ++j)
      s += y[static_cast<std::size_t>(j)] * y[static_cast<std::size_t>(j)];
    gx_ref.push_back(0.5 * std::exp(x[0]) * s);
  } else {
    for (PetscInt j = 0; j < r.nf(); ++j)
      gx_ref.push_back(0.5 * std::exp(x[static_cast<std::size_t>(j)]) * y[static_cast<std::size_t>(j)] *
                       y[static_cast<std::size_t>(j)]);
  }
  EXPECT_LT(rel_diff(gather(gx), gx_ref), 1e-12);
  EXPECT_NEAR(f, r.loss(va_, Reference::all(va_), y), 1e-12);
  EXPECT_LT(rel_diff(gather(fy), r.loss_grad(va_, Reference::all(va_), y)), 1e-12);
  PetscReal fxn = 1;
  VecNorm(fx, NORM_INFINITY, &fxn);
  EXPECT_EQ(fxn, 0.0);
}

TEST_P(LogregTest, MinibatchOraclesUseOnlyTheBatchRowsAndItsSize) {
  auto& p = *problem_;
  const std::vector<PetscInt> idx = {0, 3, 4, 10, 11, 12, 25, 26, 40, 52};
  const Batch batch = Batch::of(idx);
  auto gy = p.create_lower_vec(), w = p.create_lower_vec(), hw = p.create_lower_vec();
  testdata::fill(w, [](PetscInt j) { return 1.0 - 0.3 * j; });
  const auto r = ref();
  const auto x = gather(x_), y = gather(y_);

  const PetscReal g = p.lower_value(x_, y_, batch);
  p.lower_grad_y(x_, y_, batch, gy);
  p.lower_hvp(x_, y_, batch, w, hw);

  EXPECT_NEAR(g, r.g_value(x, y, idx), 1e-12);
  EXPECT_LT(rel_diff(gather(gy), r.g_grad(x, y, idx)), 1e-12);
  EXPECT_LT(rel_diff(gather(hw), r.times(r.hessian(x, y, idx), gather(w))), 1e-12);
  EXPECT_EQ(p.counts().samples, 3 * static_cast<std::int64_t>(idx.size()));
}

TEST_P(LogregTest, HvpMatchesTheExplicitHessianAndFollowsAModelChangedInPlace) {
  auto& p = *problem_;
  auto w = p.create_lower_vec(), hw = p.create_lower_vec(), gy = p.create_lower_vec();
  testdata::fill(w, [](PetscInt j) { return std::sin(0.5 + j); });
  const auto r = ref();
  const auto x = gather(x_);
  const auto all = Reference::all(tr_);

  p.lower_grad_y(x_, y_, Batch::all(), gy);  // fills the curvature cache at y
  p.lower_hvp(x_, y_, Batch::all(), w, hw);
  const double before = rel_diff(gather(hw), r.times(r.hessian(x, gather(y_), all), gather(w)));
  VecScale(y_, -1.7);  // same Vec, new content: the cache must notice
  p.lower_hvp(x_, y_, Batch::all(), w, hw);
  const double after = rel_diff(gather(hw), r.times(r.hessian(x, gather(y_), all), gather(w)));

  EXPECT_LT(before, 1e-12);
  EXPECT_LT(after, 1e-12);
}

TEST_P(LogregTest, JacobiPreconditionerIsTheInverseHessianDiagonalAtItsSetupPointUntilTheNextSetup) {
  auto& p = *problem_;
  ASSERT_TRUE(bilevel::has(p.capabilities(), bilevel::Capability::LowerPreconditioner));
  auto r_vec = p.create_lower_vec(), out = p.create_lower_vec();
  testdata::fill(r_vec, [](PetscInt j) { return 1.0 + 0.5 * std::cos(2.0 * j); });
  const auto r = ref();
  const auto x = gather(x_), rv = gather(r_vec);
  const auto all = Reference::all(tr_);
  const auto expected = [&](const std::vector<double>& y) {  // r_j / H_jj at (x, y)
    const auto h = r.hessian(x, y, all);
    std::vector<double> m(rv.size());
    for (std::size_t j = 0; j < rv.size(); ++j) m[j] = rv[j] / h[j * rv.size() + j];
    return m;
  };
  const auto y0 = gather(y_);

  p.lower_preconditioner_setup(x_, y_);
  p.lower_precondition(r_vec, out);
  EXPECT_LT(rel_diff(gather(out), expected(y0)), 1e-12);
  VecScale(y_, -1.7);  // M stays the one built at y0 until the next setup
  p.lower_precondition(r_vec, out);
  EXPECT_LT(rel_diff(gather(out), expected(y0)), 1e-12);
  p.lower_preconditioner_setup(x_, y_);
  p.lower_precondition(r_vec, out);
  EXPECT_LT(rel_diff(gather(out), expected(gather(y_))), 1e-12);
  EXPECT_GT(rel_diff(expected(gather(y_)), expected(y0)), 1e-3);  // the two points give different M
}

TEST(LogregProblem, PreconditionerNoneOffersNoLowerPreconditioner) {
  const auto tr = testdata::make_global(20, 5, 2, 1), va = testdata::make_global(10, 5, 2, 2);
  bilevel::LogregOptions o;
  o.preconditioner = "none";
  bilevel::LogregProblem p(testdata::to_dataset(PETSC_COMM_WORLD, tr, DataFormat::Sparse),
                           testdata::to_dataset(PETSC_COMM_WORLD, va, DataFormat::Sparse),
                           std::nullopt,
                           o);
  EXPECT_FALSE(bilevel::has(p.capabilities(), bilevel::Capability::LowerPreconditioner));
  EXPECT_THROW(p.lower_preconditioner_setup(nullptr, nullptr), bilevel::Error);
}

TEST_P(LogregTest, HvpMultiMatchesSingleProducts) {
  auto& p = *problem_;
  std::vector<bilevel::petsc::VecHandle> in, out, single;
  for (int q = 0; q < 3; ++q) {
    in.push_back(p.create_lower_vec());
    out.push_back(p.create_lower_vec());
    single.push_back(p.create_lower_vec());
    testdata::fill(in.back(), [q](PetscInt j) { return std::cos(0.3 * q + 1.1 * j); });
  }
  std::vector<Vec> vin = {in[0], in[1], in[2]}, vout = {out[0], out[1], out[2]};

  p.lower_hvp_multi(x_, y_, Batch::all(), vin, vout);
  for (int q = 0; q < 3; ++q) p.lower_hvp(x_, y_, Batch::all(), in[q], single[q]);

  for (int q = 0; q < 3; ++q) EXPECT_LT(rel_diff(gather(out[q]), gather(single[q])), 1e-13);
  EXPECT_EQ(p.counts().hvp, 6);
}

// Zeroth-order paths start at one y⁰ from several x_j: lower_grad_y_multi makes one data pass for all and
// must equal the single gradients bit for bit (and the serial reference), on the full data and a minibatch.
TEST_P(LogregTest, GradientsAtSeveralXAndOneYEqualTheSingleGradientsBitForBit) {
  auto& p = *problem_;
  std::vector<bilevel::petsc::VecHandle> xs, multi, single;
  for (int q = 0; q < 3; ++q) {
    xs.push_back(p.create_upper_vec());
    VecCopy(x_, xs.back());
    auto shift = p.create_upper_vec();
    testdata::fill(shift, [q](PetscInt j) { return 0.3 * q * std::sin(1.0 + j); });
    VecAXPY(xs.back(), 1.0, shift);
    multi.push_back(p.create_lower_vec());
    single.push_back(p.create_lower_vec());
  }
  std::vector<Vec> vx = {xs[0], xs[1], xs[2]}, vout = {multi[0], multi[1], multi[2]};
  const std::vector<PetscInt> idx = {1, 2, 7, 19, 30, 44};
  const auto r = ref();
  for (const Batch& batch : {Batch::all(), Batch::of(idx)}) {
    p.lower_grad_y_multi(vx, y_, batch, vout);
    for (int q = 0; q < 3; ++q) p.lower_grad_y(xs[q], y_, batch, single[q]);
    const auto rows = batch.full ? Reference::all(tr_) : idx;
    for (int q = 0; q < 3; ++q) {
      EXPECT_EQ(gather(multi[q]), gather(single[q])) << q;
      EXPECT_LT(rel_diff(gather(multi[q]), r.g_grad(gather(xs[q]), gather(y_), rows)), 1e-12) << q;
    }
  }
  EXPECT_EQ(p.counts().grad_g, 12);
}

// e^x is cached per point: alternating among three x computes each once; a point changed in place is
// recomputed; beyond kMaxEntries points the least recently used one goes first.
TEST(ExpRegularisers, AlternatingPointsComputeEachExponentialOnceAndAChangedPointAgain) {
  std::vector<bilevel::petsc::VecHandle> xs;
  for (int q = 0; q < 20; ++q) {
    xs.emplace_back();
    VecCreateMPI(PETSC_COMM_WORLD, PETSC_DECIDE, 7, xs.back().out());
    testdata::fill(xs.back(), [q](PetscInt j) { return -1.0 + 0.1 * q + 0.2 * j; });
  }
  bilevel::detail::ExpRegularisers lam;
  const auto check = [&](int q) {
    const PetscScalar* l = lam.of(xs[static_cast<std::size_t>(q)], false);
    const auto x = gather(xs[static_cast<std::size_t>(q)]);
    PetscInt lo = 0, hi = 0;
    VecGetOwnershipRange(xs[static_cast<std::size_t>(q)], &lo, &hi);
    for (PetscInt i = lo; i < hi; ++i) EXPECT_EQ(l[i - lo], std::exp(x[static_cast<std::size_t>(i)]));
  };
  for (int round = 0; round < 5; ++round)
    for (int q = 0; q < 3; ++q) check(q);
  EXPECT_EQ(lam.evaluations(), 3u);
  VecScale(xs[1], 0.5);  // same Vec, new content
  check(1);
  check(0);
  EXPECT_EQ(lam.evaluations(), 4u);
  for (int q = 3; q < 3 + static_cast<int>(bilevel::detail::ExpRegularisers::kMaxEntries); ++q) check(q);
  EXPECT_EQ(lam.evaluations(), 4u + bilevel::detail::ExpRegularisers::kMaxEntries);
  check(1);  // evicted (least recently used), computed again
  EXPECT_EQ(lam.evaluations(), 5u + bilevel::detail::ExpRegularisers::kMaxEntries);
}

TEST_P(LogregTest, JvpMatchesTheCrossDerivative) {
  auto& p = *problem_;
  auto w = p.create_lower_vec(), jw = p.create_upper_vec();
  testdata::fill(w, [](PetscInt j) { return 0.2 + std::sin(2.0 * j); });
  const auto x = gather(x_), y = gather(y_), wv = gather(w);

  p.lower_jvp(x_, y_, Batch::all(), w, jw);

  std::vector<double> expect;
  const PetscInt nf = tr_.cols;
  if (opts_.scalar) {
    double s = 0;
    for (PetscInt j = 0; j < nf; ++j)
      s += std::exp(x[0]) * y[static_cast<std::size_t>(j)] * wv[static_cast<std::size_t>(j)];
    expect.push_back(s);
  } else {
    for (PetscInt j = 0; j < nf; ++j)
      expect.push_back(std::exp(x[static_cast<std::size_t>(j)]) * y[static_cast<std::size_t>(j)] *
                       wv[static_cast<std::size_t>(j)]);
  }
  EXPECT_LT(rel_diff(gather(jw), expect), 1e-13);
}

TEST_P(LogregTest, DerivativeCheckerPassesForEveryOracle) {
  bilevel::DerivativeCheckOptions o;
  o.directions = 3;

  const auto report = bilevel::check_derivatives(*problem_, x_, y_, o);

  EXPECT_TRUE(report.passed(1e-6)) << "largest error " << report.max_error();
  for (const auto& e : report.entries) EXPECT_FALSE(e.skipped) << e.oracle << ": " << e.note;
  if (!report.passed(1e-6)) report.print(PETSC_COMM_WORLD);
}

TEST_P(LogregTest, TestAndValidationMetricsMatchASerialComputation) {
  auto& p = *problem_;
  const auto y = gather(y_);
  Reference r = ref();
  Reference rt{te_, te_, opts_.scalar, opts_.intercept};
  std::vector<double> yt(y.begin(), y.begin() + te_.cols);  // test rows have 6 of the 7 features
  double correct = 0, loss = 0, vcorrect = 0;
  for (PetscInt i = 0; i < te_.rows; ++i) {
    double z = opts_.intercept ? y.back() : 0.0;
    for (PetscInt j = 0; j < te_.cols; ++j) z += te_.at(i, j) * y[static_cast<std::size_t>(j)];
    const double b = Reference::sign(te_, i);
    loss += std::log1p(std::exp(-b * z)) / te_.rows;
    correct += ((z > 0 ? 1.0 : -1.0) == b) ? 1.0 / te_.rows : 0.0;
  }
  for (PetscInt i = 0; i < va_.rows; ++i)
    vcorrect += ((r.z(va_, i, y) > 0 ? 1.0 : -1.0) == Reference::sign(va_, i)) ? 1.0 / va_.rows : 0.0;

  const auto m = p.evaluate_test(x_, y_);
  const auto va = p.validation_accuracy(x_, y_);

  EXPECT_NEAR(m.loss, loss, 1e-12);
  ASSERT_TRUE(m.accuracy.has_value());
  EXPECT_NEAR(*m.accuracy, correct, 1e-12);
  ASSERT_TRUE(va.has_value());
  EXPECT_NEAR(*va, vcorrect, 1e-12);
  (void)rt;
}

INSTANTIATE_TEST_SUITE_P(Variants,
                         LogregTest,
                         ::testing::Combine(::testing::Values(DataFormat::Sparse, DataFormat::Dense),
                                            ::testing::Bool(),
                                            ::testing::Bool(),
                                            ::testing::Values("owners", "gather")),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(std::get<0>(info.param) == DataFormat::Sparse ? "Sparse"
                                                                                            : "Dense") +
                                  (std::get<1>(info.param) ? "Scalar" : "PerFeature") +
                                  (std::get<2>(info.param) ? "Intercept" : "NoIntercept") +
                                  (std::string(std::get<3>(info.param)) == "owners" ? "Owners" : "Gather");
                         });

// The bound L_data + max_j e^{x_j} holds at every y (y = 0 is the worst case of the data term) and grows
// with x the way the regulariser does; the one-time estimate behind it is not counted as oracle work.
TEST_P(LogregTest, LipschitzBoundHoldsAtEveryYAndFollowsTheRegularisers) {
  auto& p = *problem_;
  const bilevel::OracleCounts before = p.counts();
  const std::optional<PetscReal> b0 = p.lower_lipschitz_bound(x_);
  ASSERT_TRUE(b0.has_value());
  EXPECT_EQ(p.counts().hvp, before.hvp);
  auto y0 = p.create_lower_vec();
  VecSet(y0, 0.0);
  for (Vec y : {static_cast<Vec>(y0), static_cast<Vec>(y_)})
    EXPECT_LE(bilevel::estimate_lower_lipschitz(p, x_, y, 1e-8), *b0);
  EXPECT_GE(*b0, 0.98 * bilevel::estimate_lower_lipschitz(p, x_, y0, 1e-8));  // tight at y = 0 (1% pad)
  VecShift(x_, 3.0);                                                          // e^{x} grows 20-fold
  const PetscReal b1 = *p.lower_lipschitz_bound(x_);
  PetscReal xmax = 0;
  VecMax(x_, nullptr, &xmax);
  EXPECT_NEAR(b1 - *b0, std::exp(xmax) - std::exp(xmax - 3.0), 1e-12 * b1);
  EXPECT_LE(bilevel::estimate_lower_lipschitz(p, x_, y0, 1e-8), b1);
}

TEST(LogregProblem, MultiClassLabelsAreAnInputErrorNamingTheFileAndTheAlternatives) {
  const auto tr = testdata::make_global(20, 4, 3, 5), va = testdata::make_global(10, 4, 2, 6);
  auto train = testdata::to_dataset(PETSC_COMM_WORLD, tr, DataFormat::Sparse);
  train.source = "three-classes.svm";

  try {
    bilevel::LogregProblem p(std::move(train),
                             testdata::to_dataset(PETSC_COMM_WORLD, va, DataFormat::Sparse),
                             std::nullopt,
                             bilevel::LogregOptions{});
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("three-classes.svm"), std::string::npos) << what;
    EXPECT_NE(what.find("softmax"), std::string::npos) << what;
    EXPECT_NE(what.find("hyperclean"), std::string::npos) << what;
  }
}

/// A folder under the temporary directory, named once for all ranks (rank 0's pid), where rank 0 writes
/// files every rank then reads; removed at the end of the scope. Collective.
class SharedTempDir {
 public:
  explicit SharedTempDir(const std::string& prefix) {
    MPI_Comm_rank(PETSC_COMM_WORLD, &rank_);
    long id = rank_ == 0 ? static_cast<long>(getpid()) : 0;
    MPI_Bcast(&id, 1, MPI_LONG, 0, PETSC_COMM_WORLD);
    dir_ = std::filesystem::temp_directory_path() / (prefix + std::to_string(id));
  }
  SharedTempDir(const SharedTempDir&) = delete;
  SharedTempDir& operator=(const SharedTempDir&) = delete;
  ~SharedTempDir() {
    MPI_Barrier(PETSC_COMM_WORLD);
    if (rank_ == 0) std::filesystem::remove_all(dir_);
  }
  /// Writes `text` to the file `name` (rank 0) and returns its path (every rank). Not collective.
  std::string write(const std::string& name, const std::string& text) const {
    if (rank_ == 0) {
      std::filesystem::create_directories(dir_);
      std::ofstream(dir_ / name) << text;
    }
    return (dir_ / name).string();
  }

 private:
  int rank_ = 0;
  std::filesystem::path dir_;
};

TEST(LogregProblem, FromFilesReadsTrainingValidationAndTestSets) {
  const SharedTempDir dir("bilevel_logreg_");
  auto write = [&](const std::string& name, PetscInt rows, int features) {
    std::string s;
    for (PetscInt i = 0; i < rows; ++i) {
      s += (i % 3 == 0) ? "+1" : "-1";
      for (int j = 1; j <= features; ++j)
        s += " " + std::to_string(j) + ":" + std::to_string(0.5 + 0.1 * ((i + j) % 5));
      s += "\n";
    }
    return dir.write(name, s);
  };
  const auto train = write("train.svm", 25, 5), val = write("val.svm", 11, 5), test = write("test.svm", 7, 3);
  MPI_Barrier(PETSC_COMM_WORLD);

  auto p = bilevel::LogregProblem::from_files(PETSC_COMM_WORLD, train, val, test, bilevel::LogregOptions{});
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);

  EXPECT_EQ(p->dataset_sizes().lower, 25);
  EXPECT_EQ(p->dataset_sizes().upper, 11);
  EXPECT_EQ(p->n_features(), 5);
  EXPECT_NEAR(p->evaluate_test(x, y).loss, std::log(2.0), 1e-12);  // w = 0, c = 0
  PetscReal x0 = 0;
  VecMax(x, nullptr, &x0);
  EXPECT_NEAR(x0, std::log(1e-2), 1e-12);
}

// -bilevel_logreg_format auto stores a set whose dense storage is at most twice its CSR arrays dense (the
// dense products ran: no sparse HVP kernel is named) and a sparse one as CSR; "sparse" and "dense" force
// either, and both storages give the same oracles.
TEST(LogregProblem, FromFilesStoresDenseIshSetsDenseAndSparseSetsAsCsrUnlessTheFormatIsGiven) {
  const SharedTempDir dir("bilevel_logreg_format_");
  // rows of `per_row` features among `features`, starting at a row-dependent column
  auto write = [&](const std::string& name, PetscInt rows, int features, int per_row) {
    std::string s;
    for (PetscInt i = 0; i < rows; ++i) {
      s += (i % 3 == 0) ? "+1" : "-1";
      std::vector<int> cols;
      for (int k = 0; k < per_row; ++k) cols.push_back(1 + static_cast<int>((i * 7 + k) % features));
      std::sort(cols.begin(), cols.end());
      cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
      for (int j : cols) s += " " + std::to_string(j) + ":" + std::to_string(0.5 + 0.1 * ((i + j) % 5));
      s += "\n";
    }
    return dir.write(name, s);
  };
  const auto dense_tr = write("dense.svm", 30, 6, 6), dense_va = write("dense_va.svm", 12, 6, 6);
  const auto sparse_tr = write("sparse.svm", 30, 200, 2), sparse_va = write("sparse_va.svm", 12, 200, 2);
  MPI_Barrier(PETSC_COMM_WORLD);
  struct Run {
    bool dense_products;
    PetscReal value;
    std::vector<double> hvp;
  };
  auto run = [&](const std::string& tr, const std::string& va, const char* format) {
    bilevel::LogregOptions o;
    o.format = format;
    auto p = bilevel::LogregProblem::from_files(PETSC_COMM_WORLD, tr, va, "", o);
    auto x = p->create_upper_vec(), y = p->create_lower_vec(), w = p->create_lower_vec(),
         out = p->create_lower_vec();
    p->initial_point(x, y);
    testdata::fill(y, [](PetscInt j) { return 0.2 * std::sin(1.0 + j); });
    testdata::fill(w, [](PetscInt j) { return 1.0 + 0.5 * std::cos(2.0 * j); });
    p->lower_grad_y(x, y, Batch::all(), out);  // fills the curvature cache: the next HVP is the steady pass
    p->lower_hvp(x, y, Batch::all(), w, out);
    return Run{p->hvp_kernel_used().empty(), p->lower_value(x, y, Batch::all()), gather(out)};
  };
  const Run dense_auto = run(dense_tr, dense_va, "auto"), dense_csr = run(dense_tr, dense_va, "sparse");
  const Run sparse_auto = run(sparse_tr, sparse_va, "auto"),
            sparse_dense = run(sparse_tr, sparse_va, "dense");
  EXPECT_TRUE(dense_auto.dense_products);
  EXPECT_FALSE(dense_csr.dense_products);
  EXPECT_FALSE(sparse_auto.dense_products);
  EXPECT_TRUE(sparse_dense.dense_products);
  EXPECT_NEAR(dense_auto.value, dense_csr.value, 1e-13 * std::abs(dense_csr.value));
  EXPECT_LT(rel_diff(dense_auto.hvp, dense_csr.hvp), 1e-13);
  EXPECT_NEAR(sparse_auto.value, sparse_dense.value, 1e-13 * std::abs(sparse_dense.value));
  EXPECT_LT(rel_diff(sparse_auto.hvp, sparse_dense.hvp), 1e-13);
}

TEST(LogregProblem, FusedKernelEqualsTwoPassProduct) {
  // rows: [1 0 2], [0 3 0], [4 5 6]; d = (0.5, 1, 2); v = (1, -1, 2, 0.5) with intercept
  const PetscInt ia[] = {0, 2, 3, 6}, ja[] = {0, 2, 1, 0, 1, 2};
  const PetscScalar a[] = {1, 2, 3, 4, 5, 6}, v[] = {1, -1, 2, 0.5};
  const PetscReal d[] = {0.5, 1, 2};
  PetscScalar out[4] = {0, 0, 0, 0};

  bilevel::logistic_hvp_csr(3, ia, ja, a, d, 0.1, v, 3, true, out);

  // t = 0.1 d ∘ (A v + 0.5) = 0.1 (0.5·5.5, 1·(−2.5), 2·11.5) = (0.275, −0.25, 2.3)
  const double t[] = {0.275, -0.25, 2.3};
  const double expect[] = {t[0] + 4 * t[2], 3 * t[1] + 5 * t[2], 2 * t[0] + 6 * t[2], t[0] + t[1] + t[2]};
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(out[j], expect[j], 1e-14);
}

}  // namespace

/// Every sparse HVP kernel (fused, interleaved, panels of rows; portable and AVX-512 loops) gives the
/// product of the reference loop (fused, portable) up to rounding, over more rows than one panel, and
/// reports the kernel that ran: the AVX-512 loops whenever this CPU has them and they are asked for.
TEST(LogregProblem, EverySparseHvpKernelRanAndEqualsTheReferenceLoop) {
  const testdata::Global tr = testdata::make_global(4500, 90, 2, 5, 0.3);
  const testdata::Global va = testdata::make_global(40, 90, 2, 6);
  auto product = [&](const char* kernel, bool simd, std::string* used) {
    bilevel::LogregOptions o;
    o.hvp_kernel = kernel;
    o.hvp_simd = simd;
    bilevel::LogregProblem p(testdata::to_dataset(PETSC_COMM_WORLD, tr, DataFormat::Sparse),
                             testdata::to_dataset(PETSC_COMM_WORLD, va, DataFormat::Sparse),
                             std::nullopt,
                             o);
    auto x = p.create_upper_vec(), y = p.create_lower_vec(), w = p.create_lower_vec(),
         hw = p.create_lower_vec();
    testdata::fill(x, [](PetscInt j) { return -2.0 + 0.1 * j; });
    testdata::fill(y, [](PetscInt j) { return 0.3 * std::cos(0.7 * j); });
    testdata::fill(w, [](PetscInt j) { return std::sin(0.5 + j); });
    p.lower_hvp(x, y, Batch::all(), w, hw);  // computes the curvature D
    p.lower_hvp(x, y, Batch::all(), w, hw);  // the steady-state kernel
    *used = p.hvp_kernel_used();
    return gather(hw);
  };
  std::string used;
  const auto reference = product("fused", false, &used);
  EXPECT_EQ(used, "fused");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  for (const char* kernel : {"fused", "interleaved", "panel"})
    for (const bool simd : {false, true}) {
      const auto h = product(kernel, simd, &used);
      EXPECT_EQ(used, std::string(kernel) + (simd && avx512 ? "/avx512" : "")) << kernel;
      EXPECT_LT(rel_diff(h, reference), 1e-13) << used;
    }
  // 91 model entries: v and out fit in L2; auto takes the AVX-512 loop except on AMD CPUs, where the
  // portable loops measured faster (docs/performance.md)
  product("auto", true, &used);
  __builtin_cpu_init();
  EXPECT_EQ(used, std::string("fused") + (avx512 && !__builtin_cpu_is("amd") ? "/avx512" : ""));
}
