#pragma once
/// \file The derivative checker: every implemented oracle of a BilevelProblem against central finite
/// differences along random directions (Ceres' gradient checker, TAO's -tao_test_gradient).
#include <petscvec.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// Settings of check_derivatives. Options database keys (prefix -bilevel_test_derivatives_) in brackets.
struct DerivativeCheckOptions {
  std::uint64_t seed = 0;   ///< [-bilevel_test_derivatives_seed] seed of the random directions
  PetscInt directions = 2;  ///< [-bilevel_test_derivatives_directions] random directions per oracle
  /// [-bilevel_test_derivatives_step] finite-difference step relative to the point: directions have
  /// entries of RMS 1 and h = step · max(1, RMS of the point's entries).
  PetscReal step = 1e-4;
  /// [-bilevel_test_derivatives_tolerance] what passed() uses when called without an argument.
  PetscReal tolerance = 1e-5;
  /// Absolute floor of the denominator of relative errors (so that two values that are both ~0 pass).
  PetscReal floor = 1e-12;
  /// Reads the keys above. Collective on comm.
  static DerivativeCheckOptions from_options(MPI_Comm comm);
};

/// One oracle's comparison: the worst relative error over the directions tried, and the two values
/// compared along the first direction.
struct DerivativeCheckEntry {
  std::string oracle;     ///< e.g. "grad_y g"
  std::string reference;  ///< what it is compared with, e.g. "central differences of g"
  PetscReal analytic =
      0;  ///< the oracle's value along the first direction (a directional derivative or a norm)
  PetscReal reference_value = 0;
  PetscReal relative_error = 0;
  bool skipped = false;  ///< the problem does not provide the oracle (or what it is checked against)
  std::string note;      ///< why it was skipped
};

/// The checker's result, identical on every rank.
struct DerivativeReport {
  std::vector<DerivativeCheckEntry> entries;
  PetscReal tolerance = 1e-5;  ///< default of passed()
  PetscReal step = 0;
  PetscInt directions = 0;
  /// True if every entry that was checked has a relative error ≤ tol. Not collective.
  bool passed(PetscReal tol) const;
  bool passed() const { return passed(tolerance); }
  /// Largest relative error over the checked entries. Not collective.
  PetscReal max_error() const;
  /// The entry for an oracle name, or nullptr. Not collective.
  const DerivativeCheckEntry* find(const std::string& oracle) const;
  /// Prints a table (one line per oracle) on rank 0 of comm. Collective on comm.
  void print(MPI_Comm comm) const;
};

/// Compares the problem's oracles at (x, y), on full batches, with finite differences along random
/// directions d with entries of RMS 1 (drawn from a counter-based generator on the global index, so they
/// do not depend on the number of ranks). D_h F = (8 (F(h) − F(−h)) − (F(2h) − F(−2h))) / 12h is the
/// fourth-order central difference of F(t) = F(point + t d):
///   grad_y g   <∇_y g, d>   vs D_h of g(x, y + t d)                 (needs LowerValue)
///   grad_x g   <∇_x g, d>   vs D_h of g(x + t d, y)                 (needs LowerValue, LowerGradX)
///   grad_y f, grad_x f      likewise with f                         (needs UpperValue)
///   hvp        H d          vs D_h of ∇_y g(x, y + t d)              (relative error in 2-norm)
///   jvp        <d, J w>     vs D_h of <∇_y g(x + t d, y), w>
///   hvp sym    <u, H v>     vs <v, H u>
///   hvp_multi  H [v1 v2]    vs [H v1, H v2] (one-pass product against single products)
/// Relative errors are |a − b| / max(|a|, |b|, floor). x and y are not modified. Oracle calls are counted
/// by the problem as usual. Collective on problem.comm().
DerivativeReport check_derivatives(BilevelProblem& problem,
                                   Vec x,
                                   Vec y,
                                   const DerivativeCheckOptions& options = {});

}  // namespace bilevel
