#include "bilevel/core/converged_reason.hpp"

namespace bilevel {

std::string_view to_string(ConvergedReason r) {
  switch (r) {
    case ConvergedReason::Iterating: return "ITERATING";
    case ConvergedReason::ConvergedGradientTolerance: return "CONVERGED_GATOL";
    case ConvergedReason::ConvergedTime: return "CONVERGED_MAX_TIME";
    case ConvergedReason::ConvergedMaxIterations: return "CONVERGED_MAX_IT";
    case ConvergedReason::DivergedNaN: return "DIVERGED_NAN";
    case ConvergedReason::DivergedInnerSolve: return "DIVERGED_INNER_SOLVE";
    case ConvergedReason::DivergedUser: return "DIVERGED_USER";
    case ConvergedReason::CancelledSignal: return "CANCELLED_SIGNAL";
  }
  return "UNKNOWN";
}

}  // namespace bilevel
