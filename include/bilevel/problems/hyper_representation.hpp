#pragma once
/// \file `hyper_representation`: the linear hyper-representation problem (algorithms.md §5.4). The upper
/// variable is a representation H ∈ R^{p x d} (x holds it row-major: x_{αd+β} = H_{αβ}, a distributed Vec of
/// p·d entries), the lower variable a ridge head w ∈ R^d on the features Hᵀa of a sample a ∈ R^p:
///
///   g(H, w) = 1/(2n) ||X_g H w − t_g||² + λ/2 ||w||²,      f(H, w) = 1/(2m) ||X_f H w − t_f||²
///
/// with n training rows (X_g, t_g) and m validation rows (X_f, t_f) generated from a ground truth:
/// rows a_i ~ N(0, I_p / p), t_i = a_iᵀH₀w₀ + σ ε_i, H₀ ~ N(0, 1/d), w₀ ~ N(0, 1), ε_i ~ N(0, 1). Both
/// levels are means over samples (minibatches are rows); rows are sharded over the ranks. With the
/// residuals r_i = a_iᵀHw − t_i on a batch B:
///   ∇_w g = Hᵀ(Σ r_i a_i)/|B| + λ w,   ∇_H g = (Σ r_i a_i) wᵀ/|B|,   ∇²_ww g v = Hᵀ(Σ (a_iᵀHv) a_i)/|B| + λ
///   v J v = ∇_H <∇_w g, v> = ((Σ (a_iᵀHv) a_i) wᵀ + (Σ r_i a_i) vᵀ)/|B|
/// and the closed forms on the full sets (Gram matrices G = XᵀX/n, b = Xᵀt/n, replicated):
///   w*(H) = (HᵀG_g H + λI)⁻¹ Hᵀb_g,  v* = (HᵀG_g H + λI)⁻¹ ∇_w f,  ∇F = ∇_H f − J v*,  F(H) = f(H, w*(H)).
/// F is not convex in H and its minimum is not known: the problem does not claim Capability::ClosedForm
/// (which promises F*), but exact_lower_solution, exact_hypergradient and exact_upper_objective work.
/// Options -bilevel_hyper_representation_*.
#include <memory>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// Settings (-bilevel_hyper_representation_*); defaults from §5.4 (p 64, d 128, n 500, noise 0.1).
struct HyperRepresentationOptions {
  PetscInt features = 64;       ///< [-bilevel_hyper_representation_features] p, the input dimension
  PetscInt width = 128;         ///< [-bilevel_hyper_representation_width] d, the representation's width
  PetscInt n_train = 500;       ///< [-bilevel_hyper_representation_n_train] rows of g
  PetscInt n_validation = 500;  ///< [-bilevel_hyper_representation_n_validation] rows of f
  PetscReal noise = 0.1;        ///< [-bilevel_hyper_representation_noise] σ
  PetscReal ridge = 0.1;        ///< [-bilevel_hyper_representation_ridge] λ
  std::uint64_t seed = 0;       ///< generator seed (the run's --seed)
  void validate() const;
  static HyperRepresentationOptions from(petsc::OptionsReader& opts, std::uint64_t seed);
};

/// Collective on comm for every method, like BilevelProblem.
class HyperRepresentationProblem : public BilevelProblem {
 public:
  HyperRepresentationProblem(MPI_Comm comm, const HyperRepresentationOptions& options);
  MPI_Comm comm() const override { return comm_; }
  std::string name() const override { return "hyper_representation"; }
  petsc::VecHandle create_upper_vec() const override;
  petsc::VecHandle create_lower_vec() const override;
  /// UpperValue, LowerValue, LowerGradX, Stochastic. Not collective.
  Capability capabilities() const override;
  DatasetSizes dataset_sizes() const override { return {options_.n_train, options_.n_validation}; }
  ProblemHints hints() const override;
  /// H entries N(0, 1/d) on a stream of their own (H = 0 is a stationary point of F), w = 0.
  void initial_point(Vec x, Vec y) override;
  std::shared_ptr<BilevelProblem> clone_on(MPI_Comm comm) const override;
  /// λ_max(HᵀG_g H) + λ, the full-batch L of ∇_w g at this H (exact: one d x d eigenvalue problem,
  /// replicated), so steps 1/L follow H as it grows. Collective.
  std::optional<PetscReal> lower_lipschitz_bound(Vec x) override;

  void exact_lower_solution(Vec x, Vec y_star) override;
  void exact_hypergradient(Vec x, Vec grad) override;
  PetscReal exact_upper_objective(Vec x) override;
  const HyperRepresentationOptions& options() const { return options_; }

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch) override;
  void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) override;
  PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch) override;
  void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) override;
  void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) override;
  void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;

 private:
  struct Impl;
  MPI_Comm comm_;
  HyperRepresentationOptions options_;
  std::shared_ptr<Impl> impl_;
};

}  // namespace bilevel
