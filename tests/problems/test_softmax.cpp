#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "bilevel/core/derivative_check.hpp"
#include "bilevel/petsc/comm_counter.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/problems/softmax.hpp"
#include "synthetic.hpp"

namespace {

using bilevel::Batch;
using bilevel::DataFormat;
using testdata::gather;
using testdata::rel_diff;

constexpr PetscInt kClasses = 3;

/// Serial reference: y = [W; bᵀ] row-major, (nf + 1) × K.
struct Reference {
  const testdata::Global& tr;
  bool scalar;
  double mub;

  PetscInt nf() const { return tr.cols; }
  PetscInt K() const { return tr.classes; }
  PetscInt dy() const { return (nf() + 1) * K(); }
  double weight(const std::vector<double>& x, PetscInt j) const {
    if (j / K() >= nf()) return mub;
    return std::exp(scalar ? x[0] : x[static_cast<std::size_t>(j / K())]);
  }
  std::vector<double> probs(PetscInt i, const std::vector<double>& y, double* ce) const {
    std::vector<double> z(static_cast<std::size_t>(K()));
    for (PetscInt k = 0; k < K(); ++k) {
      double s = y[static_cast<std::size_t>(nf() * K() + k)];
      for (PetscInt j = 0; j < nf(); ++j) s += tr.at(i, j) * y[static_cast<std::size_t>(j * K() + k)];
      z[static_cast<std::size_t>(k)] = s;
    }
    double mx = z[0], sum = 0;
    for (double v : z) mx = std::max(mx, v);
    for (double v : z) sum += std::exp(v - mx);
    std::vector<double> p;
    for (double v : z) p.push_back(std::exp(v - mx) / sum);
    *ce = mx + std::log(sum) - z[static_cast<std::size_t>(tr.labels[static_cast<std::size_t>(i)])];
    return p;
  }
  double value(const std::vector<double>& x, const std::vector<double>& y) const {
    double s = 0, ce = 0;
    for (PetscInt i = 0; i < tr.rows; ++i) {
      probs(i, y, &ce);
      s += ce / tr.rows;
    }
    for (PetscInt j = 0; j < dy(); ++j)
      s += 0.5 * weight(x, j) * y[static_cast<std::size_t>(j)] * y[static_cast<std::size_t>(j)];
    return s;
  }
  std::vector<double> hvp(const std::vector<double>& x,
                          const std::vector<double>& y,
                          const std::vector<double>& v) const {
    std::vector<double> out(static_cast<std::size_t>(dy()), 0.0);
    double ce = 0;
    for (PetscInt i = 0; i < tr.rows; ++i) {
      const auto p = probs(i, y, &ce);
      std::vector<double> u(static_cast<std::size_t>(K()), 0.0);
      for (PetscInt k = 0; k < K(); ++k)
        for (PetscInt j = 0; j <= nf(); ++j)
          u[static_cast<std::size_t>(k)] +=
              (j < nf() ? tr.at(i, j) : 1.0) * v[static_cast<std::size_t>(j * K() + k)];
      double pu = 0;
      for (PetscInt k = 0; k < K(); ++k)
        pu += p[static_cast<std::size_t>(k)] * u[static_cast<std::size_t>(k)];
      for (PetscInt j = 0; j <= nf(); ++j)
        for (PetscInt k = 0; k < K(); ++k)
          out[static_cast<std::size_t>(j * K() + k)] += (j < nf() ? tr.at(i, j) : 1.0) *
                                                        p[static_cast<std::size_t>(k)] *
                                                        (u[static_cast<std::size_t>(k)] - pu) / tr.rows;
    }
    for (PetscInt j = 0; j < dy(); ++j)
      out[static_cast<std::size_t>(j)] += weight(x, j) * v[static_cast<std::size_t>(j)];
    return out;
  }
};

using Param = std::tuple<DataFormat, bool>;

class SoftmaxTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    tr_ = testdata::make_global(41, 5, kClasses, 41);
    va_ = testdata::make_global(17, 5, kClasses, 42);
    opts_.scalar = std::get<1>(GetParam());
    opts_.format = std::get<0>(GetParam()) == DataFormat::Dense ? "dense" : "sparse";
    problem_ = std::make_unique<bilevel::SoftmaxProblem>(
        testdata::to_dataset(PETSC_COMM_WORLD, tr_, DataFormat::Sparse),
        testdata::to_dataset(PETSC_COMM_WORLD, va_, DataFormat::Sparse),
        testdata::to_dataset(PETSC_COMM_WORLD, va_, DataFormat::Sparse),
        opts_);
    x_ = problem_->create_upper_vec();
    y_ = problem_->create_lower_vec();
    testdata::fill(x_, [](PetscInt j) { return -1.0 + 0.3 * std::sin(2.0 * j); });
    testdata::fill(y_, [](PetscInt j) { return 0.4 * std::cos(0.9 * j + 0.2); });
  }
  Reference ref() const { return Reference{tr_, opts_.scalar, opts_.bias_weight}; }

  testdata::Global tr_, va_;
  bilevel::SoftmaxOptions opts_;
  std::unique_ptr<bilevel::SoftmaxProblem> problem_;
  bilevel::petsc::VecHandle x_, y_;
};

TEST_P(SoftmaxTest, LowerValueAndHvpMatchASerialComputation) {
  auto& p = *problem_;
  auto w = p.create_lower_vec(), hw = p.create_lower_vec();
  testdata::fill(w, [](PetscInt j) { return std::sin(0.4 * j + 1); });
  const auto r = ref();

  const PetscReal g = p.lower_value(x_, y_, Batch::all());
  p.lower_hvp(x_, y_, Batch::all(), w, hw);

  EXPECT_NEAR(g, r.value(gather(x_), gather(y_)), 1e-12);
  EXPECT_LT(rel_diff(gather(hw), r.hvp(gather(x_), gather(y_), gather(w))), 1e-12);
  EXPECT_EQ(p.format(), std::get<0>(GetParam()));
}

TEST_P(SoftmaxTest, DerivativeCheckerPassesForEveryOracle) {
  bilevel::DerivativeCheckOptions o;
  o.directions = 3;

  const auto report = bilevel::check_derivatives(*problem_, x_, y_, o);

  EXPECT_TRUE(report.passed(1e-6)) << "largest error " << report.max_error();
  for (const auto& e : report.entries) EXPECT_FALSE(e.skipped) << e.oracle << ": " << e.note;
  if (!report.passed(1e-6)) report.print(PETSC_COMM_WORLD);
}

TEST_P(SoftmaxTest, MinibatchHvpMultiMatchesSingleProducts) {
  auto& p = *problem_;
  const std::vector<PetscInt> idx = {0, 1, 7, 20, 21, 33, 40};
  std::vector<bilevel::petsc::VecHandle> in, out, single;
  for (int q = 0; q < 2; ++q) {
    in.push_back(p.create_lower_vec());
    out.push_back(p.create_lower_vec());
    single.push_back(p.create_lower_vec());
    testdata::fill(in.back(), [q](PetscInt j) { return std::cos(0.3 * q + 1.1 * j); });
  }
  std::vector<Vec> vin = {in[0], in[1]}, vout = {out[0], out[1]};

  p.lower_hvp_multi(x_, y_, Batch::of(idx), vin, vout);
  for (int q = 0; q < 2; ++q) p.lower_hvp(x_, y_, Batch::of(idx), in[q], single[q]);

  for (int q = 0; q < 2; ++q) EXPECT_LT(rel_diff(gather(out[q]), gather(single[q])), 1e-13);
}

/// The compressed sparse sides (each rank holds only the model rows its data rows use) in both ways of
/// moving the model: every oracle agrees between owners and gather, and owners returns fewer bytes per
/// HVP than the allreduce of the whole model (so the owners path is the one that ran).
TEST(SoftmaxModelComm, OwnersAndGatherGiveTheSameOraclesAndOwnersSendsLess) {
  MPI_Comm comm = PETSC_COMM_WORLD;
  int P = 1;
  MPI_Comm_size(comm, &P);
  // 40 features at 8% density: each rank's rows use only some of the columns
  const testdata::Global tr = testdata::make_global(23, 40, 4, 7, 0.08),
                         va = testdata::make_global(11, 40, 4, 8, 0.1);
  std::unique_ptr<bilevel::SoftmaxProblem> prob[2];
  for (int k = 0; k < 2; ++k) {
    bilevel::SoftmaxOptions o;
    o.format = "sparse";
    o.model_comm = k == 0 ? "owners" : "gather";
    prob[k] = std::make_unique<bilevel::SoftmaxProblem>(testdata::to_dataset(comm, tr, DataFormat::Sparse),
                                                        testdata::to_dataset(comm, va, DataFormat::Sparse),
                                                        testdata::to_dataset(comm, va, DataFormat::Sparse),
                                                        o);
  }
  const std::vector<PetscInt> idx = {1, 2, 5, 11, 17, 22};
  std::vector<double> val[2], gy[2], gx[2], hv[2], hm[2], fy[2], jv[2];
  double g[2] = {0, 0}, f[2] = {0, 0}, acc[2] = {0, 0};
  std::int64_t reduce_bytes[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    auto& p = *prob[k];
    auto x = p.create_upper_vec(), y = p.create_lower_vec(), w = p.create_lower_vec(),
         w2 = p.create_lower_vec(), o = p.create_lower_vec(), o2 = p.create_lower_vec(),
         ox = p.create_upper_vec();
    testdata::fill(x, [](PetscInt j) { return -1.0 + 0.3 * std::sin(2.0 * j); });
    testdata::fill(y, [](PetscInt j) { return 0.4 * std::cos(0.9 * j + 0.2); });
    testdata::fill(w, [](PetscInt j) { return std::sin(0.4 * j + 1); });
    testdata::fill(w2, [](PetscInt j) { return std::cos(0.7 * j); });
    g[k] = p.lower_value(x, y, Batch::all());
    p.lower_grad_y(x, y, Batch::all(), o);
    gy[k] = gather(o);
    p.lower_grad_x(x, y, Batch::all(), ox);
    gx[k] = gather(ox);
    p.lower_hvp(x, y, Batch::all(), w, o);  // y seen: only the direction moves in the next one
    const bilevel::petsc::CommBytes before = bilevel::petsc::comm_bytes_sent();
    p.lower_hvp(x, y, Batch::all(), w, o);
    const bilevel::petsc::CommBytes after = bilevel::petsc::comm_bytes_sent();
    const auto r = static_cast<std::size_t>(bilevel::petsc::CommPhase::Reduce);
    reduce_bytes[k] = after[r] - before[r];
    hv[k] = gather(o);
    std::vector<Vec> vin = {w, w2}, vout = {o, o2};
    p.lower_hvp_multi(x, y, Batch::of(idx), vin, vout);
    hm[k] = gather(o);
    const auto more = gather(o2);
    hm[k].insert(hm[k].end(), more.begin(), more.end());
    p.lower_jvp(x, y, Batch::all(), w, ox);
    jv[k] = gather(ox);
    f[k] = p.upper_value(x, y, Batch::all());
    p.upper_grad(x, y, Batch::all(), nullptr, o);
    fy[k] = gather(o);
    acc[k] = p.evaluate_test(x, y).accuracy.value_or(-1);
  }
  EXPECT_NEAR(g[0], g[1], 1e-13 * std::abs(g[1]));
  EXPECT_NEAR(f[0], f[1], 1e-13 * std::abs(f[1]));
  EXPECT_EQ(acc[0], acc[1]);
  EXPECT_GE(acc[0], 0.0);
  EXPECT_LT(rel_diff(gy[0], gy[1]), 1e-13);
  EXPECT_LT(rel_diff(gx[0], gx[1]), 1e-13);
  EXPECT_LT(rel_diff(hv[0], hv[1]), 1e-13);
  EXPECT_LT(rel_diff(hm[0], hm[1]), 1e-13);
  EXPECT_LT(rel_diff(jv[0], jv[1]), 1e-13);
  EXPECT_LT(rel_diff(fy[0], fy[1]), 1e-13);
  // gather: an allreduce of the whole model (dy = 41 · 4 entries); owners: only entries owned elsewhere
  if (P > 1) {
    EXPECT_LT(reduce_bytes[0], reduce_bytes[1]);
    EXPECT_GT(reduce_bytes[0], 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants,
                         SoftmaxTest,
                         ::testing::Combine(::testing::Values(DataFormat::Sparse, DataFormat::Dense),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(std::get<0>(info.param) == DataFormat::Sparse ? "Sparse"
                                                                                            : "Dense") +
                                  (std::get<1>(info.param) ? "Scalar" : "PerFeature");
                         });

}  // namespace
