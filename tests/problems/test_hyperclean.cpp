#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/derivative_check.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "synthetic.hpp"

namespace {

using bilevel::Batch;
using bilevel::DataFormat;
using testdata::gather;
using testdata::rel_diff;

constexpr PetscInt kClasses = 4;

/// Serial reference of the hyperclean oracles (y = [W; bᵀ] row-major, (nf + 1) × K).
struct Reference {
  const testdata::Global& tr;
  const testdata::Global& va;
  std::vector<PetscInt> noisy;  // corrupted training labels (global)
  double mu, mu_b;

  PetscInt nf() const { return tr.cols; }
  PetscInt K() const { return tr.classes; }
  PetscInt dy() const { return (nf() + 1) * K(); }
  std::vector<double> z(const testdata::Global& g, PetscInt i, const std::vector<double>& y) const {
    std::vector<double> out(static_cast<std::size_t>(K()));
    for (PetscInt k = 0; k < K(); ++k) {
      double s = y[static_cast<std::size_t>(nf() * K() + k)];
      for (PetscInt j = 0; j < nf(); ++j) s += g.at(i, j) * y[static_cast<std::size_t>(j * K() + k)];
      out[static_cast<std::size_t>(k)] = s;
    }
    return out;
  }
  std::vector<double> softmax(const std::vector<double>& z, double* lse) const {
    double mx = z[0];
    for (double v : z) mx = std::max(mx, v);
    double s = 0;
    for (double v : z) s += std::exp(v - mx);
    std::vector<double> p;
    for (double v : z) p.push_back(std::exp(v - mx) / s);
    *lse = mx + std::log(s);
    return p;
  }
  static double sig(double t) { return 1 / (1 + std::exp(-t)); }
  double reg(const std::vector<double>& y) const {
    double r = 0;
    for (PetscInt j = 0; j < dy(); ++j)
      r += 0.5 * (j < nf() * K() ? mu : mu_b) * y[static_cast<std::size_t>(j)] *
           y[static_cast<std::size_t>(j)];
    return r;
  }
  double g_value(const std::vector<double>& x,
                 const std::vector<double>& y,
                 const std::vector<PetscInt>& rows) const {
    double s = 0;
    for (PetscInt i : rows) {
      double lse = 0;
      const auto zz = z(tr, i, y);
      softmax(zz, &lse);
      s += sig(x[static_cast<std::size_t>(i)]) *
           (lse - zz[static_cast<std::size_t>(noisy[static_cast<std::size_t>(i)])]);
    }
    return s / static_cast<double>(rows.size()) + reg(y);
  }
  std::vector<double> g_grad(const std::vector<double>& x,
                             const std::vector<double>& y,
                             const std::vector<PetscInt>& rows) const {
    std::vector<double> out(static_cast<std::size_t>(dy()), 0.0);
    for (PetscInt i : rows) {
      double lse = 0;
      auto p = softmax(z(tr, i, y), &lse);
      p[static_cast<std::size_t>(noisy[static_cast<std::size_t>(i)])] -= 1;
      const double w = sig(x[static_cast<std::size_t>(i)]) / static_cast<double>(rows.size());
      for (PetscInt j = 0; j <= nf(); ++j)
        for (PetscInt k = 0; k < K(); ++k)
          out[static_cast<std::size_t>(j * K() + k)] +=
              w * (j < nf() ? tr.at(i, j) : 1.0) * p[static_cast<std::size_t>(k)];
    }
    for (PetscInt j = 0; j < dy(); ++j)
      out[static_cast<std::size_t>(j)] += (j < nf() * K() ? mu : mu_b) * y[static_cast<std::size_t>(j)];
    return out;
  }
  /// The dense Hessian: (1/n) Σ σ(x_i) (a'_i a'_iᵀ) ⊗ (diag p − p pᵀ) + diag(μ, μ_b).
  std::vector<double> hessian(const std::vector<double>& x,
                              const std::vector<double>& y,
                              const std::vector<PetscInt>& rows) const {
    const PetscInt n = dy();
    std::vector<double> h(static_cast<std::size_t>(n * n), 0.0);
    for (PetscInt i : rows) {
      double lse = 0;
      const auto p = softmax(z(tr, i, y), &lse);
      const double w = sig(x[static_cast<std::size_t>(i)]) / static_cast<double>(rows.size());
      for (PetscInt r = 0; r < n; ++r)
        for (PetscInt c = 0; c < n; ++c) {
          const PetscInt jr = r / K(), kr = r % K(), jc = c / K(), kc = c % K();
          const double ar = jr < nf() ? tr.at(i, jr) : 1.0, ac = jc < nf() ? tr.at(i, jc) : 1.0;
          const double s = (kr == kc ? p[static_cast<std::size_t>(kr)] : 0.0) -
                           p[static_cast<std::size_t>(kr)] * p[static_cast<std::size_t>(kc)];
          h[static_cast<std::size_t>(r * n + c)] += w * ar * ac * s;
        }
    }
    for (PetscInt j = 0; j < n; ++j) h[static_cast<std::size_t>(j * n + j)] += j < nf() * K() ? mu : mu_b;
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
  /// (J w)_i = σ'(x_i)/n · u_i·(p_i − e_l) on the batch rows.
  std::vector<double> jvp(const std::vector<double>& x,
                          const std::vector<double>& y,
                          const std::vector<double>& w,
                          const std::vector<PetscInt>& rows) const {
    std::vector<double> out(static_cast<std::size_t>(tr.rows), 0.0);
    for (PetscInt i : rows) {
      double lse = 0;
      auto p = softmax(z(tr, i, y), &lse);
      p[static_cast<std::size_t>(noisy[static_cast<std::size_t>(i)])] -= 1;
      const auto u = z(tr, i, w);
      double d = 0;
      for (PetscInt k = 0; k < K(); ++k) d += u[static_cast<std::size_t>(k)] * p[static_cast<std::size_t>(k)];
      const double s = sig(x[static_cast<std::size_t>(i)]);
      out[static_cast<std::size_t>(i)] += s * (1 - s) / static_cast<double>(rows.size()) * d;
    }
    return out;
  }
  static std::vector<PetscInt> all(const testdata::Global& g) {
    std::vector<PetscInt> r;
    for (PetscInt i = 0; i < g.rows; ++i) r.push_back(i);
    return r;
  }
};

class HypercleanTest : public ::testing::TestWithParam<DataFormat> {
 protected:
  void SetUp() override {
    tr_ = testdata::make_global(47, 6, kClasses, 11);
    va_ = testdata::make_global(23, 6, kClasses, 12);
    te_ = testdata::make_global(19, 6, kClasses, 13);
    opts_.mu = 0.03;
    opts_.mu_bias = 0.002;
    opts_.corruption = 0.4;
    opts_.seed = 7;
    opts_.format = GetParam() == DataFormat::Dense ? "dense" : "sparse";
    problem_ = std::make_unique<bilevel::HypercleanProblem>(
        testdata::to_dataset(PETSC_COMM_WORLD, tr_, DataFormat::Sparse),
        testdata::to_dataset(PETSC_COMM_WORLD, va_, DataFormat::Sparse),
        testdata::to_dataset(PETSC_COMM_WORLD, te_, DataFormat::Sparse),
        opts_);
    x_ = problem_->create_upper_vec();
    y_ = problem_->create_lower_vec();
    testdata::fill(x_, [](PetscInt i) { return 1.5 * std::sin(0.9 * i + 0.2); });
    testdata::fill(y_, [](PetscInt j) { return 0.5 * std::cos(1.3 * j + 0.4); });
  }
  Reference ref() const {
    Reference r{tr_, va_, {}, opts_.mu, opts_.bias_weight()};
    for (PetscInt i = 0; i < tr_.rows; ++i)
      r.noisy.push_back(bilevel::corrupt_label(
          opts_.seed, opts_.corruption, i, tr_.labels[static_cast<std::size_t>(i)], kClasses));
    return r;
  }

  testdata::Global tr_, va_, te_;
  bilevel::HypercleanOptions opts_;
  std::unique_ptr<bilevel::HypercleanProblem> problem_;
  bilevel::petsc::VecHandle x_, y_;
};

TEST_P(HypercleanTest, StoresTheRequestedFormatAndLayouts) {
  PetscInt nx = 0, ny = 0;
  VecGetSize(x_, &nx);
  VecGetSize(y_, &ny);

  EXPECT_EQ(problem_->format(), GetParam());
  EXPECT_EQ(nx, tr_.rows);
  EXPECT_EQ(ny, (tr_.cols + 1) * kClasses);
}

TEST_P(HypercleanTest, ValuesAndGradientsMatchASerialComputation) {
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
  for (PetscInt i = 0; i < tr_.rows; ++i) {
    double lse = 0;
    const auto zz = r.z(tr_, i, y);
    r.softmax(zz, &lse);
    const double s = Reference::sig(x[static_cast<std::size_t>(i)]);
    gx_ref.push_back(s * (1 - s) *
                     (lse - zz[static_cast<std::size_t>(r.noisy[static_cast<std::size_t>(i)])]) / tr_.rows);
  }
  EXPECT_LT(rel_diff(gather(gx), gx_ref), 1e-12);
  // f = mean CE on the (clean) validation rows: the reference with weights σ = 1 and no regulariser
  double fref = 0;
  std::vector<double> fyref(static_cast<std::size_t>(r.dy()), 0.0);
  for (PetscInt i = 0; i < va_.rows; ++i) {
    double lse = 0;
    const auto zz = r.z(va_, i, y);
    auto pp = r.softmax(zz, &lse);
    const PetscInt l = va_.labels[static_cast<std::size_t>(i)];
    fref += (lse - zz[static_cast<std::size_t>(l)]) / va_.rows;
    pp[static_cast<std::size_t>(l)] -= 1;
    for (PetscInt j = 0; j <= va_.cols; ++j)
      for (PetscInt k = 0; k < kClasses; ++k)
        fyref[static_cast<std::size_t>(j * kClasses + k)] +=
            (j < va_.cols ? va_.at(i, j) : 1.0) * pp[static_cast<std::size_t>(k)] / va_.rows;
  }
  EXPECT_NEAR(f, fref, 1e-12);
  EXPECT_LT(rel_diff(gather(fy), fyref), 1e-12);
}

TEST_P(HypercleanTest, HvpMatchesTheExplicitHessianAndFollowsAModelChangedInPlace) {
  auto& p = *problem_;
  auto w = p.create_lower_vec(), hw = p.create_lower_vec(), gy = p.create_lower_vec();
  testdata::fill(w, [](PetscInt j) { return std::sin(0.5 + j); });
  const auto r = ref();
  const auto x = gather(x_);
  const auto all = Reference::all(tr_);

  p.lower_hvp(x_, y_, Batch::all(), w, hw);  // probabilities not cached yet: computed in the same pass
  const double first = rel_diff(gather(hw), r.times(r.hessian(x, gather(y_), all), gather(w)));
  p.lower_hvp(x_, y_, Batch::all(), w, hw);  // cached
  const double cached = rel_diff(gather(hw), r.times(r.hessian(x, gather(y_), all), gather(w)));
  VecScale(y_, -1.3);
  p.lower_grad_y(x_, y_, Batch::all(), gy);
  p.lower_hvp(x_, y_, Batch::all(), w, hw);
  const double moved = rel_diff(gather(hw), r.times(r.hessian(x, gather(y_), all), gather(w)));
  VecScale(x_, 0.5);  // new weights, same model
  p.lower_hvp(x_, y_, Batch::all(), w, hw);
  const double reweighted = rel_diff(gather(hw), r.times(r.hessian(gather(x_), gather(y_), all), gather(w)));

  EXPECT_LT(first, 1e-12);
  EXPECT_LT(cached, 1e-12);
  EXPECT_LT(moved, 1e-12);
  EXPECT_LT(reweighted, 1e-12);
}

TEST_P(HypercleanTest, MinibatchOraclesMatchASerialComputationOnTheBatchRows) {
  auto& p = *problem_;
  const std::vector<PetscInt> idx = {1, 2, 5, 15, 16, 17, 30, 31, 46};
  const Batch batch = Batch::of(idx);
  auto gy = p.create_lower_vec(), w = p.create_lower_vec(), hw = p.create_lower_vec(),
       jw = p.create_upper_vec();
  testdata::fill(w, [](PetscInt j) { return 1.0 - 0.05 * j; });
  const auto r = ref();
  const auto x = gather(x_), y = gather(y_);

  const PetscReal g = p.lower_value(x_, y_, batch);
  p.lower_grad_y(x_, y_, batch, gy);
  VecScale(y_, 0.7);  // minibatch HVP and JVP at a model whose probabilities are not cached
  const auto y2 = gather(y_);
  p.lower_hvp(x_, y_, batch, w, hw);
  p.lower_jvp(x_, y_, batch, w, jw);

  EXPECT_NEAR(g, r.g_value(x, y, idx), 1e-12);
  EXPECT_LT(rel_diff(gather(gy), r.g_grad(x, y, idx)), 1e-12);
  EXPECT_LT(rel_diff(gather(hw), r.times(r.hessian(x, y2, idx), gather(w))), 1e-12);
  EXPECT_LT(rel_diff(gather(jw), r.jvp(x, y2, gather(w), idx)), 1e-12);
}

TEST_P(HypercleanTest, JvpMatchesTheCrossDerivativeOnTheFullBatch) {
  auto& p = *problem_;
  auto w = p.create_lower_vec(), jw = p.create_upper_vec(), gy = p.create_lower_vec();
  testdata::fill(w, [](PetscInt j) { return std::cos(0.7 * j); });
  const auto r = ref();

  p.lower_grad_y(x_, y_, Batch::all(), gy);  // probabilities cached
  p.lower_jvp(x_, y_, Batch::all(), w, jw);

  EXPECT_LT(rel_diff(gather(jw), r.jvp(gather(x_), gather(y_), gather(w), Reference::all(tr_))), 1e-12);
}

TEST_P(HypercleanTest, HvpMultiMatchesSingleProducts) {
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
}

TEST_P(HypercleanTest, DerivativeCheckerPassesForEveryOracle) {
  bilevel::DerivativeCheckOptions o;
  o.directions = 3;

  const auto report = bilevel::check_derivatives(*problem_, x_, y_, o);

  EXPECT_TRUE(report.passed(1e-6)) << "largest error " << report.max_error();
  for (const auto& e : report.entries) EXPECT_FALSE(e.skipped) << e.oracle << ": " << e.note;
  if (!report.passed(1e-6)) report.print(PETSC_COMM_WORLD);
}

TEST_P(HypercleanTest, TestMetricsMatchASerialComputation) {
  const auto r = ref();
  const auto y = gather(y_);
  double loss = 0, acc = 0;
  for (PetscInt i = 0; i < te_.rows; ++i) {
    double lse = 0;
    const auto zz = r.z(te_, i, y);
    r.softmax(zz, &lse);
    const PetscInt l = te_.labels[static_cast<std::size_t>(i)];
    loss += (lse - zz[static_cast<std::size_t>(l)]) / te_.rows;
    acc += (std::max_element(zz.begin(), zz.end()) - zz.begin() == l) ? 1.0 / te_.rows : 0.0;
  }

  const auto m = problem_->evaluate_test(x_, y_);

  EXPECT_NEAR(m.loss, loss, 1e-12);
  ASSERT_TRUE(m.accuracy.has_value());
  EXPECT_NEAR(*m.accuracy, acc, 1e-12);
}

TEST_P(HypercleanTest, FitDrivesTheUniformlyWeightedGradientToZero) {
  auto& p = *problem_;
  auto y = p.create_lower_vec(), x = p.create_upper_vec(), g = p.create_lower_vec();
  VecSet(y, 0.0);
  VecSet(x, 40.0);  // σ(40) = 1 to double precision: g with uniform weights

  const auto report = p.fit(y, bilevel::FitWeights::Uniform, 1e-7, 500);
  p.lower_grad_y(x, y, Batch::all(), g);
  PetscReal gn = 1;
  VecNorm(g, NORM_2, &gn);

  EXPECT_TRUE(report.converged);
  EXPECT_GT(report.iterations, 0);
  EXPECT_LT(gn, 1e-7);
}

TEST_P(HypercleanTest, FitWithSigmoidWeightsSolvesTheLowerLevelAtX) {
  auto& p = *problem_;
  auto y = p.create_lower_vec(), g = p.create_lower_vec();
  VecSet(y, 0.0);

  const auto report = p.fit(y, bilevel::FitWeights::Sigmoid, 1e-8, 500, x_);
  p.lower_grad_y(x_, y, Batch::all(), g);
  PetscReal gn = 1;
  VecNorm(g, NORM_2, &gn);

  EXPECT_TRUE(report.converged);
  EXPECT_LT(gn, 1e-8);
  EXPECT_EQ(p.counts().grad_g, 1);  // the fit itself is not counted
}

// M = ((c G + μ) ⊗ I_K)⁻¹ is symmetric positive definite, and CG preconditioned with it (the default of
// every KSP on the lower Hessian) reaches the same solution of H v = b as plain CG.
TEST_P(HypercleanTest, PreconditionerIsSpdAndPcgSolvesTheHessianSystem) {
  auto& p = *problem_;
  ASSERT_TRUE(bilevel::has(p.capabilities(), bilevel::Capability::LowerPreconditioner));
  auto u = p.create_lower_vec(), w = p.create_lower_vec(), mu = p.create_lower_vec(),
       mw = p.create_lower_vec(), b = p.create_lower_vec(), v_pc = p.create_lower_vec(),
       v_plain = p.create_lower_vec();
  testdata::fill(u, [](PetscInt j) { return std::sin(0.7 * j + 0.1); });
  testdata::fill(w, [](PetscInt j) { return std::cos(0.3 * j * j + 0.5); });
  p.lower_grad_y(x_, y_, Batch::all(), b);  // also caches the probabilities at y_
  p.lower_preconditioner_setup(x_, y_);
  p.lower_precondition(u, mu);
  p.lower_precondition(w, mw);
  PetscReal umw = 0, wmu = 0, umu = 0;
  VecDot(u, mw, &umw);
  VecDot(w, mu, &wmu);
  VecDot(u, mu, &umu);
  EXPECT_NEAR(umw, wmu, 1e-10 * (std::abs(umw) + std::abs(wmu)));
  EXPECT_GT(umu, 0);

  PetscInt its_pc = 0, its_plain = 0;
  {
    bilevel::CgLinearSolver pcg(p, y_, 500, 1e-11);
    PC pc = nullptr;
    KSPGetPC(pcg.ksp(), &pc);
    PCType type = nullptr;
    PCGetType(pc, &type);
    EXPECT_STREQ(type, PCSHELL);
    VecSet(v_pc, 0.0);
    its_pc = pcg.solve(x_, y_, Batch::all(), b, v_pc);
  }
  PetscOptionsSetValue(nullptr, "-bilevel_hyper_pc_type", "none");
  {
    bilevel::CgLinearSolver cg(p, y_, 500, 1e-11);
    VecSet(v_plain, 0.0);
    its_plain = cg.solve(x_, y_, Batch::all(), b, v_plain);
  }
  PetscOptionsClearValue(nullptr, "-bilevel_hyper_pc_type");
  EXPECT_GT(its_pc, 0);
  EXPECT_GT(its_plain, 0);
  PetscReal diff = 0, norm = 0;
  VecNorm(v_pc, NORM_2, &norm);
  VecAXPY(v_plain, -1.0, v_pc);
  VecNorm(v_plain, NORM_2, &diff);
  EXPECT_LT(diff, 1e-7 * norm);
}

// The cheap preconditioner (PreconditionerKind::Cheap) at full rank r = nf + 1 is the exact inverse of the
// Kronecker model P_c = G ⊗ C + μ I, G = (1/n) Σ a'_i a'_iᵀ, C = (1/n) Σ σ(x_i)(diag(p_i) − p_i p_iᵀ) at the
// cached probabilities (built here serially: P_c M u = u). Truncated (r = 2) it stays symmetric with
// 0 < uᵀ M u ≤ uᵀ P_c⁻¹ u. lower_precondition_multi gives the single applications of either kind.
TEST_P(HypercleanTest, CheapPreconditionerInvertsTheKroneckerModelAtFullRankAndStaysBelowItWhenTruncated) {
  bilevel::HypercleanOptions o = opts_;
  o.mu_bias = -1;  // the cheap form takes μ_b = μ
  auto make = [&](PetscInt rank) {
    o.cheap_preconditioner_rank = rank;
    return std::make_unique<bilevel::HypercleanProblem>(
        testdata::to_dataset(PETSC_COMM_WORLD, tr_, DataFormat::Sparse),
        testdata::to_dataset(PETSC_COMM_WORLD, va_, DataFormat::Sparse),
        std::nullopt,
        o);
  };
  const PetscInt nf = tr_.cols, n1 = nf + 1, K = kClasses, n = tr_.rows;
  auto full = make(n1), truncated = make(2);
  auto u = full->create_lower_vec(), w = full->create_lower_vec(), g = full->create_lower_vec();
  testdata::fill(u, [](PetscInt j) { return std::sin(0.7 * j + 0.1); });
  testdata::fill(w, [](PetscInt j) { return std::cos(0.3 * j * j + 0.5); });
  struct Applied {
    std::vector<double> mu;
    PetscReal umu = 0, wmu = 0, umw = 0;
  };
  auto apply = [&](bilevel::HypercleanProblem& p, bilevel::PreconditionerKind kind) {
    auto mu = p.create_lower_vec(), mw = p.create_lower_vec(), m2u = p.create_lower_vec(),
         m2w = p.create_lower_vec();
    p.lower_grad_y(x_, y_, Batch::all(), g);  // caches the probabilities at y_
    p.lower_preconditioner_setup(x_, y_, kind);
    p.lower_precondition(u, mu);
    p.lower_precondition(w, mw);
    const Vec in[] = {u, w}, out[] = {m2u, m2w};
    p.lower_precondition_multi(in, out);
    EXPECT_LT(rel_diff(gather(m2u), gather(mu)), 1e-13);
    EXPECT_LT(rel_diff(gather(m2w), gather(mw)), 1e-13);
    Applied a;
    a.mu = gather(mu);
    VecDot(u, mu, &a.umu);
    VecDot(w, mu, &a.wmu);
    VecDot(u, mw, &a.umw);
    return a;
  };
  apply(*full, bilevel::PreconditionerKind::Accurate);
  const Applied kron = apply(*full, bilevel::PreconditionerKind::Cheap);
  const Applied cut = apply(*truncated, bilevel::PreconditionerKind::Cheap);

  // Serial P_c (row-major y index j K + k) applied to M u.
  const Reference r = ref();
  const auto x = gather(x_), y = gather(y_);
  std::vector<double> G(static_cast<std::size_t>(n1 * n1), 0.0), C(static_cast<std::size_t>(K * K), 0.0);
  for (PetscInt i = 0; i < n; ++i) {
    std::vector<double> ai(static_cast<std::size_t>(n1), 1.0);
    for (PetscInt j = 0; j < nf; ++j) ai[static_cast<std::size_t>(j)] = tr_.at(i, j);
    for (PetscInt j = 0; j < n1; ++j)
      for (PetscInt l = 0; l < n1; ++l)
        G[static_cast<std::size_t>(j * n1 + l)] +=
            ai[static_cast<std::size_t>(j)] * ai[static_cast<std::size_t>(l)] / n;
    double lse = 0;
    const auto p = r.softmax(r.z(tr_, i, y), &lse);
    const double wi = Reference::sig(x[static_cast<std::size_t>(i)]) / n;
    for (PetscInt a = 0; a < K; ++a) {
      C[static_cast<std::size_t>(a * K + a)] += wi * p[static_cast<std::size_t>(a)];
      for (PetscInt b = 0; b < K; ++b)
        C[static_cast<std::size_t>(a * K + b)] -=
            wi * p[static_cast<std::size_t>(a)] * p[static_cast<std::size_t>(b)];
    }
  }
  const auto uu = gather(u);
  std::vector<double> back(uu.size(), 0.0);
  for (PetscInt j = 0; j < n1; ++j)
    for (PetscInt k = 0; k < K; ++k) {
      double v = o.mu * kron.mu[static_cast<std::size_t>(j * K + k)];
      for (PetscInt l = 0; l < n1; ++l)
        for (PetscInt m = 0; m < K; ++m)
          v += G[static_cast<std::size_t>(j * n1 + l)] * C[static_cast<std::size_t>(k * K + m)] *
               kron.mu[static_cast<std::size_t>(l * K + m)];
      back[static_cast<std::size_t>(j * K + k)] = v;
    }
  EXPECT_LT(rel_diff(back, uu), 1e-9);
  EXPECT_GT(rel_diff(cut.mu, kron.mu), 1e-3);  // rank 2 of 7 is a different operator
  EXPECT_NEAR(cut.wmu, cut.umw, 1e-10 * (std::abs(cut.wmu) + std::abs(cut.umw)));
  EXPECT_GT(cut.umu, 0);
  EXPECT_LE(cut.umu, kron.umu * (1 + 1e-12));
}

// initial_point starts a new run: a problem that has already run (its probability cache and preconditioners
// filled at another y) then builds the same M at the initial point as a fresh problem. bilevel-bench reuses
// one problem for every run; before this reset, pzobo's runs there depended on the run before them.
TEST_P(HypercleanTest, InitialPointResetsTheRunStateSoAReusedProblemBuildsTheFreshPreconditioner) {
  auto fresh = std::make_unique<bilevel::HypercleanProblem>(
      testdata::to_dataset(PETSC_COMM_WORLD, tr_, DataFormat::Sparse),
      testdata::to_dataset(PETSC_COMM_WORLD, va_, DataFormat::Sparse),
      std::nullopt,
      opts_);
  auto u = problem_->create_lower_vec(), g = problem_->create_lower_vec();
  testdata::fill(u, [](PetscInt j) { return std::sin(0.7 * j + 0.1); });
  for (auto kind : {bilevel::PreconditionerKind::Cheap, bilevel::PreconditionerKind::Accurate}) {
    auto apply = [&](bilevel::HypercleanProblem& p, Vec x, Vec y) {
      auto mu = p.create_lower_vec();
      p.lower_preconditioner_setup(x, y, kind);
      p.lower_precondition(u, mu);
      return gather(mu);
    };
    auto x0 = problem_->create_upper_vec(), y0 = problem_->create_lower_vec();
    fresh->initial_point(x0, y0);
    const std::vector<double> expected = apply(*fresh, x0, y0);
    problem_->lower_grad_y(x_, y_, Batch::all(), g);  // a previous run: probabilities cached at y_
    const std::vector<double> elsewhere = apply(*problem_, x_, y_);
    problem_->initial_point(x0, y0);
    const std::vector<double> reused = apply(*problem_, x0, y0);
    EXPECT_GT(rel_diff(elsewhere, expected), 1e-2);  // the state the reset has to undo
    EXPECT_LT(rel_diff(reused, expected), 1e-13);
  }
}

TEST_P(HypercleanTest, DetectionCountsFlaggedCorruptedSamples) {
  auto& p = *problem_;
  auto x = p.create_upper_vec();
  const auto r = ref();
  // flag exactly the corrupted rows, plus row 0 if it is clean
  testdata::fill(x, [&](PetscInt i) {
    const bool corrupted = r.noisy[static_cast<std::size_t>(i)] != tr_.labels[static_cast<std::size_t>(i)];
    return corrupted || i == 0 ? -1.0 : 1.0;
  });
  PetscInt corrupted = 0;
  for (PetscInt i = 0; i < tr_.rows; ++i)
    corrupted += r.noisy[static_cast<std::size_t>(i)] != tr_.labels[static_cast<std::size_t>(i)];
  const bool row0_clean = r.noisy[0] == tr_.labels[0];

  const auto d = p.detection(x);

  EXPECT_EQ(d.corrupted, corrupted);
  EXPECT_EQ(p.corrupted_count(), corrupted);
  EXPECT_EQ(d.true_positives, corrupted);
  EXPECT_EQ(d.flagged, corrupted + (row0_clean ? 1 : 0));
  EXPECT_DOUBLE_EQ(d.recall, 1.0);
}

INSTANTIATE_TEST_SUITE_P(Formats,
                         HypercleanTest,
                         ::testing::Values(DataFormat::Sparse, DataFormat::Dense),
                         [](const ::testing::TestParamInfo<DataFormat>& info) {
                           return std::string(info.param == DataFormat::Sparse ? "Sparse" : "Dense");
                         });

TEST(HypercleanCorruption, ChangesTheExpectedFractionAndNeverKeepsTheClass) {
  const PetscInt n = 20000, K = 10;
  const double p = 0.5;
  PetscInt changed = 0;
  std::vector<PetscInt> per_offset(K, 0);
  bool same = false;

  for (PetscInt i = 0; i < n; ++i) {
    const PetscInt clean = i % K, noisy = bilevel::corrupt_label(3, p, i, clean, K);
    if (noisy != clean) {
      ++changed;
      ++per_offset[static_cast<std::size_t>((noisy - clean + K) % K)];
    }
    same = same || (noisy < 0 || noisy >= K);
  }

  // binomial(n, p): 5 standard deviations
  EXPECT_NEAR(static_cast<double>(changed), p * n, 5 * std::sqrt(n * p * (1 - p)));
  EXPECT_FALSE(same);
  EXPECT_EQ(per_offset[0], 0);
  for (PetscInt o = 1; o < K; ++o)  // the new class is uniform over the K − 1 others
    EXPECT_NEAR(static_cast<double>(per_offset[static_cast<std::size_t>(o)]),
                changed / (K - 1.0),
                5 * std::sqrt(changed / (K - 1.0)));
}

TEST(HypercleanCorruption, TheProblemsNoisyLabelsDependOnlyOnTheSeedAndTheGlobalRow) {
  const auto tr = testdata::make_global(301, 5, 10, 21), va = testdata::make_global(40, 5, 10, 22);
  bilevel::HypercleanOptions o;
  o.corruption = 0.5;
  o.seed = 99;
  bilevel::HypercleanProblem p(testdata::to_dataset(PETSC_COMM_WORLD, tr, DataFormat::Dense),
                               testdata::to_dataset(PETSC_COMM_WORLD, va, DataFormat::Dense),
                               std::nullopt,
                               o);
  auto labels = p.create_upper_vec();
  PetscInt lo = 0, hi = 0;
  VecGetOwnershipRange(labels, &lo, &hi);
  {
    bilevel::petsc::WriteView w(labels);
    for (PetscInt i = lo; i < hi; ++i)
      w[i - lo] = static_cast<double>(p.noisy_labels()[static_cast<std::size_t>(i - lo)]);
  }

  const auto all = gather(labels);

  PetscInt changed = 0;
  for (PetscInt i = 0; i < tr.rows; ++i) {
    const PetscInt clean = tr.labels[static_cast<std::size_t>(i)];
    EXPECT_EQ(static_cast<PetscInt>(all[static_cast<std::size_t>(i)]),
              bilevel::corrupt_label(99, 0.5, i, clean, 10));
    changed += static_cast<PetscInt>(all[static_cast<std::size_t>(i)]) != clean;
  }
  EXPECT_EQ(p.corrupted_count(), changed);
  EXPECT_GT(changed, 100);
  EXPECT_LT(changed, 200);
}

TEST(HypercleanProblem, DenseAndSparseStorageGiveTheSameOracles) {
  const auto tr = testdata::make_global(37, 8, 3, 31), va = testdata::make_global(15, 8, 3, 32);
  bilevel::HypercleanOptions o;
  o.format = "dense";
  bilevel::HypercleanProblem dense(testdata::to_dataset(PETSC_COMM_WORLD, tr, DataFormat::Sparse),
                                   testdata::to_dataset(PETSC_COMM_WORLD, va, DataFormat::Sparse),
                                   std::nullopt,
                                   o);
  o.format = "sparse";
  bilevel::HypercleanProblem sparse(testdata::to_dataset(PETSC_COMM_WORLD, tr, DataFormat::Dense),
                                    testdata::to_dataset(PETSC_COMM_WORLD, va, DataFormat::Dense),
                                    std::nullopt,
                                    o);
  auto x = dense.create_upper_vec(), y = dense.create_lower_vec(), w = dense.create_lower_vec();
  auto a = dense.create_lower_vec(), b = dense.create_lower_vec();
  testdata::fill(x, [](PetscInt i) { return std::sin(1.0 * i); });
  testdata::fill(y, [](PetscInt j) { return 0.3 * std::cos(1.0 * j); });
  testdata::fill(w, [](PetscInt j) { return 0.1 * j - 1; });

  dense.lower_hvp(x, y, Batch::all(), w, a);
  sparse.lower_hvp(x, y, Batch::all(), w, b);
  const double hvp_diff = rel_diff(gather(a), gather(b));
  dense.upper_grad(x, y, Batch::all(), nullptr, a);
  sparse.upper_grad(x, y, Batch::all(), nullptr, b);

  EXPECT_EQ(dense.format(), DataFormat::Dense);
  EXPECT_EQ(sparse.format(), DataFormat::Sparse);
  EXPECT_LT(hvp_diff, 1e-13);
  EXPECT_LT(rel_diff(gather(a), gather(b)), 1e-13);
  EXPECT_NEAR(dense.lower_value(x, y, Batch::all()), sparse.lower_value(x, y, Batch::all()), 1e-13);
}

}  // namespace

namespace {

/// A scratch folder shared by the ranks (named after rank 0's process id). Collective.
std::filesystem::path scratch_dir() {
  long id = 0;
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  if (rank == 0) id = static_cast<long>(getpid());
  MPI_Bcast(&id, 1, MPI_LONG, 0, PETSC_COMM_WORLD);
  return std::filesystem::temp_directory_path() / ("bilevel_problems_" + std::to_string(id));
}

/// Writes `text` to a scratch file on rank 0 (shared by all ranks) and returns its path. Collective.
std::string scratch_file(const std::string& name, const std::string& text) {
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  const auto dir = scratch_dir();
  const auto path = dir / name;
  if (rank == 0) {
    std::filesystem::create_directories(dir);
    std::ofstream(path) << text;
  }
  MPI_Barrier(PETSC_COMM_WORLD);
  return path.string();
}

/// Removes the scratch folder once every rank is done with it. Collective.
void remove_scratch() {
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  const auto dir = scratch_dir();
  MPI_Barrier(PETSC_COMM_WORLD);
  if (rank == 0) std::filesystem::remove_all(dir);
}

/// `rows` LIBSVM lines with labels cycling through `labels` and 1-based features 1..4.
std::string libsvm_rows(PetscInt rows, const std::vector<int>& labels) {
  std::string s;
  for (PetscInt i = 0; i < rows; ++i) {
    s += std::to_string(labels[static_cast<std::size_t>(i) % labels.size()]);
    for (int j = 1; j <= 4; ++j)
      if ((i + j) % 3 != 0) s += " " + std::to_string(j) + ":" + std::to_string(0.1 * ((i * 7 + j * 3) % 11));
    s += "\n";
  }
  return s;
}

TEST(HypercleanFiles, LibsvmTrainingFileIsSplitIntoTrainingAndValidationRows) {
  const auto train = scratch_file("hc_train.svm", libsvm_rows(30, {0, 1, 2}));
  const auto test = scratch_file("hc_test.svm", libsvm_rows(9, {2, 1, 0}));
  bilevel::HypercleanOptions o;
  o.n_train = 18;
  o.n_val = 8;

  auto p = bilevel::HypercleanProblem::from_files(PETSC_COMM_WORLD, train, "", test, o);
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);

  EXPECT_EQ(p->dataset_sizes().lower, 18);
  EXPECT_EQ(p->dataset_sizes().upper, 8);
  EXPECT_EQ(p->n_classes(), 3);
  EXPECT_EQ(p->n_features(), 4);
  EXPECT_NEAR(p->evaluate_test(x, y).loss, std::log(3.0), 1e-12);  // y = 0: uniform probabilities
  remove_scratch();
}

TEST(HypercleanFiles, TooFewRowsForTheSplitIsAnInputErrorNamingTheOptions) {
  const auto train = scratch_file("hc_small.svm", libsvm_rows(12, {0, 1, 2}));
  bilevel::HypercleanOptions o;
  o.n_train = 10;
  o.n_val = 5;

  try {
    bilevel::HypercleanProblem::from_files(PETSC_COMM_WORLD, train, "", "", o);
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("hc_small.svm"), std::string::npos) << what;
    EXPECT_NE(what.find("-bilevel_hyperclean_n_train"), std::string::npos) << what;
  }
  remove_scratch();
}

TEST(HypercleanProblem, BaselineAccuracyIsTheTestAccuracyOfTheUniformFit) {
  const auto tr = testdata::make_global(60, 6, 3, 51), va = testdata::make_global(20, 6, 3, 52),
             te = testdata::make_global(25, 6, 3, 53);
  bilevel::HypercleanOptions o;
  o.mu = 0.01;
  bilevel::HypercleanProblem p(testdata::to_dataset(PETSC_COMM_WORLD, tr, DataFormat::Sparse),
                               testdata::to_dataset(PETSC_COMM_WORLD, va, DataFormat::Sparse),
                               testdata::to_dataset(PETSC_COMM_WORLD, te, DataFormat::Sparse),
                               o);
  auto x = p.create_upper_vec(), y = p.create_lower_vec();
  VecSet(y, 0.0);
  p.fit(y, bilevel::FitWeights::Uniform);
  const auto expected = p.evaluate_test(x, y).accuracy;

  const PetscReal baseline = p.baseline_test_accuracy();

  ASSERT_TRUE(expected.has_value());
  EXPECT_DOUBLE_EQ(baseline, *expected);
  EXPECT_GT(baseline, 0.0);
}

}  // namespace
