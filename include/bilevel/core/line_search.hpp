#pragma once
/// \file Armijo backtracking, the one line search of the library (the accurate lower solve, quasi-Newton
/// lower steps and L-BFGS use it). A numerical utility below both blocks and problems.
#include <petscsys.h>

#include <cmath>

namespace bilevel {

/// Settings of armijo_backtrack.
struct ArmijoOptions {
  PetscReal initial_step = 1;   ///< t₀
  PetscReal shrink = 0.5;       ///< t ← shrink · t after a rejected trial
  PetscReal sufficient = 1e-4;  ///< c₁ of the Armijo condition
  int max_trials = 40;          ///< trials before giving up
};

/// Outcome of armijo_backtrack: the accepted step and φ there, or accepted == false after max_trials.
struct ArmijoResult {
  PetscReal step = 0;
  PetscReal value = 0;  ///< φ(step) of the last trial
  bool accepted = false;
  int trials = 0;
};

/// Backtracking line search on φ(t) = objective along a descent direction: returns the first t = t₀ sᵏ
/// (k = 0, 1, ...) with a finite φ(t) ≤ φ(0) + c₁ t φ'(0) (Nocedal & Wright, Alg. 3.1). `slope` is φ'(0)
/// (negative for a descent direction). `phi(t)` evaluates the trial; it is collective whenever the
/// objective is, and so is this function. No allocation.
template <typename Phi>
ArmijoResult armijo_backtrack(Phi&& phi, PetscReal phi0, PetscReal slope, const ArmijoOptions& o = {}) {
  ArmijoResult r;
  PetscReal t = o.initial_step;
  for (int k = 0; k < o.max_trials; ++k, t *= o.shrink) {
    r.step = t;
    r.value = phi(t);
    r.trials = k + 1;
    if (std::isfinite(r.value) && r.value <= phi0 + o.sufficient * t * slope) {
      r.accepted = true;
      break;
    }
  }
  return r;
}

}  // namespace bilevel
