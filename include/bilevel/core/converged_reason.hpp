#pragma once
/// \file Why a solve stopped: positive = converged, negative = diverged, 0 = iterating (TAO's convention),
/// and NumericalFailure, the exception a method throws to end the run with a negative reason.
#include <stdexcept>
#include <string>
#include <string_view>

namespace bilevel {

enum class ConvergedReason : int {
  Iterating = 0,
  ConvergedGradientTolerance = 2,  ///< hypergradient-estimate norm <= -bilevel_gatol
  ConvergedTime = 3,               ///< -bilevel_max_time reached (a budget, counted as success)
  ConvergedMaxIterations = 4,      ///< -bilevel_max_it reached
  DivergedNaN = -1,                ///< a NaN/Inf in an iterate, a gradient, an estimate or an objective
  DivergedInnerSolve = -2,  ///< the lower-level update diverged (||∇_y g|| not finite, Newton's KSP failed)
  DivergedUser = -3,        ///< stopped by a monitor
  DivergedLinearSolve = -4,  ///< a Krylov solve for H v = ∇_y f failed (breakdown, indefinite H, NaN)
  CancelledSignal = -10,     ///< a stop signal (SIGTERM, SIGINT, SIGUSR1, SIGUSR2) reached a rank
};

/// PETSc-style name: CONVERGED_GATOL, DIVERGED_LINEAR_SOLVE, ... Not collective.
std::string_view to_string(ConvergedReason r);

/// A numerical failure of a method (a diverged lower update, a failed Krylov solve, a NaN estimate): not an
/// input or programming error, so the solver ends the run with reason() (negative), the summary and trace
/// written, instead of aborting. Thrown only on collective decisions (KSP reasons, allreduced norms), so
/// every rank throws at the same point; BilevelSolver::solve catches it around Algorithm::step.
class NumericalFailure : public std::runtime_error {
 public:
  NumericalFailure(ConvergedReason reason, const std::string& what);
  ConvergedReason reason() const { return reason_; }

 private:
  ConvergedReason reason_;
};

/// Throws NumericalFailure(reason, what + " is " + value) unless `value` is finite. `value` must be the
/// same on every rank (an allreduced norm): collective in that sense, no communication.
void require_finite(double value, ConvergedReason reason, std::string_view what);

}  // namespace bilevel
