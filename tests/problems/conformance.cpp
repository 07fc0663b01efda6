// The conformance suite: every problem (quadratic, logreg, softmax, hyperclean on small synthetic data, and
// a callback problem) passes the same checks.
//  * Values against a serial computation of the formula in the problem's header, on the full sets and on
//    minibatches.
//  * Every oracle on all ranks against the same problem built on one rank (PETSC_COMM_SELF), full batch
//    and minibatch, with the same oracle counts.
//  * The derivative checker at its random point, on full batches and on minibatches: each derivative oracle
//    (∇_y g, ∇_x g, ∇_y f, ∇_x f, H, the one-pass H products, J) agrees with finite differences of the
//    values, so with the serial formulas.
//  * The checker can fail: each oracle in turn scaled by 1.5 is flagged, and it alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bilevel/core/derivative_check.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "bilevel/problems/callback.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "bilevel/problems/logreg.hpp"
#include "bilevel/problems/quadratic.hpp"
#include "bilevel/problems/softmax.hpp"
#include "support/forwarding_problem.hpp"
#include "synthetic.hpp"

namespace {

using bilevel::Batch;
using bilevel::BilevelProblem;
using bilevel::Capability;
using testdata::gather;
using testdata::rel_diff;
using testsupport::Oracle;
using Rows = std::vector<PetscInt>;
/// A serial reference value at gathered (x, y) over the given rows.
using Values =
    std::function<double(const std::vector<double>& x, const std::vector<double>& y, const Rows& rows)>;

struct Case {
  std::string name;
  /// The problem on comm (data split over comm's ranks); the same mathematics on any communicator.
  std::function<std::shared_ptr<BilevelProblem>(MPI_Comm)> make;
  Values g, f;                       ///< serial references (null: see g_is_quadratic_form)
  bool g_is_quadratic_form = false;  ///< g(z) = ½ zᵀ∇g(z), z = (x, y) (Euler): the quadratic's reference
  Rows lower_batch, upper_batch;     ///< minibatches (problems with Capability::Stochastic)
  bool f_depends_on_x = true;
};

// ---- serial references --------------------------------------------------------------------------------

Rows all_rows(const testdata::Global& g) {
  Rows r(static_cast<std::size_t>(g.rows));
  for (PetscInt i = 0; i < g.rows; ++i) r[static_cast<std::size_t>(i)] = i;
  return r;
}
const Rows& rows_or_all(const Rows& rows, const testdata::Global& g, Rows& storage) {
  if (!rows.empty()) return rows;
  storage = all_rows(g);
  return storage;
}
double at(const std::vector<double>& v, PetscInt i) {
  return v[static_cast<std::size_t>(i)];
}
PetscInt at_label(const std::vector<PetscInt>& labels, PetscInt i) {
  return labels[static_cast<std::size_t>(i)];
}

/// Mean binary logistic loss log(1 + e^{−b (a·w + c)}), y = (w, c), b = ±1 for classes 1/0.
double logistic_loss(const testdata::Global& d, const std::vector<double>& y, const Rows& given) {
  Rows storage;
  const Rows& rows = rows_or_all(given, d, storage);
  double s = 0;
  for (PetscInt i : rows) {
    double z = at(y, d.cols);
    for (PetscInt j = 0; j < d.cols; ++j) z += d.at(i, j) * at(y, j);
    const double b = d.labels[static_cast<std::size_t>(i)] == 1 ? 1.0 : -1.0;
    s += std::log1p(std::exp(-b * z));
  }
  return s / static_cast<double>(rows.size());
}

/// Cross-entropy log Σ_k e^{z_k} − z_l of row i, z = Wᵀ a_i + b, y = [W; bᵀ] row-major.
double cross_entropy(const testdata::Global& d, PetscInt i, const std::vector<double>& y, PetscInt label) {
  const PetscInt K = d.classes;
  std::vector<double> z(static_cast<std::size_t>(K));
  for (PetscInt k = 0; k < K; ++k) {
    double s = at(y, d.cols * K + k);
    for (PetscInt j = 0; j < d.cols; ++j) s += d.at(i, j) * at(y, j * K + k);
    z[static_cast<std::size_t>(k)] = s;
  }
  const double mx = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (double v : z) sum += std::exp(v - mx);
  return mx + std::log(sum) - z[static_cast<std::size_t>(label)];
}

/// Mean cross-entropy over rows, each weighted by weight(i) (1 for the plain mean).
double mean_cross_entropy(const testdata::Global& d,
                          const std::vector<double>& y,
                          const Rows& given,
                          const std::function<double(PetscInt)>& weight = nullptr,
                          const std::vector<PetscInt>* labels = nullptr) {
  Rows storage;
  const Rows& rows = rows_or_all(given, d, storage);
  double s = 0;
  for (PetscInt i : rows)
    s += (weight ? weight(i) : 1.0) *
         cross_entropy(d, i, y, labels ? at_label(*labels, i) : at_label(d.labels, i));
  return s / static_cast<double>(rows.size());
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

// ---- the cases --------------------------------------------------------------------------------------------

Case quadratic_case() {
  Case c;
  c.name = "quadratic";
  c.make = [](MPI_Comm comm) {
    bilevel::QuadraticOptions o;
    o.dim_lower = 13;
    o.dim_upper = 5;
    o.condition = 10;
    o.seed = 3;
    return std::make_shared<bilevel::QuadraticProblem>(comm, o);
  };
  c.g_is_quadratic_form = true;  // g = ½ yᵀA y − yᵀB x; f's target t is internal (test_quadratic checks F)
  return c;
}

Case logreg_case() {
  static const testdata::Global tr = testdata::make_global(41, 6, 2, 21),
                                va = testdata::make_global(23, 6, 2, 22);
  Case c;
  c.name = "logreg";
  c.make = [](MPI_Comm comm) {
    return std::make_shared<bilevel::LogregProblem>(
        testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
        testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
        std::nullopt,
        bilevel::LogregOptions{});
  };
  // g = (1/|B|) Σ_B log(1 + e^{−b (a·w + c)}) + ½ Σ_j e^{x_j} w_j²,  f = the mean loss on validation rows
  c.g = [](const std::vector<double>& x, const std::vector<double>& y, const Rows& rows) {
    double reg = 0;
    for (PetscInt j = 0; j < tr.cols; ++j) reg += 0.5 * std::exp(at(x, j)) * at(y, j) * at(y, j);
    return logistic_loss(tr, y, rows) + reg;
  };
  c.f = [](const std::vector<double>&, const std::vector<double>& y, const Rows& rows) {
    return logistic_loss(va, y, rows);
  };
  c.lower_batch = {0, 3, 4, 10, 17, 22, 30, 40};
  c.upper_batch = {1, 2, 7, 11, 22};
  c.f_depends_on_x = false;
  return c;
}

Case softmax_case() {
  static const testdata::Global tr = testdata::make_global(37, 5, 3, 31),
                                va = testdata::make_global(19, 5, 3, 32);
  static const bilevel::SoftmaxOptions options;
  Case c;
  c.name = "softmax";
  c.make = [](MPI_Comm comm) {
    return std::make_shared<bilevel::SoftmaxProblem>(
        testdata::to_dataset(comm, tr, bilevel::DataFormat::Dense),
        testdata::to_dataset(comm, va, bilevel::DataFormat::Dense),
        std::nullopt,
        options);
  };
  // g = mean CE + ½ Σ_j e^{x_j} ||W_j||² + μ_b/2 ||b||²,  f = mean CE on validation rows
  c.g = [](const std::vector<double>& x, const std::vector<double>& y, const Rows& rows) {
    const PetscInt K = tr.classes;
    double reg = 0;
    for (PetscInt j = 0; j <= tr.cols; ++j)
      for (PetscInt k = 0; k < K; ++k)
        reg += 0.5 * (j < tr.cols ? std::exp(at(x, j)) : options.bias_weight) * at(y, j * K + k) *
               at(y, j * K + k);
    return mean_cross_entropy(tr, y, rows) + reg;
  };
  c.f = [](const std::vector<double>&, const std::vector<double>& y, const Rows& rows) {
    return mean_cross_entropy(va, y, rows);
  };
  c.lower_batch = {1, 5, 6, 12, 20, 33, 36};
  c.upper_batch = {0, 4, 9, 18};
  c.f_depends_on_x = false;
  return c;
}

Case hyperclean_case() {
  static const testdata::Global tr = testdata::make_global(43, 5, 3, 41),
                                va = testdata::make_global(17, 5, 3, 42);
  static const bilevel::HypercleanOptions options = [] {
    bilevel::HypercleanOptions o;
    o.mu = 0.03;
    o.mu_bias = 0.002;
    o.corruption = 0.4;
    o.seed = 7;
    return o;
  }();
  static const std::vector<PetscInt> noisy = [] {
    std::vector<PetscInt> l;
    for (PetscInt i = 0; i < tr.rows; ++i)
      l.push_back(
          bilevel::corrupt_label(options.seed, options.corruption, i, at_label(tr.labels, i), tr.classes));
    return l;
  }();
  Case c;
  c.name = "hyperclean";
  c.make = [](MPI_Comm comm) {
    return std::make_shared<bilevel::HypercleanProblem>(
        testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
        testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
        std::nullopt,
        options);
  };
  // g = (1/|B|) Σ_B σ(x_i) CE(y; a_i, l̃_i) + μ/2 ||W||² + μ_b/2 ||b||²,  f = mean CE (clean labels)
  c.g = [](const std::vector<double>& x, const std::vector<double>& y, const Rows& rows) {
    const PetscInt K = tr.classes;
    double reg = 0;
    for (PetscInt j = 0; j < (tr.cols + 1) * K; ++j)
      reg += 0.5 * (j < tr.cols * K ? options.mu : options.bias_weight()) * at(y, j) * at(y, j);
    const auto weight = [&](PetscInt i) { return 1 / (1 + std::exp(-at(x, i))); };
    return mean_cross_entropy(tr, y, rows, weight, &noisy) + reg;
  };
  c.f = [](const std::vector<double>&, const std::vector<double>& y, const Rows& rows) {
    return mean_cross_entropy(va, y, rows);
  };
  c.lower_batch = {2, 3, 8, 15, 21, 29, 42};
  c.upper_batch = {0, 5, 6, 16};
  c.f_depends_on_x = false;
  return c;
}

/// Writes this rank's part of the global vector `full` into v. Collective (none: local).
void set_local(Vec v, const std::vector<double>& full) {
  PetscInt lo = 0, hi = 0;
  VecGetOwnershipRange(v, &lo, &hi);
  bilevel::petsc::WriteView w(v);
  for (PetscInt i = lo; i < hi; ++i) w[i - lo] = at(full, i);
}

constexpr PetscInt kCallbackDx = 4, kCallbackDy = 9;

/// The callback problem: g = Σ_i ½ e^{x_{i mod 4}} y_i² + ¼ (y_i − c_i)⁴,  f = ½ ||y − 1||² + ½ ||x||²,
/// c_i = 0.3 sin(1 + i), dx = 4, dy = 9; the callbacks work on gathered vectors.
Case callback_case() {
  Case c;
  c.name = "callback";
  static auto ci = [](PetscInt i) { return 0.3 * std::sin(1.0 + static_cast<double>(i)); };
  static auto ex = [](const std::vector<double>& x, PetscInt i) { return std::exp(at(x, i % kCallbackDx)); };
  c.make = [](MPI_Comm comm) {
    bilevel::ProblemCallbacks cb;
    cb.lower_value = [](Vec x, Vec y) {
      const auto xs = gather(x), ys = gather(y);
      double s = 0;
      for (PetscInt i = 0; i < kCallbackDy; ++i)
        s += 0.5 * ex(xs, i) * at(ys, i) * at(ys, i) + std::pow(at(ys, i) - ci(i), 4) / 4;
      return s;
    };
    cb.upper_value = [](Vec x, Vec y) {
      const auto xs = gather(x), ys = gather(y);
      double s = 0;
      for (PetscInt i = 0; i < kCallbackDy; ++i) s += 0.5 * (at(ys, i) - 1) * (at(ys, i) - 1);
      for (PetscInt j = 0; j < kCallbackDx; ++j) s += 0.5 * at(xs, j) * at(xs, j);
      return s;
    };
    cb.lower_grad_y = [](Vec x, Vec y, Vec gy) {
      const auto xs = gather(x), ys = gather(y);
      std::vector<double> g(kCallbackDy);
      for (PetscInt i = 0; i < kCallbackDy; ++i)
        g[i] = ex(xs, i) * at(ys, i) + std::pow(at(ys, i) - ci(i), 3);
      set_local(gy, g);
    };
    cb.lower_grad_x = [](Vec x, Vec y, Vec gx) {
      const auto xs = gather(x), ys = gather(y);
      std::vector<double> g(kCallbackDx, 0.0);
      for (PetscInt i = 0; i < kCallbackDy; ++i)
        g[i % kCallbackDx] += 0.5 * ex(xs, i) * at(ys, i) * at(ys, i);
      set_local(gx, g);
    };
    cb.upper_grad = [](Vec x, Vec y, Vec gx, Vec gy) {
      if (gx) VecCopy(x, gx);
      if (gy) {
        VecCopy(y, gy);
        VecShift(gy, -1.0);
      }
    };
    cb.lower_hvp = [](Vec x, Vec y, Vec w, Vec out) {
      const auto xs = gather(x), ys = gather(y), ws = gather(w);
      std::vector<double> h(kCallbackDy);
      for (PetscInt i = 0; i < kCallbackDy; ++i)
        h[i] = (ex(xs, i) + 3 * std::pow(at(ys, i) - ci(i), 2)) * at(ws, i);
      set_local(out, h);
    };
    cb.lower_jvp = [](Vec x, Vec y, Vec w, Vec out) {
      const auto xs = gather(x), ys = gather(y), ws = gather(w);
      std::vector<double> j(kCallbackDx, 0.0);
      for (PetscInt i = 0; i < kCallbackDy; ++i) j[i % kCallbackDx] += ex(xs, i) * at(ys, i) * at(ws, i);
      set_local(out, j);
    };
    return std::make_shared<bilevel::CallbackProblem>(comm, kCallbackDx, kCallbackDy, cb, "callback");
  };
  c.g = [](const std::vector<double>& x, const std::vector<double>& y, const Rows&) {
    double s = 0;
    for (PetscInt i = 0; i < kCallbackDy; ++i)
      s += 0.5 * ex(x, i) * at(y, i) * at(y, i) + std::pow(at(y, i) - ci(i), 4) / 4;
    return s;
  };
  c.f = [](const std::vector<double>& x, const std::vector<double>& y, const Rows&) {
    double s = 0;
    for (PetscInt i = 0; i < kCallbackDy; ++i) s += 0.5 * (at(y, i) - 1) * (at(y, i) - 1);
    for (PetscInt j = 0; j < kCallbackDx; ++j) s += 0.5 * at(x, j) * at(x, j);
    return s;
  };
  return c;
}

std::vector<Case> cases() {
  return {quadratic_case(), logreg_case(), softmax_case(), hyperclean_case(), callback_case()};
}

// ---- the suite ----------------------------------------------------------------------------------------

class Conformance : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    problem_ = GetParam().make(PETSC_COMM_WORLD);
    x_ = problem_->create_upper_vec();
    y_ = problem_->create_lower_vec();
    point(*problem_, x_, y_);
  }
  /// A fixed point away from the start (functions of the global index), x inside the problem's box.
  static void point(BilevelProblem& p, Vec x, Vec y) {
    p.initial_point(x, y);
    const bilevel::ProblemHints h = p.hints();
    const double lb = h.x_lower_bound.value_or(-1e300), ub = h.x_upper_bound.value_or(1e300);
    const auto x0 = gather(x), y0 = gather(y);
    testdata::fill(x,
                   [&](PetscInt i) { return std::clamp(at(x0, i) + 0.3 * std::sin(1.3 * i + 0.5), lb, ub); });
    testdata::fill(y, [&](PetscInt j) { return at(y0, j) + 0.4 * std::cos(0.7 * j + 0.2); });
  }
  bool stochastic() const { return has(problem_->capabilities(), Capability::Stochastic); }

  std::shared_ptr<BilevelProblem> problem_;
  bilevel::petsc::VecHandle x_, y_;
};

TEST_P(Conformance, ValuesMatchASerialComputation) {
  const Case& c = GetParam();
  const auto x = gather(x_), y = gather(y_);
  BilevelProblem& p = *problem_;

  const PetscReal g = p.lower_value(x_, y_, Batch::all()), f = p.upper_value(x_, y_, Batch::all());

  if (c.g_is_quadratic_form) {
    // g = ½ yᵀA y − yᵀB x = ½ (yᵀ∇_y g + xᵀ∇_x g);  f = ½ ||y − t||² + r/2 ||x||² = ½ ||∇_y f||² + ½ xᵀ∇_x f
    auto gy = p.create_lower_vec(), gx = p.create_upper_vec(), fy = p.create_lower_vec(),
         fx = p.create_upper_vec();
    p.lower_grad_y(x_, y_, Batch::all(), gy);
    p.lower_grad_x(x_, y_, Batch::all(), gx);
    p.upper_grad(x_, y_, Batch::all(), fx, fy);
    PetscScalar yg = 0, xg = 0, ff = 0, xf = 0;
    VecDot(y_, gy, &yg);
    VecDot(x_, gx, &xg);
    VecDot(fy, fy, &ff);
    VecDot(x_, fx, &xf);
    EXPECT_NEAR(g, 0.5 * (yg + xg), 1e-12 * std::max(1.0, std::abs(g)));
    EXPECT_NEAR(f, 0.5 * (ff + xf), 1e-12 * std::max(1.0, std::abs(f)));
  } else {
    ASSERT_TRUE(c.g && c.f);
    EXPECT_NEAR(g, c.g(x, y, {}), 1e-12 * std::max(1.0, std::abs(g)));
    EXPECT_NEAR(f, c.f(x, y, {}), 1e-12 * std::max(1.0, std::abs(f)));
  }
  if (!stochastic()) return;
  const PetscReal gb = p.lower_value(x_, y_, Batch::of(c.lower_batch));
  const PetscReal fb = p.upper_value(x_, y_, Batch::of(c.upper_batch));
  EXPECT_NEAR(gb, c.g(x, y, c.lower_batch), 1e-12 * std::max(1.0, std::abs(gb)));
  EXPECT_NEAR(fb, c.f(x, y, c.upper_batch), 1e-12 * std::max(1.0, std::abs(fb)));
  EXPECT_NE(gb, g);  // the batch mattered
}

// The serial reference of every oracle: the same problem on one rank (PETSC_COMM_SELF) on every rank.
TEST_P(Conformance, EveryOracleOnAllRanksMatchesTheSameProblemOnOneRank) {
  const Case& c = GetParam();
  auto serial = c.make(PETSC_COMM_SELF);
  auto xs = serial->create_upper_vec(), ys = serial->create_lower_vec();
  point(*serial, xs, ys);
  BilevelProblem& p = *problem_;
  const bool grad_x = has(p.capabilities(), Capability::LowerGradX);
  std::vector<Batch> lower{Batch::all()}, upper{Batch::all()};
  if (stochastic()) {
    lower.push_back(Batch::of(c.lower_batch));
    upper.push_back(Batch::of(c.upper_batch));
  }

  for (std::size_t b = 0; b < lower.size(); ++b) {
    SCOPED_TRACE(b == 0 ? "full batch" : "minibatch");
    auto both = [&](auto&& oracle) {  // the oracle's output (a vector) on both problems
      return std::make_pair(oracle(p, x_, y_), oracle(*serial, xs, ys));
    };
    auto vec = [&](bool upper_layout, auto&& fill) {
      return [upper_layout, fill](BilevelProblem& q, Vec x, Vec y) {
        auto out = upper_layout ? q.create_upper_vec() : q.create_lower_vec();
        fill(q, x, y, out);
        return gather(out);
      };
    };
    auto w_of = [](BilevelProblem& q, PetscInt salt) {
      auto w = q.create_lower_vec();
      testdata::fill(w, [salt](PetscInt i) { return std::sin(0.37 * i + salt); });
      return w;
    };
    EXPECT_NEAR(p.lower_value(x_, y_, lower[b]), serial->lower_value(xs, ys, lower[b]), 1e-12);
    EXPECT_NEAR(p.upper_value(x_, y_, upper[b]), serial->upper_value(xs, ys, upper[b]), 1e-12);
    const auto gy =
        both(vec(false, [&](BilevelProblem& q, Vec x, Vec y, Vec o) { q.lower_grad_y(x, y, lower[b], o); }));
    EXPECT_LT(rel_diff(gy.first, gy.second), 1e-12);
    if (grad_x) {
      const auto gx =
          both(vec(true, [&](BilevelProblem& q, Vec x, Vec y, Vec o) { q.lower_grad_x(x, y, lower[b], o); }));
      EXPECT_LT(rel_diff(gx.first, gx.second), 1e-12);
    }
    const auto fx = both(
        vec(true, [&](BilevelProblem& q, Vec x, Vec y, Vec o) { q.upper_grad(x, y, upper[b], o, nullptr); }));
    const auto fy = both(vec(
        false, [&](BilevelProblem& q, Vec x, Vec y, Vec o) { q.upper_grad(x, y, upper[b], nullptr, o); }));
    EXPECT_LT(rel_diff(fx.first, fx.second), 1e-12);
    EXPECT_LT(rel_diff(fy.first, fy.second), 1e-12);
    const auto hv = both(vec(
        false, [&](BilevelProblem& q, Vec x, Vec y, Vec o) { q.lower_hvp(x, y, lower[b], w_of(q, 1), o); }));
    EXPECT_LT(rel_diff(hv.first, hv.second), 1e-12);
    const auto hm = both(vec(false, [&](BilevelProblem& q, Vec x, Vec y, Vec o) {
      auto w1 = w_of(q, 1), w2 = w_of(q, 2), o2 = q.create_lower_vec();
      const Vec in[2] = {w1, w2}, out[2] = {o, o2};
      q.lower_hvp_multi(x, y, lower[b], std::span<const Vec>(in, 2), std::span<const Vec>(out, 2));
      VecAXPY(o, 3.0, o2);  // both products, in one vector
    }));
    EXPECT_LT(rel_diff(hm.first, hm.second), 1e-12);
    const auto jv = both(vec(
        true, [&](BilevelProblem& q, Vec x, Vec y, Vec o) { q.lower_jvp(x, y, lower[b], w_of(q, 3), o); }));
    EXPECT_LT(rel_diff(jv.first, jv.second), 1e-12);
  }
  const auto a = p.counts(), s = serial->counts();
  EXPECT_EQ(a.grad_f, s.grad_f);
  EXPECT_EQ(a.grad_g, s.grad_g);
  EXPECT_EQ(a.hvp, s.hvp);
  EXPECT_EQ(a.jvp, s.jvp);
  EXPECT_EQ(a.samples, s.samples);
}

/// Derivative check of `p` at the suite's point (default options: a random point near it).
bilevel::DerivativeReport check(BilevelProblem& p, Vec x, Vec y) {
  bilevel::DerivativeCheckOptions o;
  o.seed = 11;
  return bilevel::check_derivatives(p, x, y, o);
}

TEST_P(Conformance, DerivativeCheckerPassesAtItsRandomPointAndComparesSomethingThere) {
  const auto r = check(*problem_, x_, y_);

  EXPECT_TRUE(r.passed(1e-6)) << "largest error " << r.max_error();
  EXPECT_TRUE(r.flagged_oracles().empty());
  for (const auto& e : r.entries) {
    EXPECT_FALSE(e.skipped) << e.oracle;
    // only ∇_x f may be 0 against 0, and only where f has no x (the start point y = 0 used to make the
    // x-derivatives of g vanish too)
    EXPECT_EQ(e.vacuous, e.oracle == "grad_x f" && !GetParam().f_depends_on_x) << e.oracle;
  }
  if (GetParam().name != "hyperclean") return;  // its x are per-sample weights: look at one more number
  EXPECT_GT(std::abs(r.find("grad_x g")->analytic), 1e-8);
}

TEST_P(Conformance, DerivativeCheckerPassesOnMinibatchOracles) {
  if (!stochastic()) GTEST_SKIP() << "a deterministic problem";
  const Case& c = GetParam();
  testsupport::ForwardingProblem pinned(problem_);
  pinned.pin_batches(c.lower_batch, c.upper_batch);

  const auto r = check(pinned, x_, y_);

  EXPECT_TRUE(r.passed(1e-6)) << "largest error " << r.max_error();
  // the checker's "full batch" was the minibatch
  EXPECT_EQ(pinned.lower_value(x_, y_, Batch::all()),
            problem_->lower_value(x_, y_, Batch::of(c.lower_batch)));
  EXPECT_NE(pinned.lower_value(x_, y_, Batch::all()), problem_->lower_value(x_, y_, Batch::all()));
}

// The key requirement: the checker can fail. Each oracle in turn is scaled by 1.5; the checker must flag
// exactly that oracle. Where f has no x (logreg, softmax, hyperclean), ∇_x f = 0 stays right when scaled,
// and a scaled f disagrees only with ∇_y f and is flagged as ∇_y f: a value is the definition its
// derivatives are checked against.
TEST_P(Conformance, CheckerFlagsExactlyTheOracleScaledByOneAndAHalf) {
  const Case& c = GetParam();
  testsupport::ForwardingProblem unscaled(problem_);
  EXPECT_TRUE(check(unscaled, x_, y_).flagged_oracles().empty());

  for (const Oracle o : {Oracle::LowerValue,
                         Oracle::UpperValue,
                         Oracle::LowerGradY,
                         Oracle::LowerGradX,
                         Oracle::UpperGradY,
                         Oracle::UpperGradX,
                         Oracle::Hvp,
                         Oracle::HvpMulti,
                         Oracle::Jvp}) {
    if (o == Oracle::UpperGradX && !c.f_depends_on_x) continue;  // 1.5 · 0 = 0: still the right oracle
    testsupport::ForwardingProblem scaled(problem_, Capability::None, o, 1.5);

    const auto r = check(scaled, x_, y_);

    const std::string expected =
        o == Oracle::UpperValue && !c.f_depends_on_x ? "grad_y f" : testsupport::checker_name(o);
    EXPECT_FALSE(r.passed()) << expected;
    EXPECT_EQ(r.flagged_oracles(), std::vector<std::string>{expected})
        << "scaled " << testsupport::checker_name(o);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryProblem,
                         Conformance,
                         ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
