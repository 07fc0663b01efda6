#pragma once
/// \file `finite_sum_quadratic`: benchopt's simulated quadratic bilevel problem (algorithms.md §5.1), both
/// levels averages over samples, with closed-form y*(x), v*, ∇F(x), F(x) and F*.
///
///   g(x, y) = (1/n) Σ_i [ 1/2 (z_iᵀy + w_iᵀx − c_i)² + λ_g/2 ||y||² ]     (n lower samples)
///   f(x, y) = (1/m) Σ_j [ 1/2 (p_jᵀy + q_jᵀx − e_j)² + λ_f/2 ||x||² ]     (m upper samples)
///
/// which is §5.1's form (1/n) Σ_i [1/2 yᵀA_i y + 1/2 xᵀB_i x + xᵀC_i y + a_iᵀy + b_iᵀx] (+ constants) with
/// rank-one A_i = z_i z_iᵀ + λ_g I, B_i = w_i w_iᵀ, C_i = w_i z_iᵀ, a_i = −c_i z_i, b_i = −c_i w_i: the mean
/// lower Hessian (1/n) Σ z_i z_iᵀ + λ_g I is the empirical covariance of n Gaussian samples. Sample i draws
/// ξ_i ~ N(0, I_dy) and sets z_i = diag(√σ) ξ_i, σ = logspace(μ, L, dy) (the population spectrum),
/// w_i = diag(√s) (R ξ_i)_{1..dx}, s = logspace(μ, L_cross, dx), R a Householder reflection (x and y
/// coupled), c_i ~ N(0, 1); upper samples p_j, e_j likewise on streams of their own, but with cross rows
/// q_j = diag(√s) η_j, η_j ~ N(0, I_dx), independent of p_j (were they a fixed map of p_j like the lower
/// rows, F would be constant in x). Every random number is a counter-based function of (seed, sample,
/// entry): the problem is the same at every rank count.
///
/// Storage: each rank keeps the rows r_i = (z_i, w_i, −c_i) of its block of samples (samples sharded over
/// the ranks, like a data set), and the replicated second moments M_g = (1/n) Σ r_i r_iᵀ and M_f of size
/// (dy + dx + 1)² for the closed forms: with u = (y, x, 1), g = 1/2 uᵀM_g u + λ_g/2 ||y||²,
///   y*(x) = −H⁻¹ (M_g,yx x + M_g,y1),  H = M_g,yy + λ_g I,  v* = H⁻¹ ∇_y f(x, y*),
///   ∇F(x) = ∇_x f(x, y*) − M_g,xy v*,  F(x) = f(x, y*(x)), and F is a quadratic in x whose minimiser x* is
///   one dx x dx solve. Options -bilevel_finite_sum_quadratic_*.
#include <memory>
#include <optional>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// Settings (-bilevel_finite_sum_quadratic_*); defaults from benchopt (dim_inner 100, dim_outer 10,
/// n_inner 32768, n_outer 1024, mu_inner 0.1, L 1, L_cross 0.1).
struct FiniteSumQuadraticOptions {
  PetscInt dim_lower = 100;   ///< [-bilevel_finite_sum_quadratic_dim_lower] dy
  PetscInt dim_upper = 10;    ///< [-bilevel_finite_sum_quadratic_dim_upper] dx
  PetscInt n_lower = 32768;   ///< [-bilevel_finite_sum_quadratic_n_lower] n, samples of g
  PetscInt n_upper = 1024;    ///< [-bilevel_finite_sum_quadratic_n_upper] m, samples of f
  PetscReal mu = 0.1;         ///< [-bilevel_finite_sum_quadratic_mu] smallest population eigenvalue
  PetscReal lipschitz = 1.0;  ///< [-bilevel_finite_sum_quadratic_lipschitz] largest population eigenvalue
  PetscReal cross = 0.1;      ///< [-bilevel_finite_sum_quadratic_cross] L_cross, largest cross variance
  PetscReal lower_reg = 0.0;  ///< [-bilevel_finite_sum_quadratic_lower_reg] λ_g
  PetscReal upper_reg = 0.0;  ///< [-bilevel_finite_sum_quadratic_upper_reg] λ_f
  std::uint64_t seed = 0;     ///< generator seed (the run's --seed)
  void validate() const;
  static FiniteSumQuadraticOptions from(petsc::OptionsReader& opts, std::uint64_t seed);
};

/// Collective on comm for every method, like BilevelProblem.
class FiniteSumQuadraticProblem : public BilevelProblem {
 public:
  /// Generates this rank's samples and the replicated moments. An InputError names the option to change
  /// when the mean lower Hessian or the value function is not positive definite. Collective.
  FiniteSumQuadraticProblem(MPI_Comm comm, const FiniteSumQuadraticOptions& options);
  MPI_Comm comm() const override { return comm_; }
  std::string name() const override { return "finite_sum_quadratic"; }
  petsc::VecHandle create_upper_vec() const override;
  petsc::VecHandle create_lower_vec() const override;
  /// UpperValue, LowerValue, LowerGradX, Stochastic, ClosedForm. Not collective.
  Capability capabilities() const override;
  DatasetSizes dataset_sizes() const override { return {options_.n_lower, options_.n_upper}; }
  /// μ and L of H exactly (its eigenvalues), sgd with step 1/L_F (L_F the largest eigenvalue of ∇²F).
  ProblemHints hints() const override;
  /// The same samples (same options and seed) on `comm`. Collective on `comm`.
  std::shared_ptr<BilevelProblem> clone_on(MPI_Comm comm) const override;

  void exact_lower_solution(Vec x, Vec y_star) override;
  void exact_hypergradient(Vec x, Vec grad) override;
  PetscReal exact_upper_objective(Vec x) override;
  PetscReal optimal_upper_objective() override;
  /// x* = argmin F (closed form). Collective.
  void optimal_upper_point(Vec x_star);
  /// Extreme eigenvalues of H = ∇²_yy g (full batch) and of ∇²F. Not collective.
  PetscReal lower_mu() const { return lower_mu_; }
  PetscReal lower_l() const { return lower_l_; }
  PetscReal value_function_l() const { return value_l_; }
  const FiniteSumQuadraticOptions& options() const { return options_; }

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
  FiniteSumQuadraticOptions options_;
  std::shared_ptr<Impl> impl_;
  PetscReal lower_mu_ = 0, lower_l_ = 0, value_l_ = 0;
};

}  // namespace bilevel
