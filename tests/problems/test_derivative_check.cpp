#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "bilevel/core/derivative_check.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "synthetic.hpp"

namespace {

using bilevel::Batch;
using bilevel::Capability;

enum class Bug { None, GradY, GradX, Hvp, Jvp, UpperGradY };

/// A small separable problem with every oracle, on any communicator, with an optional planted bug:
///   g(x, y) = Σ_i e^{x_{i mod m}} y_i²/2 + (y_i − c_i)⁴/4,   f(x, y) = Σ_i (y_i − 1)²/2 + Σ_j x_j²/2
class Toy : public bilevel::BilevelProblem {
 public:
  Toy(MPI_Comm comm, Bug bug, bool grad_x = true) : comm_(comm), bug_(bug), grad_x_(grad_x) {}
  MPI_Comm comm() const override { return comm_; }
  std::string name() const override { return "toy"; }
  bilevel::petsc::VecHandle create_upper_vec() const override { return make(m_); }
  bilevel::petsc::VecHandle create_lower_vec() const override { return make(n_); }
  Capability capabilities() const override {
    Capability c = Capability::UpperValue | Capability::LowerValue;
    return grad_x_ ? c | Capability::LowerGradX : c;
  }

 protected:
  static double c(PetscInt i) { return 0.3 * std::sin(1.0 + i); }
  PetscReal upper_value_impl(Vec x, Vec y, const Batch&) override {
    double s = 0;
    for_y(y, [&](PetscInt, double yi) { s += 0.5 * (yi - 1) * (yi - 1); });
    const auto xs = testdata::gather(x);
    double r = 0;
    MPI_Allreduce(&s, &r, 1, MPI_DOUBLE, MPI_SUM, comm_);
    for (double v : xs) r += 0.5 * v * v;
    return r;
  }
  void upper_grad_impl(Vec x, Vec y, const Batch&, Vec gx, Vec gy) override {
    if (gx) VecCopy(x, gx);
    if (gy) {
      map_y(y, gy, [&](PetscInt, double yi) { return (yi - 1) * (bug_ == Bug::UpperGradY ? 1.01 : 1.0); });
    }
  }
  PetscReal lower_value_impl(Vec x, Vec y, const Batch&) override {
    const auto xs = testdata::gather(x);
    double s = 0;
    for_y(y, [&](PetscInt i, double yi) {
      const double d = yi - c(i);
      s += std::exp(xs[static_cast<std::size_t>(i % m_)]) * yi * yi / 2 + d * d * d * d / 4;
    });
    double r = 0;
    MPI_Allreduce(&s, &r, 1, MPI_DOUBLE, MPI_SUM, comm_);
    return r;
  }
  void lower_grad_y_impl(Vec x, Vec y, const Batch&, Vec gy) override {
    const auto xs = testdata::gather(x);
    map_y(y, gy, [&](PetscInt i, double yi) {
      const double d = yi - c(i);
      return std::exp(xs[static_cast<std::size_t>(i % m_)]) * yi + d * d * d +
             (bug_ == Bug::GradY ? 1e-3 : 0.0);
    });
  }
  void lower_grad_x_impl(Vec x, Vec y, const Batch&, Vec gx) override {
    if (!grad_x_) throw bilevel::NotImplemented("toy: no grad_x g");
    const auto xs = testdata::gather(x);
    std::vector<double> acc(static_cast<std::size_t>(m_), 0.0);
    for_y(y, [&](PetscInt i, double yi) {
      acc[static_cast<std::size_t>(i % m_)] += std::exp(xs[static_cast<std::size_t>(i % m_)]) * yi * yi / 2;
    });
    scatter_x(acc, gx, bug_ == Bug::GradX ? 0.9 : 1.0);
  }
  void lower_hvp_impl(Vec x, Vec y, const Batch&, Vec w, Vec out) override {
    const auto xs = testdata::gather(x);
    bilevel::petsc::ReadView wv(w);
    map_y(y, out, [&](PetscInt i, double yi) {
      PetscInt lo = 0, hi = 0;
      VecGetOwnershipRange(w, &lo, &hi);
      const double d = yi - c(i);
      const double h =
          std::exp(xs[static_cast<std::size_t>(i % m_)]) + 3 * d * d * (bug_ == Bug::Hvp ? 0.5 : 1.0);
      return h * wv[i - lo];
    });
  }
  void lower_jvp_impl(Vec x, Vec y, const Batch&, Vec w, Vec out) override {
    const auto xs = testdata::gather(x), ws = testdata::gather(w);
    std::vector<double> acc(static_cast<std::size_t>(m_), 0.0);
    for_y(y, [&](PetscInt i, double yi) {
      acc[static_cast<std::size_t>(i % m_)] +=
          std::exp(xs[static_cast<std::size_t>(i % m_)]) * yi * ws[static_cast<std::size_t>(i)];
    });
    scatter_x(acc, out, bug_ == Bug::Jvp ? -1.0 : 1.0);
  }

 private:
  bilevel::petsc::VecHandle make(PetscInt n) const {
    bilevel::petsc::VecHandle v;
    VecCreateMPI(comm_, PETSC_DECIDE, n, v.out());
    return v;
  }
  template <typename F>
  void for_y(Vec y, F&& f) const {
    PetscInt lo = 0, hi = 0;
    VecGetOwnershipRange(y, &lo, &hi);
    bilevel::petsc::ReadView yv(y);
    for (PetscInt i = lo; i < hi; ++i) f(i, yv[i - lo]);
  }
  template <typename F>
  void map_y(Vec y, Vec out, F&& f) const {
    PetscInt lo = 0, hi = 0;
    VecGetOwnershipRange(y, &lo, &hi);
    bilevel::petsc::ReadView yv(y);
    bilevel::petsc::WriteView o(out);
    for (PetscInt i = lo; i < hi; ++i) o[i - lo] = f(i, yv[i - lo]);
  }
  void scatter_x(std::vector<double>& acc, Vec out, double factor) const {
    MPI_Allreduce(MPI_IN_PLACE, acc.data(), static_cast<int>(acc.size()), MPI_DOUBLE, MPI_SUM, comm_);
    PetscInt lo = 0, hi = 0;
    VecGetOwnershipRange(out, &lo, &hi);
    bilevel::petsc::WriteView o(out);
    for (PetscInt j = lo; j < hi; ++j) o[j - lo] = factor * acc[static_cast<std::size_t>(j)];
  }

  MPI_Comm comm_;
  Bug bug_;
  bool grad_x_;
  PetscInt n_ = 17, m_ = 5;
};

bilevel::DerivativeReport check(Toy& p, unsigned seed = 4) {
  auto x = p.create_upper_vec(), y = p.create_lower_vec();
  testdata::fill(x, [](PetscInt j) { return 0.2 * j - 0.5; });
  testdata::fill(y, [](PetscInt i) { return std::cos(0.8 * i); });
  bilevel::DerivativeCheckOptions o;
  o.seed = seed;
  o.directions = 3;
  return bilevel::check_derivatives(p, x, y, o);
}

TEST(DerivativeCheck, CorrectProblemPassesEveryEntry) {
  Toy p(PETSC_COMM_WORLD, Bug::None);

  const auto r = check(p);

  EXPECT_TRUE(r.passed(1e-7)) << r.max_error();
  for (const char* name :
       {"grad_y g", "grad_x g", "grad_y f", "grad_x f", "hvp", "hvp sym", "hvp_multi", "jvp"}) {
    const auto* e = r.find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_FALSE(e->skipped) << name;
    EXPECT_NE(e->analytic, 0.0) << name;  // the check compared something
  }
  EXPECT_GT(p.counts().hvp, 0);
  EXPECT_GT(p.counts().jvp, 0);
}

TEST(DerivativeCheck, EachPlantedBugFailsItsOwnEntryOnly) {
  const std::vector<std::pair<Bug, std::string>> cases = {{Bug::GradY, "grad_y g"},
                                                          {Bug::GradX, "grad_x g"},
                                                          {Bug::Hvp, "hvp"},
                                                          {Bug::Jvp, "jvp"},
                                                          {Bug::UpperGradY, "grad_y f"}};
  for (const auto& [bug, name] : cases) {
    Toy p(PETSC_COMM_WORLD, bug);

    const auto r = check(p);

    EXPECT_FALSE(r.passed(1e-6)) << name;
    ASSERT_NE(r.find(name), nullptr);
    EXPECT_GT(r.find(name)->relative_error, 1e-4) << name;
    for (const auto& e : r.entries) {
      // a wrong gradient of g also spoils the finite differences that hvp and jvp are checked against
      const bool related =
          e.oracle == name || (bug == Bug::GradY && (e.oracle == "hvp" || e.oracle == "jvp"));
      if (!related) EXPECT_LT(e.relative_error, 1e-6) << "bug in " << name << " reported by " << e.oracle;
    }
  }
}

TEST(DerivativeCheck, MissingOptionalOracleIsSkippedNotFailed) {
  Toy p(PETSC_COMM_WORLD, Bug::None, false);

  const auto r = check(p);

  ASSERT_NE(r.find("grad_x g"), nullptr);
  EXPECT_TRUE(r.find("grad_x g")->skipped);
  EXPECT_TRUE(r.passed(1e-7));
}

TEST(DerivativeCheck, DirectionsDoNotDependOnTheNumberOfRanks) {
  Toy world(PETSC_COMM_WORLD, Bug::None), self(PETSC_COMM_SELF, Bug::None);

  const auto a = check(world, 8), b = check(self, 8);

  ASSERT_EQ(a.entries.size(), b.entries.size());
  for (std::size_t k = 0; k < a.entries.size(); ++k) {
    EXPECT_NEAR(
        a.entries[k].analytic, b.entries[k].analytic, 1e-12 * std::max(1.0, std::abs(b.entries[k].analytic)))
        << a.entries[k].oracle;
  }
}

TEST(DerivativeCheck, PrintWritesOneLinePerOracle) {
  Toy p(PETSC_COMM_WORLD, Bug::Hvp);
  const auto r = check(p);

  ::testing::internal::CaptureStdout();
  r.print(PETSC_COMM_WORLD);
  const std::string out = ::testing::internal::GetCapturedStdout();

  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  if (rank == 0) {
    EXPECT_NE(out.find("hvp"), std::string::npos);
    EXPECT_NE(out.find("FAILED"), std::string::npos);
  }
}

}  // namespace
