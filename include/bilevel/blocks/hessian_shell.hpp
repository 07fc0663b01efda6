#pragma once
/// \file The lower Hessian H = ∇²_yy g(x, y) at a point as a MATSHELL, so KSP, SLEPc and LMVM consume it.
#include <petscmat.h>

#include <exception>
#include <memory>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// A MATSHELL whose MatMult is problem.lower_hvp(x, y, batch, ·). Exceptions thrown by the problem inside
/// KSP/EPS are parked and rethrown by the caller (BILEVEL_PETSC_CALL_GUARDED with pending()).
/// Collective on the problem's communicator.
class HessianShell {
 public:
  HessianShell(BilevelProblem& problem, Vec y_layout);
  /// Sets the point (x, y) and the batch the products use; the Vecs and the batch's indices must stay
  /// alive while the operator is used. Not collective.
  void set_point(Vec x, Vec y, const Batch& batch);
  Mat mat() const { return mat_; }
  std::exception_ptr& pending() { return ctx_->pending; }

  struct Context {
    BilevelProblem* problem = nullptr;
    Vec x = nullptr, y = nullptr;
    Batch batch;
    std::vector<PetscInt> indices;  // owned copy of a minibatch
    std::exception_ptr pending;
  };

 private:
  std::unique_ptr<Context> ctx_;  // stable address, declared before the Mat that points to it
  petsc::MatHandle mat_;
};

/// Largest eigenvalue of H(x, y) (full batch), estimated with SLEPc's Krylov-Schur (prefix
/// -bilevel_eig_), used to set step sizes 1/L. Collective.
PetscReal estimate_lower_lipschitz(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol = 1e-3);

}  // namespace bilevel
