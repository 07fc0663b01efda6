#include "bilevel/blocks/lower_update.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/converged_reason.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {

void LowerSpectrum::estimate(BilevelProblem& problem, Vec x, Vec y) {
  const ProblemHints h = problem.hints();
  const std::optional<PetscReal> bound = problem.lower_lipschitz_bound(x);
  follows_bound_ = bound.has_value();
  lipschitz_ = bound ? *bound : resolve_lower_lipschitz(problem, x, y);
  mu_from_hint_ = h.lower_strong_convexity.has_value();
  mu_ = mu_from_hint_ ? *h.lower_strong_convexity : estimate_lower_strong_convexity(problem, x, y);
  mu_ = std::min(mu_, lipschitz_);
  lipschitz_at_mu_ = lipschitz_;
}

bool LowerSpectrum::refresh(BilevelProblem& problem, Vec x, Vec y, PetscReal drift) {
  if (!follows_bound_) return false;
  lipschitz_ = *problem.lower_lipschitz_bound(x);
  if (mu_from_hint_ || std::abs(lipschitz_ - lipschitz_at_mu_) <= drift * lipschitz_at_mu_) return false;
  mu_ = std::min(estimate_lower_strong_convexity(problem, x, y), lipschitz_);
  lipschitz_at_mu_ = lipschitz_;
  return true;
}

bool LowerSpectrum::refresh_periodic(
    BilevelProblem& problem, Vec x, Vec y, std::int64_t iteration, PetscInt period, PetscReal drift) {
  if (refresh(problem, x, y, drift)) return true;
  if (period <= 0 || iteration <= 0 || iteration % period != 0) return false;
  if (!follows_bound_) lipschitz_ = resolve_lower_lipschitz(problem, x, y);
  if (!mu_from_hint_) mu_ = estimate_lower_strong_convexity(problem, x, y);
  mu_ = std::min(mu_, lipschitz_);
  lipschitz_at_mu_ = lipschitz_;
  return true;
}

void LowerSpectrum::declare_state(StateRegistry& state, const std::string& prefix) {
  state.add(prefix + "lipschitz", lipschitz_);  // without a bound L(x) it is not renewed: keep it
  state.add(prefix + "mu", mu_);
  state.add(prefix + "lipschitz_at_mu", lipschitz_at_mu_);
}

PetscInt terms_for_contraction(PetscReal rate, PetscReal eps, PetscInt lo, PetscInt hi) {
  if (!(rate > 0) || rate >= 1) return rate >= 1 ? hi : lo;
  const double n = std::ceil(std::log(eps) / std::log(rate));
  return static_cast<PetscInt>(std::clamp<double>(n, static_cast<double>(lo), static_cast<double>(hi)));
}

PetscInt cg_iterations_for(PetscReal kappa, PetscReal eps, PetscInt lo, PetscInt hi) {
  if (!(kappa >= 1) || !(eps > 0) || eps >= 2) return lo;
  const double k = std::ceil(0.5 * std::sqrt(kappa) * std::log(2.0 / eps));
  return static_cast<PetscInt>(std::clamp<double>(k, static_cast<double>(lo), static_cast<double>(hi)));
}

void read_lower_update_options(petsc::OptionsReader& opts,
                               LowerUpdateOptions& o,
                               PetscInt gd_steps,
                               const std::string& auto_means) {
  o.kind =
      read_choice(opts, "lower", o.kind, kLowerUpdateKinds, "lower-level update (auto: " + auto_means + ")");
  o.steps = opts.integer("inner_steps",
                         o.steps,
                         "steps on y per outer iteration (0: " + std::to_string(gd_steps) + " gd / 1 newton)",
                         0);
  o.step = opts.real("inner_step", o.step, "gradient step on y (0: 1/L, from the problem or SLEPc)", 0.0);
}

void LowerUpdate::setup(BilevelProblem& problem,
                        Vec x,
                        Vec y,
                        const LowerUpdateOptions& options,
                        PetscInt gd_steps,
                        PetscInt batch_size) {
  const ProblemHints h = problem.hints();
  kind_ = options.kind;
  if (kind_ == LowerUpdateKind::Auto) {
    if (!full_lower_batch(problem, batch_size) || h.lower_update == "gd")
      kind_ = LowerUpdateKind::Gd;
    else if (h.lower_update == "newton")
      kind_ = LowerUpdateKind::Newton;
    else
      throw Error("problem " + problem.name() + " hints lower update '" + h.lower_update +
                  "', not gd|newton");
  }
  const bool newton = kind_ == LowerUpdateKind::Newton;
  steps_ = options.steps > 0 ? options.steps : (newton ? 1 : gd_steps);
  theta_ = 0;
  follow_bound_ = false;
  precondition_ =
      !newton && options.precondition && has(problem.capabilities(), Capability::LowerPreconditioner);
  if (precondition_) {
    theta_ = options.step > 0
                 ? options.step
                 : 1.0 / estimate_preconditioned_lipschitz(problem, x, y, 20, PreconditionerKind::Cheap);
    gd_.setup(y);
  } else if (!newton) {
    const std::optional<PetscReal> bound = options.step > 0 ? std::nullopt : problem.lower_lipschitz_bound(x);
    follow_bound_ = bound.has_value();
    theta_ =
        options.step > 0 ? options.step : 1.0 / (bound ? *bound : resolve_lower_lipschitz(problem, x, y));
    gd_.setup(y);
  } else {
    newton_.setup(problem, y, options.newton_cg_its);
  }
}

PetscReal LowerUpdate::run(
    BilevelProblem& problem, Vec x, Vec y, BatchSampler& sampler, PetscInt batch_size) {
  PetscReal norm = 0;
  if (kind_ == LowerUpdateKind::Gd) {
    if (follow_bound_) theta_ = 1.0 / *problem.lower_lipschitz_bound(x);  // θ = 1/L(x) for the current x
    if (precondition_ && steps_ > 0) problem.lower_preconditioner_setup(x, y, PreconditionerKind::Cheap);
    // y <- y − θ ∇_y g (or θ M ∇_y g), T times
    norm = gd_.run(problem, x, y, steps_, theta_, &sampler, batch_size, precondition_);
  } else {
    const Batch b = sampler.draw(problem.dataset_sizes().lower, batch_size);
    norm = newton_.run(problem, x, y, steps_, b);  // y <- y − H⁻¹∇_y g (truncated CG), T times
  }
  if (!std::isfinite(norm))
    throw NumericalFailure(ConvergedReason::DivergedInnerSolve,
                           std::string("the lower update (") + kind_name() + ", " + std::to_string(steps_) +
                               " steps" +
                               (kind_ == LowerUpdateKind::Gd ? " of " + std::to_string(theta_) : "") +
                               ") diverged: ||grad_y g|| = " + std::to_string(norm) +
                               (kind_ == LowerUpdateKind::Gd ? " (a smaller inner_step may help)" : ""));
  return norm;
}

void LowerUpdate::view(PetscViewer viewer) const {
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                            "lower %s%s, inner_steps %d, inner_step %g\n",
                                            kind_name(),
                                            precondition_ ? " (in the problem's M)" : "",
                                            static_cast<int>(steps_),
                                            static_cast<double>(theta_)));
  view_ksp(viewer);
}

void LowerUpdate::view_ksp(PetscViewer viewer) const {
  if (kind_ == LowerUpdateKind::Newton) newton_.view(viewer);
}

}  // namespace bilevel
