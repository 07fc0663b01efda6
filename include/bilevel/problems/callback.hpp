#pragma once
/// \file A problem made of user callbacks on Vecs: the embedding API for users' own PETSc programs.
#include <functional>
#include <string>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// Oracles given as callables. Required: upper_grad, lower_grad_y, lower_hvp, lower_jvp; the others
/// enable capabilities (values: UpperValue/LowerValue; lower_grad_x: LowerGradX). Callbacks receive the
/// solver's distributed Vecs (layouts of dim_upper/dim_lower with PETSC_DECIDE) and must be collective.
/// The batch is ignored: a callback problem is deterministic.
struct ProblemCallbacks {
  std::function<void(Vec x, Vec y, Vec gx, Vec gy)> upper_grad;        ///< ∇_x f, ∇_y f (either may be null)
  std::function<void(Vec x, Vec y, Vec gy)> lower_grad_y;              ///< ∇_y g
  std::function<void(Vec x, Vec y, Vec w, Vec out)> lower_hvp;         ///< H w
  std::function<void(Vec x, Vec y, Vec w, Vec out)> lower_jvp;         ///< J w
  std::function<PetscReal(Vec x, Vec y)> upper_value;                  ///< f (optional)
  std::function<PetscReal(Vec x, Vec y)> lower_value;                  ///< g (optional)
  std::function<void(Vec x, Vec y, Vec gx)> lower_grad_x;              ///< ∇_x g (optional)
  std::function<void(Vec x, Vec y)> initial_point;                     ///< default: zeros
};

/// Collective on comm for every method, like BilevelProblem.
class CallbackProblem : public BilevelProblem {
 public:
  /// Throws InputError naming a missing required callback.
  CallbackProblem(MPI_Comm comm, PetscInt dim_upper, PetscInt dim_lower, ProblemCallbacks callbacks,
                  std::string name = "user");
  MPI_Comm comm() const override { return comm_; }
  std::string name() const override { return name_; }
  petsc::VecHandle create_upper_vec() const override;
  petsc::VecHandle create_lower_vec() const override;
  Capability capabilities() const override;
  ProblemHints hints() const override { return hints_; }
  /// Sets what hints() returns (step sizes, box, known Lipschitz constant). Not collective.
  void set_hints(const ProblemHints& hints) { hints_ = hints; }
  void initial_point(Vec x, Vec y) override;

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch) override;
  void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) override;
  PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch) override;
  void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) override;
  void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) override;
  void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;

 private:
  MPI_Comm comm_;
  PetscInt dx_, dy_;
  ProblemCallbacks cb_;
  std::string name_;
  ProblemHints hints_;
};

}  // namespace bilevel
