// TwoSystemSolver (blocks/two_system_solver.hpp): two systems with one lower Hessian, each product of the
// pair in one pass over the data, against A⁻¹ b on the closed-form quadratic.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>

#include "bilevel/bilevel.hpp"
#include "bilevel/blocks/two_system_solver.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::CountingQuadratic;
using seedtest::relative_error;

using bilevel::petsc::VecHandle;
using seedtest::quad;

/// Standard normal entries from the counter-based generator, the same at every rank count. Collective.
void pattern(Vec v, std::uint64_t stream) {
  testdata::fill(
      v, [stream](PetscInt i) { return bilevel::counter_normal(31, stream, static_cast<std::uint64_t>(i)); });
}

struct Systems {
  explicit Systems(PetscReal kappa)
      : p(PETSC_COMM_WORLD, quad(kappa, 50)), x(p.create_upper_vec()), y(p.create_lower_vec()) {
    VecSet(x, 0.3);
    VecSet(y, 0.0);
    for (std::size_t i = 0; i < 2; ++i) {
      b[i] = p.create_lower_vec();
      v[i] = p.create_lower_vec();
      exact[i] = p.create_lower_vec();
      pattern(b[i], 10 + i);
      p.apply_inverse(b[i], exact[i]);  // A⁻¹ b_i
    }
    solver.setup(y);
  }
  CountingQuadratic p;
  VecHandle x, y;
  std::array<VecHandle, 2> b, v, exact;
  bilevel::TwoSystemSolver solver;
};

TEST(TwoSystemSolver, ConjugateGradientsSolveBothSystemsWithOnePassPerIteration) {
  Systems s(100);
  VecSet(s.v[1], 0.5);  // warm start for the second system: its initial residual costs one product
  const auto rep = s.solver.cg(
      s.p, s.x, s.y, bilevel::Batch::all(), {{s.b[0], s.b[1]}, {s.v[0], s.v[1]}, {true, false}}, 200, 1e-12);
  EXPECT_LT(relative_error(s.v[0], s.exact[0]), 1e-9);
  EXPECT_LT(relative_error(s.v[1], s.exact[1]), 1e-9);
  EXPECT_GT(rep.iterations, 5);
  EXPECT_LT(rep.iterations, 200);
  EXPECT_EQ(s.p.single_calls, 0);  // never one vector at a time
  EXPECT_EQ(s.p.multi_calls, rep.passes);
  EXPECT_EQ(rep.passes, rep.iterations + 1);  // + the warm start's H v_1
  EXPECT_LE(rep.residual[0], 1e-12 * 20);
}

// Preconditioned by an inexact inverse (κ(M A) <= 1.86) on a κ = 1e4 system, CG on both systems reaches
// 1e-10 in the iterations CG needs at κ = 1.86; plain CG is far from it after as many.
TEST(TwoSystemSolver, PreconditionedConjugateGradientsConvergeAtThePreconditionedRate) {
  bilevel::QuadraticOptions o = quad(1e4, 50);
  o.preconditioner_error = 0.3;
  std::array<PetscReal, 2> error{};
  for (bool pc : {true, false}) {
    CountingQuadratic p(PETSC_COMM_WORLD, o);
    auto x = p.create_upper_vec(), y = p.create_lower_vec();
    VecSet(x, 0.3);
    VecSet(y, 0.0);
    std::array<VecHandle, 2> b, v, exact;
    for (std::size_t i = 0; i < 2; ++i) {
      b[i] = p.create_lower_vec();
      v[i] = p.create_lower_vec();
      exact[i] = p.create_lower_vec();
      pattern(b[i], 10 + i);
      p.apply_inverse(b[i], exact[i]);
    }
    bilevel::TwoSystemSolver solver;
    solver.setup(y, pc);
    EXPECT_EQ(solver.preconditioned(), pc);
    const auto rep =
        solver.cg(p, x, y, bilevel::Batch::all(), {{b[0], b[1]}, {v[0], v[1]}, {true, true}}, 14, 1e-10);
    EXPECT_EQ(p.single_calls, 0);
    EXPECT_GT(rep.iterations, 0);
    error[pc ? 0 : 1] = std::max(relative_error(v[0], exact[0]), relative_error(v[1], exact[1]));
  }
  EXPECT_LT(error[0], 1e-8);  // CG bound 2 ((√1.86 − 1)/(√1.86 + 1))^14 ≈ 2e-12 (A-norm)
  EXPECT_GT(error[1], 1e-3);
}

TEST(TwoSystemSolver, GradientStepsConvergeAndSkipTheProductOfAZeroStart) {
  Systems s(10);
  VecSet(s.v[1], 0.0);
  const auto one = s.solver.gradient(
      s.p, s.x, s.y, bilevel::Batch::all(), {{s.b[0], s.b[1]}, {s.v[0], s.v[1]}, {true, true}}, 1, 0.1);
  EXPECT_EQ(one.passes, 0);  // v_i = η b_i without products
  VecAXPY(s.v[0], -0.1, s.b[0]);
  PetscReal n = 1;
  VecNorm(s.v[0], NORM_2, &n);
  EXPECT_LT(n, 1e-15);
  const auto rep = s.solver.gradient(
      s.p, s.x, s.y, bilevel::Batch::all(), {{s.b[0], s.b[1]}, {s.v[0], s.v[1]}, {true, false}}, 400, 0.1);
  EXPECT_EQ(rep.passes, 400);  // the first step multiplies only the warm-started system
  EXPECT_EQ(s.p.single_calls, 0);
  EXPECT_LT(relative_error(s.v[0], s.exact[0]), 1e-10);
  EXPECT_LT(relative_error(s.v[1], s.exact[1]), 1e-10);
}

}  // namespace
