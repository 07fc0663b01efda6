#include "bilevel/core/converged_reason.hpp"

#include <cmath>

namespace bilevel {

std::string_view to_string(ConvergedReason r) {
  switch (r) {
    case ConvergedReason::Iterating:
      return "ITERATING";
    case ConvergedReason::ConvergedGradientTolerance:
      return "CONVERGED_GATOL";
    case ConvergedReason::ConvergedTime:
      return "CONVERGED_MAX_TIME";
    case ConvergedReason::ConvergedMaxIterations:
      return "CONVERGED_MAX_IT";
    case ConvergedReason::DivergedNaN:
      return "DIVERGED_NAN";
    case ConvergedReason::DivergedInnerSolve:
      return "DIVERGED_INNER_SOLVE";
    case ConvergedReason::DivergedUser:
      return "DIVERGED_USER";
    case ConvergedReason::DivergedLinearSolve:
      return "DIVERGED_LINEAR_SOLVE";
    case ConvergedReason::CancelledSignal:
      return "CANCELLED_SIGNAL";
  }
  return "UNKNOWN";
}

NumericalFailure::NumericalFailure(ConvergedReason reason, const std::string& what)
    : std::runtime_error(std::string(to_string(reason)) + ": " + what), reason_(reason) {}

void require_finite(double value, ConvergedReason reason, std::string_view what) {
  if (!std::isfinite(value))
    throw NumericalFailure(reason, std::string(what) + " is " + std::to_string(value));
}

}  // namespace bilevel
