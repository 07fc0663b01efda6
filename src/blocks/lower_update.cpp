#include "bilevel/blocks/lower_update.hpp"

#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {

void LowerUpdate::setup(BilevelProblem& problem, Vec x, Vec y, const LowerUpdateOptions& options, PetscInt gd_steps) {
  const ProblemHints h = problem.hints();
  kind_ = options.kind == "auto" ? h.lower_update : options.kind;
  if (kind_ != "gd" && kind_ != "newton")
    throw InputError("lower update '" + kind_ + "' is not one of gd|newton");
  steps_ = options.steps > 0 ? options.steps : (kind_ == "newton" ? 1 : gd_steps);
  cg_its_ = options.newton_cg_its;
  theta_ = 0;
  follow_bound_ = false;
  if (kind_ == "gd") {
    const std::optional<PetscReal> bound = options.step > 0 ? std::nullopt : problem.lower_lipschitz_bound(x);
    follow_bound_ = bound.has_value();
    theta_ = options.step > 0 ? options.step
             : bound          ? 1.0 / *bound
                              : 1.0 / (h.lower_lipschitz ? *h.lower_lipschitz : estimate_lower_lipschitz(problem, x, y));
    gd_.setup(y);
  } else {
    newton_.setup(problem, y, cg_its_);
  }
}

PetscReal LowerUpdate::run(BilevelProblem& problem, Vec x, Vec y, BatchSampler& sampler, PetscInt batch_size) {
  if (kind_ == "gd") {
    if (follow_bound_) theta_ = 1.0 / *problem.lower_lipschitz_bound(x);  // θ = 1/L(x) for the current x
    return gd_.run(problem, x, y, steps_, theta_, &sampler, batch_size);  // y <- y − θ ∇_y g, T times
  }
  const PetscInt n = problem.dataset_sizes().lower;
  const Batch b = (batch_size > 0 && n > 0) ? sampler.next(n, batch_size) : Batch::all();
  return newton_.run(problem, x, y, steps_, b);  // y <- y − H⁻¹∇_y g (truncated CG), T times
}

}  // namespace bilevel
