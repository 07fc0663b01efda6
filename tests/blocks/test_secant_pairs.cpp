// SecantPairs and LmvmBfgs (blocks/secant_pairs.hpp): inverse-Hessian approximations from secant pairs of
// the closed-form quadratic's lower Hessian, against PETSc's MATLMVMBFGS and the exact inverse.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "bilevel/bilevel.hpp"
#include "bilevel/blocks/secant_pairs.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::norm;
using seedtest::relative_error;

using bilevel::petsc::VecHandle;
using seedtest::quad;

/// Fills v with standard normal entries from the counter-based generator (stream = salt), the same at every
/// rank count. Collective.
void pattern(Vec v, double salt) {
  const auto stream = static_cast<std::uint64_t>(1000 + 10 * salt);
  testdata::fill(
      v, [stream](PetscInt i) { return bilevel::counter_normal(77, stream, static_cast<std::uint64_t>(i)); });
}

/// Secant pairs (s_i, A s_i) of the quadratic's lower Hessian along patterned directions.
struct PairSource {
  explicit PairSource(PetscInt dim, PetscReal kappa = 50)
      : p(PETSC_COMM_WORLD, quad(kappa, dim)),
        x(p.create_upper_vec()),
        y(p.create_lower_vec()),
        s(p.create_lower_vec()),
        g(p.create_lower_vec()) {
    VecSet(x, 0.0);
    VecSet(y, 0.0);
  }
  void make(int i) {
    pattern(s, 0.5 + i);
    p.lower_hvp(x, y, bilevel::Batch::all(), s, g);  // g = A s
  }
  bilevel::QuadraticProblem p;
  VecHandle x, y, s, g;
};

TEST(SecantPairs, OwnBfgsTwoLoopMatchesPetscLmvmBfgs) {
  PairSource src(40);
  bilevel::SecantPairs own(src.y, bilevel::SecantKind::Bfgs, 6);
  bilevel::LmvmBfgs lmvm(src.y, 6, "test_secant_");
  own.set_scale(0.25);
  lmvm.set_scale(0.25);
  lmvm.reset();
  auto d = src.p.create_lower_vec(), a = src.p.create_lower_vec(), b = src.p.create_lower_vec();
  pattern(d, 9.0);
  own.apply(d, a);
  lmvm.apply(d, b);
  EXPECT_LT(relative_error(a, b), 1e-14);  // H0 = 0.25 I for both before any pair
  for (int i = 0; i < 9; ++i) {            // 9 pairs into a memory of 6: the oldest are dropped first
    src.make(i);
    EXPECT_TRUE(own.push(src.s, src.g));
    EXPECT_TRUE(lmvm.push(src.s, src.g));
    own.apply(d, a);
    lmvm.apply(d, b);
    EXPECT_LT(relative_error(a, b), 1e-10) << "after pair " << i;
  }
  EXPECT_EQ(own.size(), 6);
  // Secant equation of the newest pair: H g = s.
  own.apply(src.g, a);
  EXPECT_LT(relative_error(a, src.s), 1e-10);
  EXPECT_NEAR(own.scale(), lmvm.scale(), 1e-14 * lmvm.scale());
}

TEST(SecantPairs, BfgsRefusesPairsWithoutPositiveCurvature) {
  PairSource src(20);
  bilevel::SecantPairs h(src.y, bilevel::SecantKind::Bfgs, 4);
  src.make(0);
  VecScale(src.g, -1.0);  // sᵀg < 0
  EXPECT_FALSE(h.push(src.s, src.g));
  VecSet(src.g, 0.0);
  EXPECT_FALSE(h.push(src.s, src.g));
  EXPECT_EQ(h.size(), 0);
  EXPECT_EQ(h.rejected(), 2);
}

TEST(SecantPairs, Sr1WithAFullSetOfPairsIsTheExactInverse) {
  const PetscInt n = 24;
  PairSource src(n);
  bilevel::SecantPairs h(src.y, bilevel::SecantKind::Sr1, n);
  for (int i = 0; i < n; ++i) {
    src.make(i);
    EXPECT_TRUE(h.push(src.s, src.g));
  }
  // Hereditary: H g_i = s_i for every stored pair, so with n independent pairs H = A⁻¹.
  auto d = src.p.create_lower_vec(), out = src.p.create_lower_vec(), exact = src.p.create_lower_vec();
  pattern(d, 3.3);
  h.apply(d, out);
  src.p.apply_inverse(d, exact);
  EXPECT_EQ(h.active(), n);
  EXPECT_LT(relative_error(out, exact), 1e-7);
}

TEST(SecantPairs, Sr1AfterDroppingPairsEqualsARebuildFromTheKeptPairs) {
  PairSource src(30);
  bilevel::SecantPairs rolling(src.y, bilevel::SecantKind::Sr1, 5), fresh(src.y, bilevel::SecantKind::Sr1, 5);
  for (int i = 0; i < 8; ++i) {
    src.make(i);
    rolling.push(src.s, src.g);
    if (i >= 3) fresh.push(src.s, src.g);
  }
  auto d = src.p.create_lower_vec(), a = src.p.create_lower_vec(), b = src.p.create_lower_vec();
  pattern(d, 1.7);
  rolling.apply(d, a);
  fresh.apply(d, b);
  EXPECT_LT(relative_error(a, b), 1e-12);
}

TEST(SecantPairs, PetscBackendRefusesSr1NamingTheOption) {
  PairSource src(10);
  try {
    bilevel::make_inverse_hessian_approx(
        src.y, bilevel::SecantKind::Sr1, 3, bilevel::SecantBackend::Petsc, "bilevel_qnbo_");
    FAIL() << "expected InputError";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("-bilevel_qnbo_backend"), std::string::npos) << e.what();
  }
}

}  // namespace
