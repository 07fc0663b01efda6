// SubspaceSolver2D (blocks/subspace_2d.hpp): the two-dimensional Galerkin step of SubBiO on a fixed system
// of the closed-form quadratic, against the gradient step it contains and A⁻¹ b.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bilevel/blocks/subspace_2d.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "support/seed_harness.hpp"

namespace {

/// ||e||_A = sqrt(eᵀ A e) of e = v − A⁻¹ b. Collective.
PetscReal a_norm_error(bilevel::QuadraticProblem& p, Vec x, Vec y, Vec v, Vec exact) {
  auto e = p.create_lower_vec(), ae = p.create_lower_vec();
  VecWAXPY(e, -1.0, exact, v);
  p.lower_hvp(x, y, bilevel::Batch::all(), e, ae);
  PetscReal d = 0;
  VecDot(e, ae, &d);
  return std::sqrt(d);
}

// S = span{b, (I − ηA)v} contains the gradient step v − η(Av − b): the Galerkin solution is never worse in
// the A-norm, and the residual it reports (from the products A W) is the true one.
TEST(SubspaceSolver2D, IsNeverWorseThanTheGradientStepAndReportsTheTrueResidual) {
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, seedtest::quad(100));
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), b = p.create_lower_vec(), v = p.create_lower_vec(),
       gd = p.create_lower_vec(), exact = p.create_lower_vec(), av = p.create_lower_vec();
  p.initial_point(x, y);
  p.upper_grad(x, y, bilevel::Batch::all(), nullptr, b);
  p.apply_inverse(b, exact);
  const PetscReal eta = 0.01;
  bilevel::SubspaceSolver2D solver;
  solver.setup(y);
  VecSet(v, 0.3);
  for (int k = 0; k < 20; ++k) {
    p.lower_hvp(x, y, bilevel::Batch::all(), v, av);  // gradient step from the same v
    VecWAXPY(gd, -eta, av, v);
    VecAXPY(gd, eta, b);
    const bilevel::Subspace2DResult r = solver.solve(p, x, y, bilevel::Batch::all(), b, eta, v);
    EXPECT_EQ(r.dimension, 2);
    EXPECT_EQ(r.hvps, 3);
    EXPECT_LE(a_norm_error(p, x, y, v, exact), a_norm_error(p, x, y, gd, exact) * (1 + 1e-12));
    p.lower_hvp(x, y, bilevel::Batch::all(), v, av);
    VecAXPY(av, -1.0, b);
    PetscReal res = 0;
    VecNorm(av, NORM_2, &res);
    EXPECT_NEAR(r.residual, res, 1e-10 * (1 + res));
  }
  // From v = 0 the second direction vanishes: a one-dimensional solve along b with 2 products.
  VecSet(v, 0.0);
  const bilevel::Subspace2DResult first = solver.solve(p, x, y, bilevel::Batch::all(), b, eta, v);
  EXPECT_EQ(first.dimension, 1);
  EXPECT_EQ(first.hvps, 2);
}

// Preconditioned, S = span{M b, (I − η M A) v} holds v + η M (b − A v): with M = A⁻¹ and η = 1 one step is
// exact; with an inexact inverse (κ(M A) <= 3) and η = 1/λ_max(M A) the steps converge at least at the
// Richardson rate 1 − 1/κ(M A) on a κ = 1e4 system.
TEST(SubspaceSolver2D, PreconditionedStepIsExactWithTheExactInverseAndFastWithAnInexactOne) {
  for (PetscReal eps : {0.0, 0.5}) {
    bilevel::QuadraticOptions o = seedtest::quad(1e4);
    o.preconditioner_error = eps;
    bilevel::QuadraticProblem p(PETSC_COMM_WORLD, o);
    auto x = p.create_upper_vec(), y = p.create_lower_vec(), b = p.create_lower_vec(),
         v = p.create_lower_vec(), exact = p.create_lower_vec(), zero = p.create_lower_vec();
    p.initial_point(x, y);
    p.upper_grad(x, y, bilevel::Batch::all(), nullptr, b);
    p.apply_inverse(b, exact);
    VecSet(zero, 0.0);
    const PetscReal e0 = a_norm_error(p, x, y, zero, exact);  // ||A⁻¹ b||_A
    bilevel::SubspaceSolver2D solver;
    solver.setup(y, true);
    ASSERT_TRUE(solver.preconditioned());
    VecSet(v, 0.3);
    const int steps = eps == 0 ? 1 : 25;
    const PetscReal eta = eps == 0 ? 1.0 : 1.0 / bilevel::estimate_preconditioned_lipschitz(p, x, y);
    if (eps > 0) EXPECT_NEAR(1.0 / eta, 1.1 * 2.0, 0.05);  // λ_max(M A) = 1/(1 − ε) = 2, padded by 10%
    bilevel::Subspace2DResult r;
    for (int k = 0; k < steps; ++k) r = solver.solve(p, x, y, bilevel::Batch::all(), b, eta, v);
    EXPECT_EQ(r.hvps, 3);
    const PetscReal err = a_norm_error(p, x, y, v, exact);
    if (eps == 0)
      EXPECT_LT(err, 1e-10 * e0);
    else
      EXPECT_LT(err, 1e-4 * e0);  // Richardson bound (1 − 1/3.3)^25 ≈ 1.7e-4, the Galerkin step does better
  }
}

}  // namespace
