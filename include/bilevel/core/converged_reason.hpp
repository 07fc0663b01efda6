#pragma once
/// \file Why a solve stopped: positive = converged, negative = diverged, 0 = iterating (TAO's convention).
#include <string_view>

namespace bilevel {

enum class ConvergedReason : int {
  Iterating = 0,
  ConvergedGradientTolerance = 2,  ///< hypergradient-estimate norm <= -bilevel_gatol
  ConvergedTime = 3,               ///< -bilevel_max_time reached (a budget, counted as success)
  ConvergedMaxIterations = 4,      ///< -bilevel_max_it reached
  DivergedNaN = -1,                ///< a NaN/Inf in an iterate, a gradient or an objective
  DivergedInnerSolve = -2,         ///< a lower-level or linear-system solve failed
  DivergedUser = -3,               ///< stopped by a monitor
  CancelledSignal = -10,           ///< a stop signal (SIGTERM, SIGINT, SIGUSR1, SIGUSR2) reached a rank
};

std::string_view to_string(ConvergedReason r);

}  // namespace bilevel
