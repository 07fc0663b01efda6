// DynamicLanczos and solve_spd_tridiagonal (blocks/dynamic_lanczos.hpp): the Lanczos process of LancBiO on
// a fixed system of the closed-form quadratic, against A⁻¹ b and the CG convergence bound.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bilevel/blocks/dynamic_lanczos.hpp"
#include "support/seed_harness.hpp"

namespace {

TEST(SolveSpdTridiagonal, MatchesADenseSolveAndReportsTheLeadingDefiniteBlock) {
  const std::vector<PetscReal> alpha{4, 5, 3, 6}, beta{1, -2, 0.5}, rhs{1, 2, 3, 4};
  std::vector<PetscReal> s(4), pivot(4);
  ASSERT_EQ(bilevel::solve_spd_tridiagonal(alpha, beta, rhs, s, pivot), 4);
  for (int i = 0; i < 4; ++i) {  // residual of T s = rhs row by row
    PetscReal t = alpha[i] * s[i];
    if (i > 0) t += beta[i - 1] * s[i - 1];
    if (i < 3) t += beta[i] * s[i + 1];
    EXPECT_NEAR(t, rhs[i], 1e-13);
  }
  // Second pivot 1 − 4/1 < 0: only the 1 x 1 leading block is definite, and s solves it.
  const std::vector<PetscReal> bad_alpha{1, 1, 1}, bad_beta{2, 0};
  EXPECT_EQ(bilevel::solve_spd_tridiagonal(bad_alpha, bad_beta, rhs, s, pivot), 1);
  EXPECT_DOUBLE_EQ(s[0], 1.0);
}

// With a fixed operator and right-hand side, one DLanczos cycle is the Lanczos form of CG: the error of
// v = T_j⁻¹-Galerkin solution decreases with j, and the recurrence's residual estimate is the true residual
// while the basis is still orthogonal.
TEST(DynamicLanczos, OneCycleOnAFixedSystemConvergesLikeConjugateGradients) {
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, seedtest::quad(100));
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), b = p.create_lower_vec(), v = p.create_lower_vec(),
       exact = p.create_lower_vec(), r = p.create_lower_vec();
  p.initial_point(x, y);
  p.upper_grad(x, y, bilevel::Batch::all(), nullptr, b);  // b = y − t ≠ 0
  p.apply_inverse(b, exact);                              // A⁻¹ b
  PetscReal exact_norm = 0;
  VecNorm(exact, NORM_2, &exact_norm);
  bilevel::DynamicLanczos lanczos;
  lanczos.setup(y, 40);
  VecSet(v, 0.0);
  lanczos.restart(p, x, y, bilevel::Batch::all(), v, b);
  std::vector<PetscReal> errors;
  for (PetscInt j = 1; j <= 40; ++j) {
    lanczos.extend(p, x, y, bilevel::Batch::all());
    const PetscReal estimate = lanczos.solve(b, v);
    p.lower_hvp(x, y, bilevel::Batch::all(), v, r);
    VecAXPY(r, -1.0, b);
    PetscReal residual = 0, err = 0;
    VecNorm(r, NORM_2, &residual);
    VecAXPY(v, -1.0, exact);
    VecNorm(v, NORM_2, &err);
    errors.push_back(err / exact_norm);
    if (j <= 8) EXPECT_NEAR(estimate, residual, 1e-8 * (1 + residual)) << "j = " << j;
  }
  EXPECT_EQ(lanczos.dimension(), 40);
  EXPECT_TRUE(lanczos.exhausted());  // the basis is full: the caller must restart
  EXPECT_LT(errors[9], 0.5 * errors[0]);
  EXPECT_LT(errors[19], 0.1 * errors[9]);
  EXPECT_LT(errors[39], 1e-3 * errors[0]);  // CG bound 2((√κ−1)/(√κ+1))^40 ≈ 6e-4 at κ = 100
}

// The accuracy knob of LancBiO is the subspace dimension m (here fixed: initial_dim = max_dim = m).
// Preconditioned by an inexact inverse with κ(M A) <= 3 (quadratic's preconditioner_error 0.5), a cycle
// on a κ = 1e4 system converges like CG on κ = 3; the plain process is far from converged after as many
// steps. The returned estimate is the M-norm residual sqrt(rᵀ M r).
TEST(DynamicLanczos, PreconditionedCycleConvergesAtTheRateOfThePreconditionedSystem) {
  bilevel::QuadraticOptions o = seedtest::quad(1e4);
  o.preconditioner_error = 0.5;
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, o);
  ASSERT_TRUE(bilevel::has(p.capabilities(), bilevel::Capability::LowerPreconditioner));
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), b = p.create_lower_vec(), v = p.create_lower_vec(),
       exact = p.create_lower_vec(), r = p.create_lower_vec(), mr = p.create_lower_vec();
  p.initial_point(x, y);
  p.upper_grad(x, y, bilevel::Batch::all(), nullptr, b);
  p.apply_inverse(b, exact);
  PetscReal exact_norm = 0;
  VecNorm(exact, NORM_2, &exact_norm);
  std::vector<PetscReal> error;  // after 12 steps: preconditioned, plain
  for (bool pc : {true, false}) {
    bilevel::DynamicLanczos lanczos;
    lanczos.setup(y, 12, pc);
    EXPECT_EQ(lanczos.preconditioned(), pc);
    VecSet(v, 0.0);
    lanczos.restart(p, x, y, bilevel::Batch::all(), v, b);
    PetscReal estimate = 0;
    for (PetscInt j = 1; j <= 12; ++j) {
      lanczos.extend(p, x, y, bilevel::Batch::all());
      estimate = lanczos.solve(b, v);
      if (pc && j <= 6) {  // the estimate is ||A v − b||_M while the basis is still orthogonal
        p.lower_hvp(x, y, bilevel::Batch::all(), v, r);
        VecAXPY(r, -1.0, b);
        p.lower_precondition(r, mr);
        PetscReal rmr = 0;
        VecDot(r, mr, &rmr);
        EXPECT_NEAR(estimate, std::sqrt(rmr), 1e-8 * (1 + std::sqrt(rmr))) << "j = " << j;
      }
    }
    EXPECT_EQ(lanczos.dimension(), 12);
    VecAXPY(v, -1.0, exact);
    PetscReal err = 0;
    VecNorm(v, NORM_2, &err);
    error.push_back(err / exact_norm);
  }
  EXPECT_LT(error[0], 1e-5);  // CG bound at κ = 3 after 12 steps: 2 ((√3 − 1)/(√3 + 1))^12 ≈ 2e-7 (A-norm)
  EXPECT_GT(error[1], 1e-2);  // plain Lanczos at κ = 1e4: barely started
}

}  // namespace
