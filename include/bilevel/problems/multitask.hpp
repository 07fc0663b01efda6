#pragma once
/// \file `multitask`: few-shot episodes with a shared linear representation and one ridge head per task,
/// the strongly convex form of the meta-learning experiment (algorithms.md §5.7).
///
/// T tasks (episodes), each k-way: k classes, s support and q query examples per class, features a ∈ R^p,
/// one-hot targets e ∈ R^k. The upper variable is the representation W ∈ R^{p x r} (x holds it row-major,
/// x_{αr+β} = W_{αβ}, distributed); the lower variable stacks the heads Y_t ∈ R^{r x k} (y holds task t's
/// head row-major at t·r·k; tasks and their heads are sharded over the ranks, whole tasks per rank):
///
///   g(W, Y) = (1/T) Σ_t g_t,  g_t = 1/(2ks) ||S_t W Y_t − E_t||² + λ/2 ||Y_t||²      (support sets)
///   f(W, Y) = (1/|B|) Σ_{t∈B} f_t,  f_t = 1/(2kq) ||Q_t W Y_t − E^q_t||²           (query sets)
///
/// g is separable over tasks and λ-strongly convex in every head; f's samples are tasks (dataset_sizes
/// {0, T}: a meta-batch of tasks on the upper level, every inner problem on the lower level). With
/// Z = S_t W, P = Z Y_t − E_t, n = ks (and the factor 1/T of g on every lower oracle):
///   ∇_{Y_t} g_t = ZᵀP/n + λY_t,  ∇_W g_t = S_tᵀ P Y_tᵀ/n,  H_t V = ZᵀZ V/n + λV,
///   J_t V = ∇_W <∇_{Y_t} g_t, V> = S_tᵀ(P Vᵀ + S_t W V Y_tᵀ)/n
/// and in closed form (per task, r x r solves): Y_t* = (ZᵀZ/n + λI)⁻¹ ZᵀE_t/n, v_t* = H_t⁻¹ ∇_{Y_t} f_t,
/// ∇F = (1/T) Σ_t (∇_W f_t − J_t v_t*), F(W) = f(W, Y*(W)). F is not convex in W and F* is unknown: the
/// problem does not claim Capability::ClosedForm, but exact_lower_solution, exact_hypergradient and
/// exact_upper_objective work.
///
/// Episodes are pure functions of (seed, task): a synthetic generator (C classes with Gaussian prototypes
/// μ_c ~ N(0, I_p), examples μ_c + σ ξ), or Fashion-MNIST images (the first `pool` training images of the
/// Debian package dataset-fashion-mnist; each task draws k of the 10 classes and s + q distinct images per
/// class, p = 784). Options -bilevel_multitask_*.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// Where the episodes come from.
enum class EpisodeSource { Synthetic, FashionMnist };

/// Settings (-bilevel_multitask_*).
struct MultitaskOptions {
  PetscInt tasks = 200;    ///< [-bilevel_multitask_tasks] T
  PetscInt ways = 5;       ///< [-bilevel_multitask_ways] k, classes per task
  PetscInt shots = 5;      ///< [-bilevel_multitask_shots] s, support examples per class
  PetscInt queries = 15;   ///< [-bilevel_multitask_queries] q, query examples per class
  PetscInt width = 32;     ///< [-bilevel_multitask_width] r, width of the representation
  PetscReal ridge = 0.1;   ///< [-bilevel_multitask_ridge] λ of every head
  PetscInt features = 32;  ///< [-bilevel_multitask_features] p of the synthetic episodes
  PetscInt classes = 20;   ///< [-bilevel_multitask_classes] C of the synthetic episodes
  PetscReal spread = 1.0;  ///< [-bilevel_multitask_spread] σ of the synthetic examples
  PetscInt pool = 10000;   ///< [-bilevel_multitask_pool] Fashion-MNIST training images drawn from
  EpisodeSource source = EpisodeSource::Synthetic;  ///< --dataset fashion-mnist selects the images
  std::string images_dir;                           ///< Fashion-MNIST folder (default fashion_mnist_dir())
  std::uint64_t seed = 0;                           ///< generator seed (the run's --seed)
  void validate() const;
  static MultitaskOptions from(petsc::OptionsReader& opts, std::uint64_t seed);
};

/// Collective on comm for every method, like BilevelProblem.
class MultitaskProblem : public BilevelProblem {
 public:
  /// Builds this rank's episodes (reads the Fashion-MNIST pool on every rank for that source). Collective.
  MultitaskProblem(MPI_Comm comm, const MultitaskOptions& options);
  ~MultitaskProblem() override;
  MPI_Comm comm() const override { return comm_; }
  std::string name() const override { return "multitask"; }
  petsc::VecHandle create_upper_vec() const override;
  petsc::VecHandle create_lower_vec() const override;
  /// UpperValue, LowerValue, LowerGradX, Stochastic (tasks on the upper level). Not collective.
  Capability capabilities() const override;
  DatasetSizes dataset_sizes() const override { return {0, options_.tasks}; }
  ProblemHints hints() const override;
  /// W entries N(0, 1/p) (W = 0 is a stationary point of F), heads 0.
  void initial_point(Vec x, Vec y) override;
  /// max_t (λ_max(Z_tᵀZ_t/ks) + λ)/T = λ_max(H) at this W (exact: one r x r eigenvalue problem per task),
  /// so steps 1/L follow W. Collective.
  std::optional<PetscReal> lower_lipschitz_bound(Vec x) override;
  /// Mean query accuracy of the heads y (argmax of the k scores).
  std::optional<PetscReal> validation_accuracy(Vec x, Vec y) override;
  /// query_accuracy: validation_accuracy of the final (x, y), for the --summary JSON.
  std::vector<std::pair<std::string, PetscReal>> summary_extras(Vec x, Vec y) override;

  void exact_lower_solution(Vec x, Vec y_star) override;
  void exact_hypergradient(Vec x, Vec grad) override;
  PetscReal exact_upper_objective(Vec x) override;
  /// Input dimension p (784 for Fashion-MNIST). Not collective.
  PetscInt features() const;
  const MultitaskOptions& options() const { return options_; }

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch) override;
  void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) override;
  PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch) override;
  void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) override;
  void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) override;
  void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;

 public:
  struct Impl;  ///< episodes and kernels (src/problems/multitask*.cpp)

 private:
  MPI_Comm comm_;
  MultitaskOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bilevel
