#pragma once
/// \file `softmax`: hyperparameter optimisation of l2-regularised multinomial logistic regression, with one
/// log-regulariser per feature (or one scalar).
///
///   g(x, y) = (1/n) Σ_{i ∈ train} CE(y; a_i, l_i) + 1/2 Σ_j e^{x_j} ||W_j||² + μ_b/2 ||b||²
///   f(x, y) = (1/m) Σ_{i ∈ validation} CE(y; a_i, l_i)
///
/// with y = [W; bᵀ] row-major ((n_features + 1) × K, as in hyperclean), W_j the K weights of feature j,
/// z_i = Wᵀ a_i + b and CE(y; a, l) = log Σ_k e^{z_k} − z_l. The bias gets a small fixed weight μ_b
/// (CE is invariant under adding one constant to every b_k, so without it H would be singular).
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

namespace detail {
class ExpRegularisers;
class MultinomialEngine;
}  // namespace detail

/// Settings of SoftmaxProblem. Options database keys in brackets.
struct SoftmaxOptions {
  bool scalar = false;           ///< [-bilevel_softmax_scalar] one regulariser for all features (dx = 1)
  PetscReal bias_weight = 1e-4;  ///< [-bilevel_softmax_bias_weight] μ_b, the fixed l2 weight on the bias
  /// [-bilevel_softmax_initial_x] starting log-regulariser (every j), as logreg's: log(1e-2).
  PetscReal initial_x = -4.605170185988091;
  /// [-bilevel_softmax_n_val] without a validation file, the last n_val rows of the training file validate.
  PetscInt n_val = 10000;
  std::string format = "auto";  ///< [-bilevel_softmax_format dense|sparse|auto] (auto: dense above 30%)
  /// [-bilevel_softmax_model_comm] how sparse rows get the model and return model-sized sums: "owners" (each
  /// rank receives the model rows its data rows use and adds its sums onto their owners), "gather" (the
  /// whole model to every rank, one allreduce of it), "auto" (owners from 4,096 model entries or at one
  /// rank, as logreg's)
  std::string model_comm = "auto";
  /// Reads the keys above (prefix -bilevel_softmax_). Collective on comm.
  static SoftmaxOptions from_options(MPI_Comm comm);
};

/// Multinomial logistic regression with per-feature (or scalar) log-regularisers; see the file comment.
/// Data-parallel like hyperclean. y's layout puts whole rows of [W; bᵀ] on each rank and x (per feature)
/// has the layout of those rows, so the regulariser terms are local. Every method is collective on comm().
class SoftmaxProblem final : public BilevelProblem {
 public:
  /// Takes the row-sharded sets; class indices are unified through their class values, features padded
  /// to the widest set, blocks converted to options.format. Fewer than 2 classes is an InputError.
  /// Collective.
  SoftmaxProblem(Dataset train,
                 Dataset validation,
                 std::optional<Dataset> test,
                 const SoftmaxOptions& options);
  /// Reads LIBSVM or IDX files (paths containing "images-idx3"); without a validation file the last
  /// options.n_val training rows validate. `test` may be empty. Collective on comm.
  static std::unique_ptr<SoftmaxProblem> from_files(MPI_Comm comm,
                                                    const std::string& train,
                                                    const std::string& validation,
                                                    const std::string& test,
                                                    const SoftmaxOptions& options);
  ~SoftmaxProblem() override;

  /// The communicator of the data sets. Not collective.
  MPI_Comm comm() const override { return comm_; }
  /// "softmax". Not collective.
  std::string name() const override { return "softmax"; }
  /// x: n_features entries laid out like the rows of [W; bᵀ] in y (or 1 entry on rank 0). Collective.
  petsc::VecHandle create_upper_vec() const override;
  /// y = [W; bᵀ] row-major, whole rows per rank. Collective.
  petsc::VecHandle create_lower_vec() const override;
  /// UpperValue, LowerValue, LowerGradX, Stochastic (+ TestSet with a test set). Not collective.
  Capability capabilities() const override;
  /// Training and validation rows. Not collective.
  DatasetSizes dataset_sizes() const override;
  /// Local matrix storage and labels of the training, validation and test sets. Not collective.
  std::int64_t local_data_bytes() const override;
  /// Adam, step 0.2, box x ∈ [−20, 10]. Not collective.
  ProblemHints hints() const override;
  /// y = 0, x_j = options.initial_x. Collective.
  void initial_point(Vec x, Vec y) override;
  /// Mean test cross-entropy and accuracy. Collective.
  TestMetrics evaluate_test(Vec x, Vec y) override;
  /// Fraction of validation rows classified correctly. Collective.
  std::optional<PetscReal> validation_accuracy(Vec x, Vec y) override;

  /// K, the classes of the unified label sets. Not collective.
  PetscInt n_classes() const { return classes_; }
  /// Features after padding to the widest set. Not collective.
  PetscInt n_features() const { return n_features_; }
  /// Storage of the data blocks (dense blocks are kept row-major). Not collective.
  DataFormat format() const;

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch) override;
  void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) override;
  PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch) override;
  void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) override;
  void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) override;
  void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  void lower_hvp_multi_impl(
      Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out) override;
  void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;

 private:
  /// e^{x_j} for this rank's features (or the scalar's value), from x.
  const PetscScalar* regularisers(Vec x);
  /// The diagonal of the regulariser's Hessian on y's local entries: e^{x_j} on W_jk, μ_b on the bias.
  std::span<const PetscScalar> ridge(Vec x);
  void check_layouts(Vec x, Vec y) const;

  MPI_Comm comm_;
  SoftmaxOptions options_;
  std::unique_ptr<detail::MultinomialEngine>
      engine_;  // the data sets and the passes (shared with hyperclean)
  PetscInt n_features_ = 0, classes_ = 0;
  PetscInt row_begin_ = 0,
           row_end_ = 0;  // this rank's rows of [W; bᵀ]; y holds entries [K row_begin_, K row_end_)
  std::unique_ptr<detail::ExpRegularisers> lambda_;  // e^x
  std::vector<PetscScalar> ridge_;  // e^{x_j} (μ_b) on y's local entries, for x of (ridge_id_, ridge_state_)
  PetscObjectId ridge_id_ = 0;
  PetscObjectState ridge_state_ = -1;
  PetscScalar ridge_scalar_ = 0;  // scalar x: the λ ridge_ holds
};

}  // namespace bilevel
