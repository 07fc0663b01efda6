#pragma once
/// \file The quadratic test problem with closed-form y*, v*, ∇F and F* (benchopt's quadratic family).
///
///   g(x, y) = 1/2 yᵀA y − yᵀB x,          f(x, y) = 1/2 ||y − t||² + r/2 ||x||²
///   A = U Λ Uᵀ, U = H₁H₂ two Householder reflections, Λ = logspace(0, log10 κ, dy): cond(A) = κ exactly
///   y*(x) = A⁻¹B x,  v* = A⁻¹(y* − t),  ∇F(x) = r x + Bᵀ v*,  x* solves (MᵀM + r I) x = Mᵀ t, M = A⁻¹B.
/// Every random entry is a counter-based function of (seed, global index): the problem is the same at
/// every rank count. A products cost O(dy) (two reflections and a diagonal), so dy can be large.
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// Settings (-bilevel_quadratic_*).
struct QuadraticOptions {
  PetscInt dim_lower = 100;   ///< [-bilevel_quadratic_dim_lower] dy
  PetscInt dim_upper = 10;    ///< [-bilevel_quadratic_dim_upper] dx
  PetscReal condition = 100;  ///< [-bilevel_quadratic_condition] κ of the lower Hessian A
  PetscReal upper_reg = 0.1;  ///< [-bilevel_quadratic_upper_reg] r
  /// [-bilevel_quadratic_preconditioner_error] ε in [0, 1): offer the preconditioner
  /// M = U diag(1/(Λ_i (1 + ε cos i))) Uᵀ (an inexact A⁻¹ with κ(M A) <= (1 + ε)/(1 − ε), i the global
  /// index); negative: no preconditioner (the default)
  PetscReal preconditioner_error = -1;
  std::uint64_t seed = 0;  ///< generator seed (the run's --seed)
  void validate() const;
  static QuadraticOptions from(petsc::OptionsReader& opts, std::uint64_t seed);
};

/// Collective on comm for every method, like BilevelProblem.
class QuadraticProblem : public BilevelProblem {
 public:
  QuadraticProblem(MPI_Comm comm, const QuadraticOptions& options);
  MPI_Comm comm() const override { return comm_; }
  std::string name() const override { return "quadratic"; }
  petsc::VecHandle create_upper_vec() const override;
  petsc::VecHandle create_lower_vec() const override;
  Capability capabilities() const override;
  ProblemHints hints() const override;
  void initial_point(Vec x, Vec y) override;
  /// UpperValue, LowerValue, LowerGradX, ClosedForm (+ LowerPreconditioner with preconditioner_error >= 0).
  /// Not collective.
  /// The same quadratic (same options and seed) on `comm`. Collective on `comm`.
  std::shared_ptr<BilevelProblem> clone_on(MPI_Comm comm) const override;

  /// μ = 1 (= λ_min(A)), L_fy = 1, ||J|| <= ||B||_F (J = −Bᵀ), the other constants 0. Collective.
  std::optional<SmoothnessConstants> smoothness_constants(Vec x, Vec y) override;

  void exact_lower_solution(Vec x, Vec y_star) override;
  void exact_hypergradient(Vec x, Vec grad) override;
  PetscReal exact_upper_objective(Vec x) override;
  PetscReal optimal_upper_objective() override;
  /// x* (closed form). Collective.
  void optimal_upper_point(Vec x_star);
  /// out = A⁻¹ w (closed form). Collective.
  void apply_inverse(Vec w, Vec out);
  const QuadraticOptions& options() const { return options_; }

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch) override;
  void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) override;
  PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch) override;
  void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) override;
  void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) override;
  void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) override;
  /// M does not depend on the point: nothing to do.
  void lower_preconditioner_setup_impl(Vec x, Vec y, PreconditionerKind kind) override;
  void lower_precondition_impl(Vec r, Vec out) override;

 private:
  /// out = A w (diag_power 1) or A⁻¹ w (diag_power -1): U Λ^p Uᵀ w.
  void apply_a(Vec w, Vec out, int diag_power);
  /// out = U D^p Uᵀ w (U = H₁H₂, D a diagonal in y's layout, p = ±1). Collective.
  void apply_spectral(Vec w, Vec out, Vec diag, int diag_power);
  void reflect(Vec u, Vec w);     // w <- (I − 2uuᵀ) w
  void b_times(Vec x, Vec out);   // out = B x (lower layout)
  void bt_times(Vec w, Vec out);  // out = Bᵀ w (upper layout)

  MPI_Comm comm_;
  QuadraticOptions options_;
  PetscInt y_begin_ = 0, y_local_ = 0;
  petsc::VecHandle u1_, u2_, lambda_, lambda_pc_, target_, work_, work2_;
  petsc::VecHandle x_all_;  // x gathered on every rank
  petsc::ScatterHandle x_to_all_;
  std::vector<PetscReal> b_local_;           // rows y_begin_.. of B, row-major y_local_ x dx
  std::vector<PetscReal> reduce_, partial_;  // dx buffers
  std::optional<PetscReal> f_star_;
};

}  // namespace bilevel
