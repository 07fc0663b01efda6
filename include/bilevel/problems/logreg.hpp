#pragma once
/// \file `logreg`: hyperparameter optimisation of l2-regularised binary logistic regression, with one
/// log-regulariser per feature (or one scalar).
///
///   g(x, y) = (1/n) Σ_{i ∈ train} log(1 + exp(−b_i (a_i·w + c))) + 1/2 Σ_j e^{x_j} w_j²
///   f(x, y) = (1/m) Σ_{i ∈ validation} log(1 + exp(−b_i (a_i·w + c)))
///
/// y = (w, c): w ∈ R^{n_features}, c the unregularised intercept (last entry, optional); x ∈ R^{n_features}
/// (or R^1 with -bilevel_logreg_scalar, where e^{x_j} = e^{x} for every j). Labels: class 1 → b = +1,
/// class 0 → b = −1 (LIBSVM's ±1 and 0/1 both map that way).
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

namespace detail {
class Gatherer;
class ExpRegularisers;
}  // namespace detail

/// Settings of LogregProblem. Options database keys in brackets.
struct LogregOptions {
  bool scalar = false;    ///< [-bilevel_logreg_scalar] one regulariser for all features (dx = 1)
  bool intercept = true;  ///< [-bilevel_logreg_intercept] unregularised intercept c as the last entry of y
  /// [-bilevel_logreg_initial_x] starting log-regulariser x_j (every j). Default log(1e-2): on ijcnn1 (see
  /// logreg.cpp) the value function is on its slope there (flat above −2 and below −11) and the lower
  /// Hessian is well conditioned (λ_min ≥ 1e-2); the default method converges from it and diverges from x =
  /// 0.
  PetscReal initial_x = -4.605170185988091;
  /// [-bilevel_logreg_positive_classes] label map for multi-class files: labels in this list ("10-19",
  /// "1,3,5") become +1, the rest −1 (empty: the files' labels must be binary)
  std::string positive_classes;
  /// [-bilevel_logreg_n_val] without a validation file, the last n_val rows of the training file validate
  PetscInt n_val = 10000;
  /// [-bilevel_logreg_model_comm] how sparse rows get the model and return model-sized sums: "owners" (each
  /// rank receives the entries its rows use and adds its sums onto their owners), "gather" (the whole
  /// model to every rank, one allreduce of the whole model), "auto" (owners from 4,096 model entries or at
  /// one rank; docs/performance.md has the measurement)
  std::string model_comm = "auto";
  /// [-bilevel_logreg_hvp_kernel] the sparse HVP pass: "fused" (one pass per row, v and out apart),
  /// "interleaved" (the same pass on pairs (v_j, out_j)), "panel" (per panel of rows, all a_i·v, then all
  /// out += t_i a_i), "auto" (fused while v and out fit in 1 MiB, else interleaved; docs/performance.md)
  std::string hvp_kernel = "auto";
  /// [-bilevel_logreg_hvp_simd] AVX-512 loops for the sparse HVP when the CPU has them (checked at run time)
  bool hvp_simd = true;
  /// [-bilevel_logreg_preconditioner] the lower preconditioner M ≈ H⁻¹ offered to the methods
  /// (Capability::LowerPreconditioner): "jacobi" (M = diag(H)⁻¹ at (x, y), one pass over the training
  /// rows per setup, applied entry-wise) or "none"
  std::string preconditioner = "jacobi";
  /// [-bilevel_logreg_format] storage of the data sets read from files: "sparse" (CSR), "dense"
  /// (column-major, the oracles as dense matrix-vector products), "auto" (dense when dense storage of the
  /// training set is at most twice its CSR arrays and at most 512 MiB per rank; on ijcnn1, 1.1 times the
  /// CSR bytes, the HVP is 2.3 to 3.8 times faster dense: docs/performance.md)
  std::string format = "auto";
  /// Reads the keys above (prefix -bilevel_logreg_). Collective on comm.
  static LogregOptions from_options(MPI_Comm comm);
};

/// The fused one-pass logistic Hessian-vector kernel over CSR rows (also timed by `bilevel-bench hvp`):
///
///   for each row i < rows:  t_i = (a_i·v + v_c) · scale · d_i;   out[j] += t_i a_ij  (j ∈ row i),
///                           out[n_features] += t_i  (when intercept)
///
/// i.e. out += scale · [A 1]ᵀ D [A 1] v with D = diag(d), reading each row once. `v` and `out` have
/// n_features (+1 with intercept) entries. Bytes moved per call: nnz·(8+4) + (rows+1)·4 + rows·8.
/// Not collective.
void logistic_hvp_csr(PetscInt rows,
                      const PetscInt* ia,
                      const PetscInt* ja,
                      const PetscScalar* a,
                      const PetscReal* d,
                      PetscReal scale,
                      const PetscScalar* v,
                      PetscInt n_features,
                      bool intercept,
                      PetscScalar* out);

/// Binary logistic regression with per-feature (or scalar) log-regularisers; see the file comment.
/// Data-parallel: each rank evaluates its rows of the training / validation sets against the model
/// gathered to every rank, then model-sized results are summed with one MPI_Allreduce. x has the layout
/// of the first n_features entries of y (so the regulariser terms are local); with -bilevel_logreg_scalar
/// x is one entry on rank 0. Every method is collective on comm().
class LogregProblem final : public BilevelProblem {
 public:
  /// Takes the row-sharded sets (same communicator); features are padded to the widest set. Training and
  /// validation labels must be binary: more classes is an InputError naming the file and pointing to the
  /// softmax / hyperclean problems. Collective.
  LogregProblem(Dataset train, Dataset validation, std::optional<Dataset> test, const LogregOptions& options);
  /// Reads the LIBSVM files (test may be empty: no test set) and builds the problem. Collective on comm.
  static std::unique_ptr<LogregProblem> from_files(MPI_Comm comm,
                                                   const std::string& train,
                                                   const std::string& validation,
                                                   const std::string& test,
                                                   const LogregOptions& options);
  ~LogregProblem() override;

  /// The communicator of the data sets. Not collective.
  MPI_Comm comm() const override { return comm_; }
  /// "logreg". Not collective.
  std::string name() const override { return "logreg"; }
  /// x: n_features entries laid out like y's first n_features (or 1 entry on rank 0). Collective.
  petsc::VecHandle create_upper_vec() const override;
  /// y = (w, c): n_features (+1) entries, PETSC_DECIDE layout. Collective.
  petsc::VecHandle create_lower_vec() const override;
  /// UpperValue, LowerValue, LowerGradX, Stochastic (+ TestSet with a test set). Not collective.
  Capability capabilities() const override;
  /// Training and validation rows. Not collective.
  DatasetSizes dataset_sizes() const override;
  /// Local matrix storage and labels of the training, validation and test sets. Not collective.
  std::int64_t local_data_bytes() const override;
  /// Adam with step 0.2 and the box x ∈ [−20, 10] (e^{−20} ≈ 2e−9 keeps H numerically SPD). Not collective.
  ProblemHints hints() const override;
  /// w = 0, c = 0, x_j = options.initial_x. Collective.
  void initial_point(Vec x, Vec y) override;
  /// L_data + max_j e^{x_j}: the data term (1/n) Σ d_i a'_i a'_iᵀ has d_i <= 1/4 with equality at y = 0, so
  /// L_data = λ_max of H at y = 0 with the regularisers switched off (x = −50), estimated once by SLEPc and
  /// padded by 1%; the regulariser adds at most max_j e^{x_j}. The one-time estimate is not counted as
  /// oracle work. Collective.
  std::optional<PetscReal> lower_lipschitz_bound(Vec x) override;
  /// The constants of the hypergradient error bound (docs/metrics.md): L_fx = 0, L_fy = mean ||â||²/4 over
  /// validation rows â = [a 1], J = diag(e^x w) so ||J|| = max_j e^{x_j}|w_j| and L_J = max_j e^{x_j},
  /// L_H = max|σ''| max ||â|| mean ||â||² over training rows; μ = min_j e^{x_j} without intercept, else
  /// none (the solver estimates it). Collective.
  std::optional<SmoothnessConstants> smoothness_constants(Vec x, Vec y) override;
  /// Mean test log-loss and accuracy (sign of a·w + c). Collective.
  TestMetrics evaluate_test(Vec x, Vec y) override;
  /// Fraction of validation rows with sign(a·w + c) = b. Collective.
  std::optional<PetscReal> validation_accuracy(Vec x, Vec y) override;

  /// Benchmark hook: one fused HVP pass over all local training rows (logistic_hvp_csr, sparse data) or
  /// the two dense products, with the curvature D cached at y, into a model-sized local buffer; no
  /// reduction, no regulariser. The first call at a new y also computes D. Collective (gathers y and w).
  void hvp_kernel_only(Vec y, Vec w);
  /// Bytes one hvp_kernel_only pass reads from the local matrix (sparse: nnz·12 + (rows+1)·4 + rows·8;
  /// dense: 2·rows·n_features·8). Not collective.
  std::int64_t hvp_pass_bytes() const;
  /// The sparse HVP kernel the last full-batch product ran, as "fused", "interleaved/avx512", ...; empty
  /// before the first one or on dense data. Not collective.
  const std::string& hvp_kernel_used() const { return hvp_kernel_used_; }

  /// Features after padding to the widest set. Not collective.
  PetscInt n_features() const { return n_features_; }
  /// The settings in force. Not collective.
  const LogregOptions& options() const { return options_; }

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
  void lower_preconditioner_setup_impl(Vec x, Vec y, PreconditionerKind kind) override;
  void lower_precondition_impl(Vec r, Vec out) override;

 private:
  struct Side;  // one data set with its labels, curvature cache and work buffers
  // The steady-state sparse pass: acc += scale [A 1]ᵀ D [A 1] v over all local training rows.
  void steady_hvp(Side& side, PetscReal scale, const PetscScalar* v, PetscScalar* acc);
  /// Σ_i ℓ_i over the batch's local rows (when want_loss; else 0), Σ r_i [a_i; 1] into grad when not null;
  /// refreshes the curvature cache D of the training side.
  double loss_pass(Side& side,
                   const Batch& batch,
                   const PetscScalar* y_full,
                   PetscScalar* grad,
                   PetscInt* count,
                   bool want_loss);
  /// Rows of the side whose sign(a_i·w + c) (0 counting as −1) is b_i, on this rank. Not collective.
  double correct_predictions(Side& side, const PetscScalar* y_full);
  /// e^{x_j} for the local features (or the scalar's value replicated), from x.
  const PetscScalar* regularisers(Vec x);
  /// The model as the side's rows address it (compressed for sparse rows, whole for dense rows); on the
  /// training side, the curvature cache starts a new epoch when the content changed. Collective.
  const PetscScalar* model_of(Side& side, Vec y);
  /// out = scale · (the side's model-sized sums acc, added over ranks onto y's layout). Collective.
  void sums_to(Side& side, const PetscScalar* acc, PetscReal scale, Vec out);
  /// gy = (1/n) Σ_{i ∈ batch} r_i [a_i; 1], the data term of ∇_y g (it does not depend on x). Collective.
  void data_grad_y(Vec y, const Batch& batch, Vec gy);
  /// gy += λ(x) ∘ w, the regulariser's term of ∇_y g (features only). Not collective for per-feature x.
  void add_regulariser_grad(Vec x, Vec y, Vec gy);
  void check_layouts(Vec x, Vec y) const;
  std::optional<PetscReal> data_lipschitz_;  // L_data of lower_lipschitz_bound, computed at the first call
  /// max_i ||[a_i 1]||² and mean_i ||[a_i 1]||² of the training and validation rows (smoothness_constants),
  /// computed at the first call
  std::optional<std::array<PetscReal, 4>> row_norms_;

  MPI_Comm comm_;
  LogregOptions options_;
  PetscInt n_features_ = 0;
  PetscInt dy_ = 0;
  PetscInt y_begin_ = 0, y_end_ = 0;  // this rank's range of y (x per-feature: [y_begin_, min(y_end_, nf)))
  std::unique_ptr<Side> train_, validation_, test_;
  std::unique_ptr<detail::Gatherer> y_gather_, w_gather_;
  std::unique_ptr<detail::ExpRegularisers> lambda_;  // e^x
  std::vector<PetscScalar> buffer_;                  // model-sized reduction buffer (+ value slots)
  std::vector<PetscScalar> multi_;                   // stacked buffers for hvp_multi
  std::string hvp_kernel_used_;                      // see hvp_kernel_used()
  std::vector<PetscScalar> hvp_one_;                 // dense hvp_multi: one direction's sums
  std::vector<PetscScalar> reduce_;                  // dense: the model-sized sum over ranks
  petsc::VecHandle inv_diag_;                        // Jacobi: 1 / diag(H) at the last setup (y's layout)
};

}  // namespace bilevel
