#include <gtest/gtest.h>

#include <cmath>

#include "bilevel/bilevel.hpp"

namespace {

bilevel::QuadraticOptions small(PetscReal kappa = 50) {
  bilevel::QuadraticOptions o;
  o.dim_lower = 37;  // uneven split over 2 and 3 ranks
  o.dim_upper = 5;
  o.condition = kappa;
  o.seed = 11;
  return o;
}

TEST(QuadraticProblem, ClosedFormLowerSolutionZeroesTheLowerGradient) {
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, small());
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), g = p.create_lower_vec();
  VecSet(x, 0.7);

  p.exact_lower_solution(x, y);
  p.lower_grad_y(x, y, bilevel::Batch::all(), g);

  PetscReal gn = 0, yn = 0;
  VecNorm(g, NORM_2, &gn);
  VecNorm(y, NORM_2, &yn);
  EXPECT_GT(yn, 0.1);
  EXPECT_LT(gn, 1e-10 * yn);
}

TEST(QuadraticProblem, ExactHypergradientMatchesCentralDifferencesOfTheReducedObjective) {
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, small());
  auto x = p.create_upper_vec(), d = p.create_upper_vec(), g = p.create_upper_vec(),
       xp = p.create_upper_vec();
  VecSet(x, 0.3);
  PetscInt lo = 0, hi = 0;
  VecGetOwnershipRange(d, &lo, &hi);
  for (PetscInt i = lo; i < hi; ++i) VecSetValue(d, i, std::sin(1.0 + i), INSERT_VALUES);
  VecAssemblyBegin(d);
  VecAssemblyEnd(d);

  p.exact_hypergradient(x, g);
  const PetscReal eps = 1e-5;
  VecWAXPY(xp, eps, d, x);
  const PetscReal fp = p.exact_upper_objective(xp);
  VecWAXPY(xp, -eps, d, x);
  const PetscReal fm = p.exact_upper_objective(xp);
  PetscReal gd = 0;
  VecDot(g, d, &gd);

  EXPECT_NEAR((fp - fm) / (2 * eps), gd, 1e-6 * std::max<PetscReal>(1, std::abs(gd)));
}

TEST(QuadraticProblem, OptimalPointHasZeroHypergradientAndTheLowestObjective) {
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, small());
  auto xs = p.create_upper_vec(), g = p.create_upper_vec(), x = p.create_upper_vec();

  p.optimal_upper_point(xs);
  p.exact_hypergradient(xs, g);
  PetscReal gn = 0;
  VecNorm(g, NORM_2, &gn);
  VecCopy(xs, x);
  VecShift(x, 0.01);

  EXPECT_LT(gn, 1e-9);
  EXPECT_LT(p.optimal_upper_objective(), p.exact_upper_objective(x));
}

TEST(QuadraticProblem, OraclesMatchFiniteDifferences) {
  bilevel::QuadraticProblem p(PETSC_COMM_WORLD, small());
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), w = p.create_lower_vec(),
       hw = p.create_lower_vec(), g1 = p.create_lower_vec(), g2 = p.create_lower_vec(),
       yp = p.create_lower_vec(), jw = p.create_upper_vec(), gx = p.create_upper_vec(),
       xp = p.create_upper_vec(), e = p.create_upper_vec();
  VecSet(x, 0.5);
  VecSet(y, 0.2);
  VecSet(w, 1.0);
  VecSet(e, 1.0);
  const PetscReal eps = 1e-6;
  const auto all = bilevel::Batch::all();

  // HVP: (∇g(y + εw) − ∇g(y − εw)) / 2ε ≈ H w
  VecWAXPY(yp, eps, w, y);
  p.lower_grad_y(x, yp, all, g1);
  VecWAXPY(yp, -eps, w, y);
  p.lower_grad_y(x, yp, all, g2);
  VecAXPY(g1, -1.0, g2);
  VecScale(g1, 1 / (2 * eps));
  p.lower_hvp(x, y, all, w, hw);
  VecAXPY(g1, -1.0, hw);
  PetscReal err = 0, ref = 0;
  VecNorm(g1, NORM_2, &err);
  VecNorm(hw, NORM_2, &ref);
  EXPECT_LT(err, 1e-6 * ref);

  // JVP: eᵀ J w = (<∇_y g(x + εe), w> − <∇_y g(x − εe), w>) / 2ε
  VecWAXPY(xp, eps, e, x);
  p.lower_grad_y(xp, y, all, g1);
  VecWAXPY(xp, -eps, e, x);
  p.lower_grad_y(xp, y, all, g2);
  PetscReal a = 0, b = 0, ej = 0;
  VecDot(g1, w, &a);
  VecDot(g2, w, &b);
  p.lower_jvp(x, y, all, w, jw);
  VecDot(e, jw, &ej);
  EXPECT_NEAR((a - b) / (2 * eps), ej, 1e-6 * std::max<PetscReal>(1, std::abs(ej)));

  // ∇_x g against values of g
  p.lower_grad_x(x, y, all, gx);
  VecWAXPY(xp, eps, e, x);
  const PetscReal gp = p.lower_value(xp, y, all);
  VecWAXPY(xp, -eps, e, x);
  const PetscReal gm = p.lower_value(xp, y, all);
  PetscReal egx = 0;
  VecDot(e, gx, &egx);
  EXPECT_NEAR((gp - gm) / (2 * eps), egx, 1e-5 * std::max<PetscReal>(1, std::abs(egx)));
  EXPECT_EQ(p.counts().hvp, 1);
  EXPECT_EQ(p.counts().jvp, 1);
}

}  // namespace
