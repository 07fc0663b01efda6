#pragma once
/// \file `hyperclean`: data hyper-cleaning with one weight per training sample (DESIGN.md, Problems).
///
///   g(x, y) = (1/n) Σ_{i ∈ train} σ(x_i) CE(y; a_i, l̃_i) + μ/2 ||W||² + μ_b/2 ||b||²
///   f(x, y) = (1/m) Σ_{i ∈ validation} CE(y; a_i, l_i)
///
/// with the multinomial linear model y = (W, b), W ∈ R^{n_features × K}, b ∈ R^K, scores
/// z_i = Wᵀ a_i + b, CE(y; a, l) = log Σ_k e^{z_k} − z_l, σ the logistic function, l̃ the corrupted
/// training labels and l the clean validation labels.
///
/// Layout of y: the (n_features + 1) × K matrix [W; bᵀ] row-major, so y[j K + k] = W_jk and
/// y[n_features K + k] = b_k (a distributed Vec of length (n_features + 1) K). x has one entry per
/// training sample with the parallel layout of the training rows, so J w and ∇_x g are local.
#include <cstdint>
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
class MultinomialEngine;
class KronPreconditioner;
class LocalRows;
}  // namespace detail

/// Settings of HypercleanProblem. Options database keys in brackets.
struct HypercleanOptions {
  /// [-bilevel_hyperclean_mu] μ, the l2 weight on W. Default chosen by the study in hyperclean.cpp: the
  /// test accuracy of the model trained on the correctly labelled rows only is flat (84.2%) over
  /// 2e-4 … 5e-4 on Fashion-MNIST; 5e-4 is the best-conditioned end of that plateau.
  PetscReal mu = 5e-4;
  /// [-bilevel_hyperclean_mu_bias] μ_b, the l2 weight on the bias; negative means "the same as μ".
  /// (CE is invariant under adding one constant to every b_k; a small μ_b keeps H positive definite.)
  PetscReal mu_bias = -1;
  PetscReal corruption = 0.5;   ///< [-bilevel_hyperclean_corruption] fraction p of labels changed
  PetscInt n_train = 50000;     ///< [-bilevel_hyperclean_n_train] first rows of the training file
  PetscInt n_val = 10000;       ///< [-bilevel_hyperclean_n_val] last rows of the training file
  std::string format = "auto";  ///< [-bilevel_hyperclean_format dense|sparse|auto] (auto: dense above 30%)
  std::uint64_t seed = 1;       ///< [-bilevel_hyperclean_seed] seed of the corruption
  PetscReal initial_x = 0;      ///< [-bilevel_hyperclean_initial_x] x_i at the start (σ = 1/2)
  /// [-bilevel_hyperclean_cheap_preconditioner_rank] r of the spectral truncation served for
  /// PreconditionerKind::Cheap (0: the exact Cholesky form for that kind too); see
  /// src/problems/kron_preconditioner.hpp.
  PetscInt cheap_preconditioner_rank = 100;
  /// Reads the keys above (prefix -bilevel_hyperclean_) and validates them. Collective on comm.
  static HypercleanOptions from_options(MPI_Comm comm);
  PetscReal bias_weight() const { return mu_bias < 0 ? mu : mu_bias; }
};

/// Which per-sample weights a fit of the lower level uses (HypercleanProblem::fit).
enum class FitWeights {
  Uniform,    ///< every sample weight 1: the baseline trained on the noisy labels
  CleanOnly,  ///< weight 1 on correctly labelled samples, 0 on corrupted ones (the ideal cleaning)
  Sigmoid,    ///< σ(x_i) for a given x: an accurate solve of the lower level itself, y*(x)
};

/// Outcome of HypercleanProblem::fit.
struct FitReport {
  PetscInt iterations = 0;
  PetscReal objective = 0;
  PetscReal gradient_norm = 0;
  PetscReal seconds = 0;
  bool converged = false;
};

/// How well σ(x) < 1/2 flags the corrupted training samples.
struct DetectionStats {
  PetscInt corrupted = 0;       ///< training samples whose label was changed
  PetscInt flagged = 0;         ///< samples with σ(x_i) < 1/2
  PetscInt true_positives = 0;  ///< corrupted and flagged
  PetscReal precision = 0, recall = 0, f1 = 0;
};

/// The corrupted label of global training row `row` (clean label `label` among `classes`): with probability
/// p a uniformly drawn different class, from a counter-based hash of (seed, row), so it does not depend on
/// the rank count. Not collective.
PetscInt corrupt_label(std::uint64_t seed, PetscReal p, PetscInt row, PetscInt label, PetscInt classes);

/// Data hyper-cleaning; see the file comment. Data-parallel: every rank evaluates its rows against the
/// model gathered to all ranks; dense row blocks use one BLAS dgemm per direction (Z = A W and G = Aᵀ R),
/// sparse blocks a fused CSR kernel over the K columns. Every method is collective on comm().
class HypercleanProblem final : public BilevelProblem {
 public:
  /// `train` holds the clean labels (kept for diagnostics); the constructor corrupts a copy with
  /// options.corruption and options.seed, and converts the blocks to options.format. Class indices of
  /// the three sets are unified through their class values. Collective.
  HypercleanProblem(Dataset train,
                    Dataset validation,
                    std::optional<Dataset> test,
                    const HypercleanOptions& options);
  /// The protocol on Fashion-MNIST (the Debian package's files): first n_train training images corrupted,
  /// last n_val training images clean validation, t10k the test set. Collective on comm.
  static std::unique_ptr<HypercleanProblem> fashion_mnist(MPI_Comm comm, const HypercleanOptions& options);
  /// The protocol on files: IDX image files (paths containing "images-idx3"; labels beside them as
  /// "labels-idx1") or LIBSVM. Without a validation file, the last n_val rows of the training file are the
  /// validation set. `test` may be empty. Collective on comm.
  static std::unique_ptr<HypercleanProblem> from_files(MPI_Comm comm,
                                                       const std::string& train,
                                                       const std::string& validation,
                                                       const std::string& test,
                                                       const HypercleanOptions& options);
  ~HypercleanProblem() override;

  /// The communicator of the data sets. Not collective.
  MPI_Comm comm() const override { return comm_; }
  /// "hyperclean". Not collective.
  std::string name() const override { return "hyperclean"; }
  /// x: one entry per training row, with the training rows' layout. Collective.
  petsc::VecHandle create_upper_vec() const override;
  /// y = [W; bᵀ] row-major, (n_features + 1) K entries, PETSC_DECIDE layout. Collective.
  petsc::VecHandle create_lower_vec() const override;
  /// UpperValue, LowerValue, LowerGradX, Stochastic, LowerPreconditioner, PerSampleUpper (+ TestSet with a
  /// test set).
  /// Not collective.
  Capability capabilities() const override;
  /// Training and validation rows. Not collective.
  DatasetSizes dataset_sizes() const override;
  /// Local matrix storage and labels of the training, validation and test sets. Not collective.
  std::int64_t local_data_bytes() const override;
  /// Adam, step 0.3, y by truncated Newton, box x ∈ [−10, 10], 30 iterations / 110 s (methods with settings
  /// of their own for this problem: cluster/tuned/hyperclean/); lower strong convexity min(μ, μ_b). Not
  /// collective.
  ProblemHints hints() const override;
  /// x_i = options.initial_x, y = 0. Collective.
  void initial_point(Vec x, Vec y) override;
  /// Mean test cross-entropy and accuracy (arg max_k z_k = l). Collective.
  TestMetrics evaluate_test(Vec x, Vec y) override;
  /// Fraction of validation rows classified correctly. Collective.
  std::optional<PetscReal> validation_accuracy(Vec x, Vec y) override;
  /// y*(x) by the preconditioned L-BFGS of fit(Sigmoid), much faster than generic Newton-CG here. Collective.
  std::optional<PetscReal> solve_lower(Vec x, Vec y, PetscReal rtol) override;
  /// baseline_test_accuracy (noisy labels, uniform weights) and the detection precision/recall/F1 of
  /// σ(x) < 1/2 against the corrupted samples. Collective.
  std::vector<std::pair<std::string, PetscReal>> summary_extras(Vec x, Vec y) override;

  /// Minimises the lower level with fixed sample weights from y's current value, until ||∇|| ≤ gatol or
  /// max_it iterations, by L-BFGS preconditioned with (c G + μ) ⊗ I_K, G = (1/n) A'ᵀA' (computed once:
  /// one dsyrk pass over the data), c the mean softmax curvature (updated every 10 iterations). The loss
  /// keeps the 1/n of g, so CleanOnly is g at the ideal x, and Sigmoid (which needs x) is g itself: the
  /// result is then y*(x). Not counted as oracle calls. Collective.
  FitReport fit(Vec y, FitWeights weights, PetscReal gatol = 1e-5, PetscInt max_it = 1000, Vec x = nullptr);
  /// Test accuracy of the model trained on the noisy labels with uniform weights (fit(Uniform) from
  /// y = 0); computed once and cached. Collective.
  PetscReal baseline_test_accuracy();
  /// Detection quality of σ(x_i) < 1/2 (i.e. x_i < 0) against the corrupted set. Collective.
  DetectionStats detection(Vec x) const;
  /// Global number of corrupted training labels. Collective.
  PetscInt corrupted_count() const;

  /// The local training rows' labels: as corrupted (used by g) and as read. Not collective.
  std::span<const PetscInt> noisy_labels() const;
  std::span<const PetscInt> clean_labels() const;
  /// K, the classes of the unified label sets. Not collective.
  PetscInt n_classes() const { return classes_; }
  /// Features after padding to the widest set. Not collective.
  PetscInt n_features() const { return n_features_; }
  /// Storage of the data blocks (dense blocks are kept row-major). Not collective.
  DataFormat format() const;
  /// The settings in force. Not collective.
  const HypercleanOptions& options() const { return options_; }

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch) override;
  void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) override;
  PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch) override;
  void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) override;
  void lower_grad_y_multi_impl(std::span<const Vec> x,
                               Vec y,
                               const Batch& batch,
                               std::span<const Vec> gy) override;
  void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) override;
  void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  void lower_hvp_multi_impl(
      Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out) override;
  void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  /// M = P⁻¹, P = (c G + μ) ⊗ I_K (see KronPreconditioner), c from the cached probabilities.
  void lower_preconditioner_setup_impl(Vec x, Vec y, PreconditionerKind kind) override;
  void lower_precondition_impl(Vec r, Vec out) override;
  void lower_precondition_multi_impl(std::span<const Vec> r, std::span<const Vec> out) override;

 private:
  /// g with the given weights at the replicated model y_full; with grad_full, the whole ∇_y g on every rank.
  double value_grad_full(const PetscScalar* y_full,
                         const Batch& batch,
                         const PetscReal* weights,
                         PetscScalar* grad_full);
  /// Value and gradient of g with the given weights (gy, if not null, gets the local part).
  PetscReal lower_value_grad(Vec y, const Batch& batch, const PetscReal* weights, Vec gy);
  /// G = (1/n) Σ_i a'_i a'_iᵀ ((nf+1)², replicated), computed once (the preconditioner's Gram matrix).
  void ensure_gram();
  /// c = (1/n) Σ_i w_i (1 − ||p_i||²)/(K − 1) at the cached probabilities. Collective.
  double mean_curvature(const PetscReal* w);
  /// (1/n) Σ_i w_i (diag(p_i) − p_i p_iᵀ) at the cached probabilities, K × K on every rank. Collective.
  std::vector<PetscScalar> class_curvature(const PetscReal* w);
  /// ω = σ(x) and ω′ = σ(x)(1 − σ(x)) on the rows of `batch` (all rows for the full batch, then cached for
  /// x's state). Not collective.
  void refresh_weights(Vec x, const Batch& batch = Batch::all());
  void check_layouts(Vec x, Vec y) const;

  MPI_Comm comm_;
  HypercleanOptions options_;
  std::unique_ptr<detail::MultinomialEngine> engine_;  // the data sets and the passes (shared with softmax)
  PetscInt n_features_ = 0, classes_ = 0, dy_ = 0, y_begin_ = 0;
  std::vector<PetscScalar> ridge_;                  // μ on y's local entries of W, μ_b on those of b
  std::vector<PetscInt> clean_labels_;              // local training rows, as read
  std::vector<PetscReal> weight_, dweight_;         // σ(x_i), σ'(x_i) = σ(x_i)(1 − σ(x_i))
  std::unique_ptr<detail::LocalRows> weight_rows_;  // the rows a minibatch refresh_weights refreshed
  PetscObjectId weight_id_ = 0;
  PetscObjectState weight_state_ = -1;
  std::optional<PetscReal> baseline_accuracy_;
  std::vector<PetscScalar> gram_;
  std::unique_ptr<detail::KronPreconditioner> pc_exact_, pc_cheap_;  // PreconditionerKind::Accurate / Cheap
  detail::KronPreconditioner* pc_ = nullptr;                         // the one the last setup built
};

}  // namespace bilevel
