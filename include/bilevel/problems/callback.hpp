#pragma once
/// \file A problem made of user callbacks on Vecs: the embedding API for users' own PETSc programs.
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// One oracle of ProblemCallbacks: a callable written either with the minibatch,
///   (Vec x, Vec y, const Batch& batch, outputs...)   the mean over the samples of `batch` (batch.full: all),
/// or without it,
///   (Vec x, Vec y, outputs...)                        a deterministic oracle (the whole problem every call).
/// A Batch holds sorted global sample indices, the same on every rank (core/problem.hpp); each rank may
/// evaluate the samples it owns and reduce over the communicator. Not collective.
template <typename R, typename... Out>
class Oracle {
 public:
  using Function = std::function<R(Vec, Vec, const Batch&, Out...)>;
  Oracle() = default;
  Oracle(std::nullptr_t) {}  // NOLINT: "no oracle"
  template <typename F>
  requires std::is_invocable_r_v<R, F&, Vec, Vec, const Batch&, Out...> Oracle(F f)
      : f_(std::move(f)), takes_batch_(true) {}  // NOLINT: implicit, as std::function
  template <typename F>
  requires(!std::is_invocable_r_v<R, F&, Vec, Vec, const Batch&, Out...> &&
           std::is_invocable_r_v<R, F&, Vec, Vec, Out...>) Oracle(F f)  // NOLINT
      : f_([g = std::move(f)](Vec x, Vec y, const Batch&, Out... out) -> R { return g(x, y, out...); }) {}

  explicit operator bool() const { return static_cast<bool>(f_); }
  /// Whether the callable takes the batch (a stochastic problem needs every oracle to).
  bool takes_batch() const { return takes_batch_; }
  R operator()(Vec x, Vec y, const Batch& batch, Out... out) const { return f_(x, y, batch, out...); }

 private:
  Function f_;
  bool takes_batch_ = false;
};

/// The oracles of a user problem, as callables (each with or without the minibatch argument, see Oracle).
/// Required: upper_grad, lower_grad_y, lower_hvp, lower_jvp. Optional, each enabling a capability and the
/// methods that need it: upper_value (UpperValue; without it the run's upper objective is reported as
/// null/NaN), lower_value (LowerValue: line searches and value barriers on g), lower_grad_x
/// (LowerGradX: value-function methods); BilevelSolver::solve names the missing one and the methods that do
/// not need it. Callbacks receive the solver's distributed Vecs (layouts of dim_upper/dim_lower with
/// PETSC_DECIDE) and must be collective on the problem's communicator.
struct ProblemCallbacks {
  Oracle<void, Vec, Vec>
      upper_grad;  ///< (x, y, [batch,] gx, gy): ∇_x f into gx, ∇_y f into gy (either may be null)
  Oracle<void, Vec> lower_grad_y;                   ///< (x, y, [batch,] gy): ∇_y g
  Oracle<void, Vec, Vec> lower_hvp;                 ///< (x, y, [batch,] w, out): H w, H = ∇²_yy g
  Oracle<void, Vec, Vec> lower_jvp;                 ///< (x, y, [batch,] w, out): J w = ∇_x <∇_y g, w>
  Oracle<PetscReal> upper_value;                    ///< (x, y, [batch]): f (optional)
  Oracle<PetscReal> lower_value;                    ///< (x, y, [batch]): g (optional)
  Oracle<void, Vec> lower_grad_x;                   ///< (x, y, [batch,] gx): ∇_x g (optional)
  std::function<void(Vec x, Vec y)> initial_point;  ///< default: zeros
};

/// Collective on comm for every method, like BilevelProblem.
class CallbackProblem : public BilevelProblem {
 public:
  /// Throws InputError naming a missing required callback.
  CallbackProblem(MPI_Comm comm,
                  PetscInt dim_upper,
                  PetscInt dim_lower,
                  ProblemCallbacks callbacks,
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
  /// The samples behind the two levels: g is a mean over `sizes.lower` training samples and f over
  /// `sizes.upper` validation samples (0: f is deterministic, its batches are always full). Makes the
  /// problem Stochastic, so minibatch methods (-bilevel_batch_size, the stochastic methods) run on it; every
  /// oracle given must then take the batch (InputError naming the one that does not). Not collective.
  void set_dataset_sizes(DatasetSizes sizes);
  DatasetSizes dataset_sizes() const override { return sizes_; }

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
  DatasetSizes sizes_;
};

}  // namespace bilevel
