#include "bilevel/blocks/subspace_2d.hpp"

#include <array>
#include <cmath>
#include <string>

#include "bilevel/core/converged_reason.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

void SubspaceSolver2D::setup(Vec y_layout, bool precondition) {
  precondition_ = precondition;
  for (petsc::VecHandle* v : {&hv_, &w1_, &w2_, &hw1_, &hw2_, &r_}) *v = petsc::duplicate(y_layout);
}

Subspace2DResult SubspaceSolver2D::solve(
    BilevelProblem& problem, Vec x, Vec y, const Batch& batch, Vec b, PetscReal eta, Vec v) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  if (!hv_) setup(v, false);
  Subspace2DResult out;
  PetscReal bnorm = 0;
  BILEVEL_PETSC_CALL(VecNorm(b, NORM_2, &bnorm));
  if (!(bnorm > 0)) {  // H v = 0 has v = 0
    BILEVEL_PETSC_CALL(VecSet(v, 0.0));
    out.residual = 0;
    return out;
  }
  problem.lower_hvp(x, y, batch, v, hv_);  // H v_k
  ++out.hvps;
  PetscReal w1b = bnorm;  // w_1ᵀ b
  if (precondition_) {
    problem.lower_preconditioner_setup(x, y);
    problem.lower_precondition(hv_, r_);
    BILEVEL_PETSC_CALL(VecWAXPY(w2_, -eta, r_, v));  // v_1 = (I − η M H) v_k
    problem.lower_precondition(b, w1_);              // M b
    PetscReal mbnorm = 0;
    BILEVEL_PETSC_CALL(VecNorm(w1_, NORM_2, &mbnorm));
    if (!(mbnorm > 0) || !std::isfinite(mbnorm))
      throw NumericalFailure(
          ConvergedReason::DivergedLinearSolve,
          "subspace step: the problem's preconditioner maps the nonzero grad_y f to a vector of norm " +
              std::to_string(mbnorm));
    BILEVEL_PETSC_CALL(VecScale(w1_, 1.0 / mbnorm));  // w_1 = M b/||M b||
    BILEVEL_PETSC_CALL(VecDot(w1_, b, &w1b));
  } else {
    BILEVEL_PETSC_CALL(VecWAXPY(w2_, -eta, hv_, v));  // v_1 = (I − η H) v_k   (Alg. 1, second direction)
    BILEVEL_PETSC_CALL(VecAXPBY(w1_, 1.0 / bnorm, 0.0, b));  // w_1 = b/||b||         (first direction)
  }
  PetscReal v1norm = 0;
  BILEVEL_PETSC_CALL(VecNorm(w2_, NORM_2, &v1norm));
  // w_2 = v_1 − (w_1ᵀ v_1) w_1, twice (classical Gram-Schmidt with one reorthogonalisation).
  PetscReal w2norm = 0;
  for (int pass = 0; pass < 2; ++pass) {
    PetscReal c = 0;
    BILEVEL_PETSC_CALL(VecDot(w1_, w2_, &c));
    BILEVEL_PETSC_CALL(VecAXPY(w2_, -c, w1_));
  }
  BILEVEL_PETSC_CALL(VecNorm(w2_, NORM_2, &w2norm));
  const bool two = std::isfinite(w2norm) && w2norm > 1e-10 * v1norm && w2norm > 0;
  std::array<PetscReal, 2> s{0, 0};
  if (two) {
    BILEVEL_PETSC_CALL(VecScale(w2_, 1.0 / w2norm));
    const Vec w[2] = {w1_, w2_};
    const Vec hw[2] = {hw1_, hw2_};
    problem.lower_hvp_multi(x, y, batch, w, hw);  // H W = [H w_1, H w_2] in one pass
    out.hvps += 2;
    // G = Wᵀ H W (symmetrised) and Wᵀ b, in one split reduction.
    PetscScalar g1[2], g2[2], wb[2];
    BILEVEL_PETSC_CALL(VecMDotBegin(w1_, 2, hw, g1));
    BILEVEL_PETSC_CALL(VecMDotBegin(w2_, 2, hw, g2));
    BILEVEL_PETSC_CALL(VecMDotBegin(b, 2, w, wb));
    BILEVEL_PETSC_CALL(VecMDotEnd(w1_, 2, hw, g1));
    BILEVEL_PETSC_CALL(VecMDotEnd(w2_, 2, hw, g2));
    BILEVEL_PETSC_CALL(VecMDotEnd(b, 2, w, wb));
    const PetscReal a = g1[0], c = g2[1], o = 0.5 * (g1[1] + g2[0]);
    const PetscReal det = a * c - o * o;
    if (a > 0 && c > 0 && det > 1e-12 * a * c) {
      s = {(c * wb[0] - o * wb[1]) / det, (a * wb[1] - o * wb[0]) / det};  // s = (WᵀHW)⁻¹ Wᵀ b (Cramer)
      out.dimension = 2;
    } else if (a > 0) {
      s = {wb[0] / a, 0};  // indefinite 2 x 2: one-dimensional Galerkin step on w_1
      out.dimension = 1;
    }
  } else {
    problem.lower_hvp(x, y, batch, w1_, hw1_);  // S is one-dimensional: only H w_1
    ++out.hvps;
    PetscReal a = 0;
    BILEVEL_PETSC_CALL(VecDot(w1_, hw1_, &a));
    if (a > 0) {
      s = {w1b / a, 0};
      out.dimension = 1;
    }
  }
  if (out.dimension == 0) {
    // No positive curvature along b: keep the gradient step v − η (H v − b) (residual not available);
    // preconditioned, v − η M (H v − b).
    BILEVEL_PETSC_CALL(VecAXPY(hv_, -1.0, b));
    if (precondition_) {
      problem.lower_precondition(hv_, r_);
      BILEVEL_PETSC_CALL(VecAXPY(v, -eta, r_));
    } else {
      BILEVEL_PETSC_CALL(VecAXPY(v, -eta, hv_));
    }
    return out;
  }
  BILEVEL_PETSC_CALL(VecAXPBY(v, s[0], 0.0, w1_));
  if (out.dimension == 2) BILEVEL_PETSC_CALL(VecAXPY(v, s[1], w2_));  // v_{k+1} = W s
  BILEVEL_PETSC_CALL(VecCopy(hw1_, r_));
  BILEVEL_PETSC_CALL(VecScale(r_, s[0]));
  if (out.dimension == 2) BILEVEL_PETSC_CALL(VecAXPY(r_, s[1], hw2_));  // H v_{k+1} = (H W) s
  BILEVEL_PETSC_CALL(VecAXPY(r_, -1.0, b));                             // r = H v_{k+1} − b
  BILEVEL_PETSC_CALL(VecNorm(r_, NORM_2, &out.residual));
  return out;
}

}  // namespace bilevel
