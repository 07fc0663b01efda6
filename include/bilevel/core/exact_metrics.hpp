#pragma once
/// \file The exact metrics of the monitor records (value function, exact hypergradient, its relative error
/// and cosine against the method's estimate, distance to y*) and the a-posteriori bound on the hypergradient
/// error; docs/metrics.md states the derivation of the bound.
#include <petscvec.h>

#include <cstdint>
#include <optional>

#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/monitor.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// What the bound reads at the point (x, y, v) where the estimate h = ∇_x f − J v was taken (full batch).
struct BoundInputs {
  PetscReal lower_gradient_norm = 0;  ///< ||∇_y g(x, y)||
  PetscReal linear_residual = 0;      ///< ||H(x, y) v − ∇_y f(x, y)||
  PetscReal v_norm = 0;               ///< ||v||
  PetscReal sampling = 0;  ///< ||h − (∇_x f(x, y) − J(x, y) v)||: minibatches (0 for a full-batch step)
  PetscReal mu = 0;        ///< lower bound on λ_min(H(x, ·)) between y and y*(x)
};

/// The bound on ||h − ∇F(x)|| (docs/metrics.md, "The bound"):
///   δ = ||∇_y g|| / μ >= ||y − y*||,   e = (||r|| + L_fy δ + L_H δ ||v||) / μ >= ||v − v*||,
///   B = sampling + L_fx δ + (||J|| + L_J δ) e + L_J δ ||v||.
/// +inf when μ <= 0. Not collective.
PetscReal hypergradient_error_bound(const BoundInputs& in, const SmoothnessConstants& c);

/// Computes IterationRecord's exact metrics and error bound for BilevelSolver. Collective on the problem's
/// communicator, like every method. Oracle calls made here are not counted (the counts are restored).
class ExactMetrics {
 public:
  /// `every`: -bilevel_monitor_exact_every (0: only on closed-form problems, in every record).
  ExactMetrics(BilevelProblem& problem, PetscInt every);
  ~ExactMetrics();
  /// Remembers x before a step: the point where the step takes its estimate h. Collective.
  void before_step(Vec x);
  /// Fills the exact metrics (when due at iteration k) and the bound (in every record when exact metrics are
  /// on, every > 0 or a closed form, the step exposed h and v, and the problem gives its constants) of the
  /// record after k steps; k = 0 (the start point, no h yet): the exact
  /// metrics at (x, y) only. `last` is the last step's result. Collective.
  void fill(IterationRecord& record, std::int64_t k, Vec x, Vec y, const StepResult& last);
  /// Estimates of μ made so far (SLEPc, for problems without a known μ). Not collective.
  std::int64_t mu_estimates() const { return mu_estimates_; }

 private:
  void exact(IterationRecord& record, Vec x, Vec y, const StepResult* last);
  void bound(IterationRecord& record, Vec x, Vec y, const StepResult& last);
  std::optional<PetscReal> mu(Vec x, Vec y, const std::optional<PetscReal>& given);

  BilevelProblem& problem_;
  PetscInt every_;
  bool closed_form_;
  petsc::VecHandle x_prev_, grad_, ux_, uy_, y_star_, gy_, fy_, hv_;
  // the SLEPc estimate of μ: its value, the x it was made at, and the bounds computed since
  std::optional<PetscReal> mu_cached_;
  petsc::VecHandle x_mu_;
  std::int64_t mu_uses_ = 0, mu_estimates_ = 0;
};

}  // namespace bilevel
