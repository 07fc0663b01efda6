#pragma once
/// \file Upper-level steppers on the rank-0 coordinator: x <- P_box(x - step(d)), d a hypergradient estimate.
#include <petscvec.h>

#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// Settings of the upper stepper. Options database keys in brackets (prefix -bilevel_upper_).
struct UpperStepperOptions {
  UpperStepperType type = UpperStepperType::Adam;  ///< [-bilevel_upper_type sgd|momentum|adam]
  PetscReal step = 0.1;                            ///< [-bilevel_upper_step] base step size
  PetscReal decay = 0;                             ///< [-bilevel_upper_decay] step_k = step / (k+1)^decay
  PetscReal momentum = 0.9;  ///< [-bilevel_upper_momentum] heavy-ball beta (momentum) / Adam beta1
  PetscReal beta2 = 0.999;   ///< [-bilevel_upper_beta2] Adam second-moment decay
  PetscReal epsilon = 1e-8;  ///< [-bilevel_upper_epsilon] Adam denominator guard
  PetscReal lower_bound = PETSC_NINFINITY;  ///< [-bilevel_upper_lb] box for every entry of x
  PetscReal upper_bound = PETSC_INFINITY;   ///< [-bilevel_upper_ub]
  void validate() const;
};

/// The coordinator pattern of DESIGN.md: the direction is gathered to rank 0, which owns the optimizer
/// state and computes the new x, then x is scattered back. All methods are collective on x's communicator.
class UpperStepper {
 public:
  /// Defaults from the problem's hints (type, step, box). Not collective.
  explicit UpperStepper(const ProblemHints& hints);
  /// Reads -bilevel_upper_* (opts has prefix "bilevel_upper_") with the current settings as defaults;
  /// calling it again with the same database changes nothing. Collective on the reader's communicator.
  void set_from_options(petsc::OptionsReader& opts);
  UpperStepperOptions& options() { return options_; }
  const UpperStepperOptions& options() const { return options_; }
  /// Allocates the gather scatter and the state for vectors of x's layout.
  void setup(Vec x);
  /// x <- P_box(x - update(direction)); the update rule is SGD, heavy-ball momentum or Adam.
  void step(Vec x, Vec direction);
  /// Projects x onto the box. Collective.
  void project(Vec x) const;
  PetscInt steps_taken() const { return k_; }
  /// Current step size (after decay). Not collective.
  PetscReal current_step() const;
  /// Seconds spent gathering and scattering (the coordinator's communication), for the performance docs.
  double communication_seconds() const { return comm_seconds_; }

 private:
  UpperStepperOptions options_;
  petsc::ScatterHandle to_zero_;
  petsc::VecHandle x_seq_, d_seq_;
  std::vector<PetscReal> m_, s_;  // optimizer state, rank 0 only
  PetscInt k_ = 0;
  double comm_seconds_ = 0;
};

}  // namespace bilevel
