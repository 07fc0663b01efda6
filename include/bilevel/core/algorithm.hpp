#pragma once
/// \file What each method implements (one folder per method under src/algorithms/).
#include <petscviewer.h>

#include <memory>
#include <string>
#include <string_view>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/converged_reason.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

class UpperStepper;
class StateRegistry;

/// What an algorithm sees during a solve. Owned by BilevelSolver; valid from setup() to the end of solve().
struct AlgorithmContext {
  BilevelProblem& problem;
  MPI_Comm comm;
  Vec x;                          ///< current upper iterate (the algorithm updates it, usually via `upper`)
  Vec y;                          ///< current lower iterate (the algorithm updates it)
  UpperStepper& upper;            ///< upper-level stepper on the rank-0 coordinator (SGD/momentum/Adam + box)
  std::uint64_t seed;             ///< -bilevel_seed / --seed
  std::int64_t iteration = 0;     ///< outer iteration about to run (0-based)
  PetscInt batch_size = 0;        ///< -bilevel_batch_size: 0 = full batch (deterministic)
  PetscInt upper_batch_size = 0;  ///< -bilevel_upper_batch_size: 0 = full validation set
};

/// Outcome of one outer iteration.
struct StepResult {
  PetscReal hypergradient_norm = 0;  ///< norm of the hypergradient estimate the step used
  PetscReal lower_residual = -1;     ///< ||∇_y g|| after the lower update, or -1 if not computed
  PetscReal linear_residual = -1;    ///< ||H v − ∇_y f|| of the linear system, or -1 if not computed
  PetscInt inner_iterations = 0;     ///< iterations spent in linear-system/inner solvers this step
  ConvergedReason reason = ConvergedReason::Iterating;  ///< negative: the method failed numerically
  /// The hypergradient estimate h the step moved x with, taken at x before the step and (for most methods)
  /// the y after it; and v of h = ∇_x f − J v where the method has one. Owned by the method and valid until
  /// its next step; null when the method does not expose them (then the exact metrics that compare h and
  /// the error bound stay empty: docs/metrics.md).
  Vec hypergradient = nullptr;
  Vec linear_solution = nullptr;
};

/// A bilevel method. Implementations live in src/algorithms/<name>/ and are registered by one line in
/// src/algorithms/register_all.cpp. All methods are collective on ctx.comm.
class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual std::string_view type() const = 0;
  /// Oracles the method needs beyond the mandatory ones; setup fails early naming the missing ones.
  virtual Capability requirements() const { return Capability::None; }
  /// Reads -bilevel_<type>_* keys (opts has prefix "bilevel_<type>_") and validates them.
  virtual void set_from_options(petsc::OptionsReader& opts) = 0;
  /// Allocates work vectors and sub-solvers; called once per solve before the first step.
  virtual void setup(AlgorithmContext& ctx) = 0;
  /// One outer iteration: updates ctx.x and ctx.y.
  virtual StepResult step(AlgorithmContext& ctx) = 0;
  /// Registers everything the method carries from one step to the next (warm starts, secant pairs, Krylov
  /// bases, momentum, sampler counters) so a checkpoint holds it and a restart continues bit for bit; called
  /// after setup(). A method that keeps nothing between steps registers nothing. Not collective.
  virtual void declare_state(StateRegistry& /*state*/) {}
  /// What -bilevel_view prints: method, reference, settings. Collective on the viewer.
  virtual void view(PetscViewer viewer) const = 0;
};

}  // namespace bilevel
