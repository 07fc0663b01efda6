#pragma once
/// \file The y-update of methods that leave its kind to the problem (ProblemHints::lower_update): T gradient
/// steps of size θ (the papers' update), or T truncated Newton steps for ill-conditioned lower levels where
/// steps of 1/L crawl.
#include <string>

#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/problem.hpp"

namespace bilevel {

/// Settings of a LowerUpdate (read by the method under its own prefix).
struct LowerUpdateOptions {
  std::string kind = "auto";     ///< auto (the problem's hint) | gd | newton
  PetscInt steps = 0;            ///< T per outer iteration; 0: the method's gd default, 1 for newton
  PetscReal step = 0;            ///< θ of the gradient steps; 0: 1/L (hints, else SLEPc)
  PetscInt newton_cg_its = 5;    ///< CG iterations per Newton step
};

/// Collective on the problem's communicator.
class LowerUpdate {
 public:
  /// Resolves the kind, the number of steps and θ (estimating L only for gradient steps) and allocates
  /// the work space. `gd_steps` is the method's default T for gradient steps.
  void setup(BilevelProblem& problem, Vec x, Vec y, const LowerUpdateOptions& options, PetscInt gd_steps);
  /// T steps on y at x (gradient steps draw a fresh batch of `batch_size` per step from `sampler`; Newton
  /// steps use one batch); returns ||∇_y g|| at the point before the last step. When θ is the default 1/L
  /// and the problem bounds L(x) (BilevelProblem::lower_lipschitz_bound), θ = 1/bound(x) is taken anew at
  /// every call, so the steps stay stable while x raises the lower curvature.
  PetscReal run(BilevelProblem& problem, Vec x, Vec y, BatchSampler& sampler, PetscInt batch_size);
  const std::string& kind() const { return kind_; }
  PetscInt steps() const { return steps_; }
  /// θ of the gradient steps (0 for Newton). Not collective.
  PetscReal step() const { return theta_; }

 private:
  std::string kind_ = "gd";
  PetscInt steps_ = 0, cg_its_ = 5;
  PetscReal theta_ = 0;
  bool follow_bound_ = false;  // θ = 1/lower_lipschitz_bound(x) at every run
  GradientSteps gd_;
  NewtonSteps newton_;
};

}  // namespace bilevel
