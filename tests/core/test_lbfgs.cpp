#include <gtest/gtest.h>

#include <cmath>

#include "bilevel/core/lbfgs.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace {

using bilevel::petsc::ReadView;
using bilevel::petsc::VecHandle;
using bilevel::petsc::WriteView;

constexpr PetscInt kSize = 40;

/// A distributed Vec of kSize entries with v_i = f(i), i the global index.
template <typename F>
VecHandle make_vec(F&& f) {
  VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(PETSC_COMM_WORLD, PETSC_DECIDE, kSize, v.out()));
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  WriteView w(v);
  for (PetscInt i = lo; i < hi; ++i) w[i - lo] = f(i);
  return v;
}

double diag(PetscInt i) {
  return 1.0 + static_cast<double>(i);
}  // A = diag(1, …, 40): condition 40
double rhs(PetscInt i) {
  return std::cos(1.0 + static_cast<double>(i));
}

/// φ(y) = 1/2 yᵀ A y − bᵀ y with A = diag(1..n); the minimiser is y*_i = b_i / A_ii.
struct Quadratic {
  VecHandle a = make_vec(diag), b = make_vec(rhs);
  int evaluations = 0;
  PetscReal operator()(Vec y, Vec g) {
    ++evaluations;
    BILEVEL_PETSC_CALL(VecPointwiseMult(g, a, y));  // g = A y − b
    PetscReal yay = 0, by = 0;
    BILEVEL_PETSC_CALL(VecDot(g, y, &yay));
    BILEVEL_PETSC_CALL(VecDot(b, y, &by));
    BILEVEL_PETSC_CALL(VecAXPY(g, -1, b));
    return 0.5 * yay - by;
  }
};

PetscReal distance_to_minimiser(Vec y) {
  VecHandle star = make_vec([](PetscInt i) { return rhs(i) / diag(i); });
  BILEVEL_PETSC_CALL(VecAXPY(star, -1, y));
  PetscReal e = 0;
  BILEVEL_PETSC_CALL(VecNorm(star, NORM_INFINITY, &e));
  return e;
}

TEST(Lbfgs, MinimisesAnIllConditionedQuadraticToTheGradientTolerance) {
  Quadratic phi;
  VecHandle y = make_vec([](PetscInt) { return 0.0; });
  bilevel::LbfgsOptions o;
  o.gatol = 1e-7;  // Armijo compares values: beyond ||∇φ|| ~ 1e-8 their change is below rounding
  o.max_it = 200;

  const bilevel::LbfgsResult r = bilevel::lbfgs_minimize(std::ref(phi), y, o);

  EXPECT_TRUE(r.converged);
  EXPECT_LE(r.gradient_norm, 1e-7);
  EXPECT_GT(r.iterations, 1);   // the recursion, not a lucky first step, got there
  EXPECT_LT(r.iterations, 60);  // and faster than gradient descent would (condition 40, 1e-7)
  EXPECT_LT(distance_to_minimiser(y), 1e-7);
}

TEST(Lbfgs, WithTheExactInversePreconditionerTheFirstStepIsNewtonsAndEndsTheRun) {
  Quadratic phi;
  VecHandle y = make_vec([](PetscInt) { return 0.0; });
  int applications = 0;
  auto inverse = [&](Vec in, Vec out) {  // M = A⁻¹
    ++applications;
    BILEVEL_PETSC_CALL(VecPointwiseDivide(out, in, phi.a));
  };
  bilevel::LbfgsOptions o;
  o.gatol = 1e-12;

  const bilevel::LbfgsResult r = bilevel::lbfgs_minimize(std::ref(phi), y, o, inverse);

  EXPECT_EQ(r.iterations, 1);
  EXPECT_GE(applications, 1);
  EXPECT_EQ(phi.evaluations, 2);  // the start and the accepted unit step
  EXPECT_LT(distance_to_minimiser(y), 1e-12);
}

TEST(Lbfgs, TheRefreshHookRunsEveryRefreshEveryIterationsFromTheFirst) {
  Quadratic phi;
  VecHandle y = make_vec([](PetscInt) { return 0.0; });
  bilevel::LbfgsOptions o;
  o.gatol = 0;  // never converged: runs max_it iterations
  o.max_it = 25;
  o.refresh_every = 10;
  int refreshes = 0;

  const bilevel::LbfgsResult r = bilevel::lbfgs_minimize(std::ref(phi), y, o, {}, [&] { ++refreshes; });

  ASSERT_EQ(r.iterations, 25);
  EXPECT_EQ(refreshes, 3);  // iterations 0, 10 and 20
}

TEST(Lbfgs, TheApproximationSatisfiesTheSecantEquationOfTheNewestPair) {
  bilevel::Lbfgs H(make_vec(diag), 3);
  VecHandle a = make_vec(diag), t = make_vec(diag), Ht = make_vec(diag);
  for (int k = 0; k < 5; ++k) {  // pairs of the quadratic: t = A s
    VecHandle s = make_vec([k](PetscInt i) { return std::sin(static_cast<double>(k * kSize + i)); });
    BILEVEL_PETSC_CALL(VecPointwiseMult(t, a, s));
    ASSERT_TRUE(H.push(s, t));
    H.apply(t, Ht);  // H t = s
    BILEVEL_PETSC_CALL(VecAXPY(Ht, -1, s));
    PetscReal e = 0, ns = 0;
    BILEVEL_PETSC_CALL(VecNorm(Ht, NORM_2, &e));
    BILEVEL_PETSC_CALL(VecNorm(s, NORM_2, &ns));
    EXPECT_LT(e, 1e-12 * ns) << "pair " << k;
  }
  EXPECT_EQ(H.size(), 3);  // the memory bound holds
}

TEST(Lbfgs, APairWithoutPositiveCurvatureIsRefused) {
  bilevel::Lbfgs H(make_vec(diag), 3);
  VecHandle s = make_vec(rhs), t = make_vec(rhs);
  BILEVEL_PETSC_CALL(VecScale(t, -1));  // sᵀt < 0

  EXPECT_FALSE(H.push(s, t));
  EXPECT_EQ(H.size(), 0);
  EXPECT_EQ(H.scale(), 1);
}

TEST(Lbfgs, OnePairGivesTheBfgsInverseUpdateOfGammaM) {
  // H = (I − ρ s tᵀ) γ M (I − ρ t sᵀ) + ρ s sᵀ with M = diag(1/A), γ = sᵀt / tᵀMt, ρ = 1/sᵀt
  VecHandle a = make_vec(diag);
  bilevel::Lbfgs H(a, 2, [&](Vec in, Vec out) { BILEVEL_PETSC_CALL(VecPointwiseDivide(out, in, a)); });
  VecHandle s = make_vec([](PetscInt i) { return 1.0 + 0.1 * static_cast<double>(i % 7); });
  VecHandle t = make_vec([](PetscInt i) { return 2.0 - 0.05 * static_cast<double>(i % 5); });
  VecHandle g = make_vec(rhs), out = make_vec(rhs), expect = make_vec(rhs), mt = make_vec(rhs);
  ASSERT_TRUE(H.push(s, t));
  PetscReal st = 0, sg = 0, tmt = 0;
  BILEVEL_PETSC_CALL(VecDot(s, t, &st));
  BILEVEL_PETSC_CALL(VecDot(s, g, &sg));
  BILEVEL_PETSC_CALL(VecPointwiseDivide(mt, t, a));
  BILEVEL_PETSC_CALL(VecDot(t, mt, &tmt));
  const PetscReal rho = 1 / st, gamma = st / tmt;
  // q = g − ρ (sᵀg) t;  r = γ M q;  H g = r − ρ (tᵀr) s + ρ (sᵀg) s
  VecHandle q = make_vec(rhs);
  BILEVEL_PETSC_CALL(VecAXPY(q, -rho * sg, t));
  BILEVEL_PETSC_CALL(VecPointwiseDivide(expect, q, a));
  BILEVEL_PETSC_CALL(VecScale(expect, gamma));
  PetscReal tr = 0;
  BILEVEL_PETSC_CALL(VecDot(t, expect, &tr));
  BILEVEL_PETSC_CALL(VecAXPY(expect, rho * sg - rho * tr, s));

  H.apply(g, out);

  EXPECT_NEAR(H.scale(), gamma, 1e-14 * gamma);
  BILEVEL_PETSC_CALL(VecAXPY(out, -1, expect));
  PetscReal e = 0, n = 0;
  BILEVEL_PETSC_CALL(VecNorm(out, NORM_2, &e));
  BILEVEL_PETSC_CALL(VecNorm(expect, NORM_2, &n));
  EXPECT_LT(e, 1e-13 * n);
}

}  // namespace
