#include "bilevel/core/exact_metrics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "bilevel/core/accurate_hypergradient.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

PetscReal norm(Vec v) {
  PetscReal n = 0;
  BILEVEL_PETSC_CALL(VecNorm(v, NORM_2, &n));
  return n;
}

/// Relative tolerances of the accurate lower and linear solves behind the exact metrics: the first, else
/// the second (Newton's line search on values can stall short of 1e-10 in rounding).
constexpr PetscReal kExactRtol[2] = {1e-10, 1e-8};
/// The SLEPc estimate of μ is renewed after this many bounds, or when x moved by more than kMuDrift in the
/// max norm since it was made, and is used with the safety factor kMuSafety (docs/metrics.md).
constexpr std::int64_t kMuRefresh = 50;
constexpr PetscReal kMuDrift = 0.5, kMuSafety = 0.5;

}  // namespace

PetscReal hypergradient_error_bound(const BoundInputs& in, const SmoothnessConstants& c) {
  if (!(in.mu > 0)) return std::numeric_limits<PetscReal>::infinity();
  const PetscReal delta = in.lower_gradient_norm / in.mu;  // ||y − y*|| <= ||∇_y g|| / μ
  // ||v − v*|| = ||H*⁻¹((H* − H) v + (H v − b) + (b − b*))|| <= (L_H δ ||v|| + ||r|| + L_fy δ) / μ
  const PetscReal e =
      (in.linear_residual + c.upper_grad_y_lipschitz * delta + c.hessian_lipschitz * delta * in.v_norm) /
      in.mu;
  // h_d − ∇F = (∇_x f − ∇_x f*) − J*(v − v*) − (J − J*) v, ||J*|| <= ||J|| + L_J δ
  return in.sampling + c.upper_grad_x_lipschitz * delta + (c.cross_norm + c.cross_lipschitz * delta) * e +
         c.cross_lipschitz * delta * in.v_norm;
}

ExactMetrics::ExactMetrics(BilevelProblem& problem, PetscInt every)
    : problem_(problem), every_(every), closed_form_(has(problem.capabilities(), Capability::ClosedForm)) {
  x_prev_ = problem.create_upper_vec();
  grad_ = problem.create_upper_vec();
  ux_ = problem.create_upper_vec();
  x_mu_ = problem.create_upper_vec();
  y_star_ = problem.create_lower_vec();
  gy_ = problem.create_lower_vec();
  fy_ = problem.create_lower_vec();
  hv_ = problem.create_lower_vec();
  uy_ = problem.create_upper_vec();
}

ExactMetrics::~ExactMetrics() = default;

void ExactMetrics::before_step(Vec x) {
  BILEVEL_PETSC_CALL(VecCopy(x, x_prev_));
}

void ExactMetrics::fill(IterationRecord& record, std::int64_t k, Vec x, Vec y, const StepResult& last) {
  record.value_function.reset();
  record.exact_hypergradient_norm.reset();
  record.hypergradient_relative_error.reset();
  record.hypergradient_cosine.reset();
  record.lower_distance.reset();
  record.hypergradient_error_bound.reset();
  const bool with_h = k > 0 && last.hypergradient;
  const bool due = closed_form_ || (every_ > 0 && k % every_ == 0);
  const OracleCounts saved = problem_.counts();
  if (k == 0 && due) exact(record, x, y, nullptr);
  if (with_h) {
    if (due) exact(record, x_prev_, y, &last);
    // the bound costs four full-batch oracles and now and then a SLEPc estimate: on when exact metrics are
    if (last.linear_solution && (closed_form_ || every_ > 0)) bound(record, x_prev_, y, last);
  }
  problem_.set_counts(saved);
}

void ExactMetrics::exact(IterationRecord& record, Vec x, Vec y, const StepResult* last) {
  if (!accurate_hypergradient(problem_, x, y, kExactRtol[0], grad_, y_star_) &&
      !accurate_hypergradient(problem_, x, y, kExactRtol[1], grad_, y_star_))
    return;
  const PetscReal gn = norm(grad_);
  record.exact_hypergradient_norm = gn;
  if (closed_form_)
    record.value_function = problem_.exact_upper_objective(x);
  else if (has(problem_.capabilities(), Capability::UpperValue))
    record.value_function = problem_.upper_value(x, y_star_, Batch::all());
  BILEVEL_PETSC_CALL(VecWAXPY(gy_, -1.0, y_star_, y));
  record.lower_distance = norm(gy_);  // ||y − y*(x)||
  if (!last) return;
  PetscReal hg = 0, hn = 0;
  BILEVEL_PETSC_CALL(VecDot(last->hypergradient, grad_, &hg));
  BILEVEL_PETSC_CALL(VecNorm(last->hypergradient, NORM_2, &hn));
  BILEVEL_PETSC_CALL(VecWAXPY(ux_, -1.0, grad_, last->hypergradient));
  if (gn > 0) record.hypergradient_relative_error = norm(ux_) / gn;
  if (gn > 0 && hn > 0) record.hypergradient_cosine = hg / (gn * hn);
}

std::optional<PetscReal> ExactMetrics::mu(Vec x, Vec y, const std::optional<PetscReal>& given) {
  if (given) return given;
  if (const auto hint = problem_.hints().lower_strong_convexity) return hint;
  PetscReal drift = 0;
  if (mu_cached_) {
    BILEVEL_PETSC_CALL(VecWAXPY(ux_, -1.0, x_mu_, x));
    BILEVEL_PETSC_CALL(VecNorm(ux_, NORM_INFINITY, &drift));
  }
  if (!mu_cached_ || mu_uses_ >= kMuRefresh || drift > kMuDrift) {
    mu_cached_ = kMuSafety * estimate_lower_strong_convexity(problem_, x, y);
    BILEVEL_PETSC_CALL(VecCopy(x, x_mu_));
    mu_uses_ = 0;
    ++mu_estimates_;
  }
  ++mu_uses_;
  return mu_cached_;
}

void ExactMetrics::bound(IterationRecord& record, Vec x, Vec y, const StepResult& last) {
  const std::optional<SmoothnessConstants> c = problem_.smoothness_constants(x, y);
  if (!c) return;
  BoundInputs in;
  problem_.lower_grad_y(x, y, Batch::all(), gy_);
  in.lower_gradient_norm = norm(gy_);
  problem_.upper_grad(x, y, Batch::all(), ux_, fy_);                  // ∇_x f, ∇_y f
  problem_.lower_hvp(x, y, Batch::all(), last.linear_solution, hv_);  // H v
  BILEVEL_PETSC_CALL(VecAXPY(hv_, -1.0, fy_));
  in.linear_residual = norm(hv_);  // ||H v − ∇_y f||
  in.v_norm = norm(last.linear_solution);
  problem_.lower_jvp(x, y, Batch::all(), last.linear_solution, uy_);  // J v
  BILEVEL_PETSC_CALL(VecAXPY(ux_, -1.0, uy_));                        // h_d = ∇_x f − J v
  BILEVEL_PETSC_CALL(VecAXPY(ux_, -1.0, last.hypergradient));         // h_d − h
  in.sampling = norm(ux_);
  const std::optional<PetscReal> m0 = mu(x, y, c->mu);
  if (!m0) return;
  in.mu = *m0;  // the problem's bound, or half the estimated λ_min(H(x, y)) (docs/metrics.md)
  const PetscReal b = hypergradient_error_bound(in, *c);
  if (std::isfinite(b)) record.hypergradient_error_bound = b;
}

}  // namespace bilevel
