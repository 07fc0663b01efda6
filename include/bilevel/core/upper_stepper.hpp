#pragma once
/// \file Upper-level steppers: x <- P_box(x - step(d)), d a hypergradient estimate.
#include <petscvec.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

class StateRegistry;

/// Settings of the upper stepper. Options database keys in brackets (prefix -bilevel_upper_).
struct UpperStepperOptions {
  UpperStepperType type = UpperStepperType::Adam;  ///< [-bilevel_upper_type sgd|momentum|adam]
  PetscReal step = 0.1;                            ///< [-bilevel_upper_step] base step size
  /// [-bilevel_upper_decay] step_k = step / (k+1)^decay; −1 (auto): 1/2 when the run draws minibatches, else
  /// 0
  PetscReal decay = -1;
  PetscReal momentum = 0.9;  ///< [-bilevel_upper_momentum] heavy-ball beta (momentum) / Adam beta1
  PetscReal beta2 = 0.999;   ///< [-bilevel_upper_beta2] Adam second-moment decay
  PetscReal epsilon = 1e-8;  ///< [-bilevel_upper_epsilon] Adam denominator guard
  PetscReal lower_bound = PETSC_NINFINITY;  ///< [-bilevel_upper_lb] box for every entry of x
  PetscReal upper_bound = PETSC_INFINITY;   ///< [-bilevel_upper_ub]
  void validate() const;
};

/// The coordinator decides, the owners compute (DESIGN.md): the step size, the step count and the update rule
/// are the same on every rank (decided from replicated scalars), and each rank applies the element-wise
/// update (SGD, heavy ball, Adam, box) to the entries of x it owns, with the optimizer state (m, s) stored in
/// x's layout. Nothing of size dim(x) is gathered. The iterates do not depend on the rank count: every entry
/// sees the same arithmetic. All methods are collective on x's communicator.
class UpperStepper {
 public:
  /// Defaults from the problem's hints (type, step, box). Not collective.
  explicit UpperStepper(const ProblemHints& hints);
  /// Reads -bilevel_upper_* (opts has prefix "bilevel_upper_") with the current settings as defaults;
  /// calling it again with the same database changes nothing. Collective on the reader's communicator.
  void set_from_options(petsc::OptionsReader& opts);
  UpperStepperOptions& options() { return options_; }
  const UpperStepperOptions& options() const { return options_; }
  /// Allocates the optimizer state in x's layout and zeroes it (step count 0), and resolves decay auto:
  /// 1/2 when `minibatches` (the hypergradients are stochastic: step_k = step/√(k+1), the schedule of
  /// Kingma & Ba 2015, Thm. 4.1, for Adam and of Robbins–Monro for SGD; constant steps let the noise walk x
  /// without bound), else 0. Collective.
  void setup(Vec x, bool minibatches = false);
  /// The decay in use (auto resolved by setup). Not collective.
  PetscReal decay() const { return decay_; }
  /// A method with its own step schedule (ttsa) replaces the default decay; the user's
  /// -bilevel_upper_decay still wins. Not collective.
  void replace_default_decay(PetscReal decay) {
    if (options_.decay < 0) decay_ = decay;
  }
  /// Registers the persistent state (m, s, step count) for checkpoints. Not collective.
  void declare_state(StateRegistry& state);
  /// x <- P_box(x - update(direction)); the update rule is SGD, heavy-ball momentum or Adam.
  void step(Vec x, Vec direction);
  /// Projects x onto the box. Collective.
  void project(Vec x) const;
  std::int64_t steps_taken() const { return k_; }
  /// Current step size (after decay). Not collective.
  PetscReal current_step() const;

 private:
  UpperStepperOptions options_;
  petsc::VecHandle m_, s_;  // optimizer state in x's layout (first and second moments)
  std::int64_t k_ = 0;      // steps taken
  PetscReal decay_ = 0;     // options_.decay with auto resolved
};

}  // namespace bilevel
