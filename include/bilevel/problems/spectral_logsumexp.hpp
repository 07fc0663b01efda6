#pragma once
/// \file `spectral_logsumexp`: the deterministic, high-dimensional, ill-conditioned synthetic problem of
/// algorithms.md §5.2 (the Krylov-subspace hypergradient paper's experiment), n = dx = dy:
///
///   f(x, y) = 0.1 cos(xᵀD₁y) + 1/2 ||D₂x − y||²
///   g(x, y) = γ Σ_i sin(x_i + y_i) + log Σ_i exp(x_i y_i) + 1/2 yᵀ(D₃ + G) y,   G = Q diag(linspace(1, κ,
///   n)) Qᵀ
///
/// D₁ = diag(c), c_i ~ U(−5, 5); D₂ = diag(d), d_i ~ U(0.1, 1.1); D₃ = diag(U(0, γ)); γ = 0.5, κ = 1e5,
/// n = 10⁴ by default. With p = softmax(x∘y) and s = xᵀD₁y:
///   ∇_x f = −0.1 sin(s) c∘y + d∘(d∘x − y),   ∇_y f = −0.1 sin(s) c∘x − (d∘x − y)
///   ∇_y g = γ cos(x + y) + x∘p + D₃y + G y,  ∇_x g = γ cos(x + y) + y∘p
///   H w = −γ sin(x + y)∘w + x∘(p∘(x∘w) − p (pᵀ(x∘w))) + D₃w + G w
///   J w = (p − γ sin(x + y))∘w + y∘(p∘(x∘w) − p (pᵀ(x∘w)))
/// H ⪰ (1 − γ) I (G ⪰ I, D₃ ⪰ 0, the log-sum-exp term is convex), so μ = 1 − γ; λ_max(H) ≤ κ + 2γ + max x_i².
///
/// Storage of G: Q is the product of k Householder reflections H_1 ⋯ H_k (k unit vectors, O(k n) memory;
/// G w costs 2k dot products and a diagonal scaling), not the Q factor of a dense Gaussian matrix that §5.2
/// describes: that Q would cost a 10⁴ x 10⁴ QR at every creation (about 1.3e12 flops) and 800 MB per copy,
/// while the spectrum of G, which sets the conditioning every method sees, is exactly the same
/// (linspace(1, κ, n)); only the eigenvectors are less generic. Every random number is a counter-based
/// function of (seed, global index): the problem is the same at every rank count. y*(x) has no closed form.
/// Options -bilevel_spectral_logsumexp_*.
#include <memory>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// Settings (-bilevel_spectral_logsumexp_*).
struct SpectralLogsumexpOptions {
  PetscInt dim = 10000;       ///< [-bilevel_spectral_logsumexp_dim] n = dx = dy
  PetscReal condition = 1e5;  ///< [-bilevel_spectral_logsumexp_condition] κ: G's eigenvalues 1 .. κ
  PetscReal gamma = 0.5;      ///< [-bilevel_spectral_logsumexp_gamma] γ in [0, 1)
  PetscInt reflections = 4;   ///< [-bilevel_spectral_logsumexp_reflections] k Householder factors of Q
  PetscReal initial_x = 1.0;  ///< [-bilevel_spectral_logsumexp_initial_x] every entry of x0 (y0 = 0)
  std::uint64_t seed = 0;     ///< generator seed (the run's --seed)
  void validate() const;
  static SpectralLogsumexpOptions from(petsc::OptionsReader& opts, std::uint64_t seed);
};

/// Collective on comm for every method, like BilevelProblem.
class SpectralLogsumexpProblem : public BilevelProblem {
 public:
  SpectralLogsumexpProblem(MPI_Comm comm, const SpectralLogsumexpOptions& options);
  MPI_Comm comm() const override { return comm_; }
  std::string name() const override { return "spectral_logsumexp"; }
  petsc::VecHandle create_upper_vec() const override;
  petsc::VecHandle create_lower_vec() const override;
  /// UpperValue, LowerValue, LowerGradX. Not collective.
  Capability capabilities() const override;
  /// μ = 1 − γ, L = κ + 2γ + x0², Newton steps on y (κ = 1e5 makes steps of 1/L crawl).
  ProblemHints hints() const override;
  void initial_point(Vec x, Vec y) override;
  /// κ + 2γ + max_i x_i² ≥ λ_max(H(x, y)) for every y. Collective.
  std::optional<PetscReal> lower_lipschitz_bound(Vec x) override;
  /// The same problem (same options and seed) on `comm`. Collective on `comm`.
  std::shared_ptr<BilevelProblem> clone_on(MPI_Comm comm) const override;
  /// out = G w = Q diag(linspace(1, κ, n)) Qᵀ w. Collective.
  void apply_g(Vec w, Vec out);
  const SpectralLogsumexpOptions& options() const { return options_; }

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch) override;
  void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) override;
  PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch) override;
  void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) override;
  void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) override;
  void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;

 private:
  /// p = softmax(x∘y) into p_; returns log Σ exp(x_i y_i). Collective.
  PetscReal softmax(Vec x, Vec y);
  /// s = xᵀD₁y. Collective.
  PetscReal coupling(Vec x, Vec y);

  MPI_Comm comm_;
  SpectralLogsumexpOptions options_;
  petsc::VecHandle c_, d_, d3_, lambda_, p_, work_;
  std::vector<petsc::VecHandle> reflections_;
};

}  // namespace bilevel
