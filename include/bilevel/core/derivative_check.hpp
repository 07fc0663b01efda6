#pragma once
/// \file The derivative checker: every implemented oracle of a BilevelProblem against central finite
/// differences along random directions (Ceres' gradient checker, TAO's -tao_test_gradient), at a random
/// point by default, with the wrong oracle named when one disagrees with the others.
#include <petscvec.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// Where check_derivatives compares: at a seeded random point near the given one (the default: a start
/// point such as y = 0 can make derivatives vanish, and a wrong oracle that returns 0 there passes), or
/// at the given point itself.
enum class DerivativeCheckPoint { Random, Current };
/// "random", "current". Not collective.
std::string_view to_string(DerivativeCheckPoint point);
/// Sets *point from its name and returns true; false for any other name. Not collective.
bool from_string(std::string_view name, DerivativeCheckPoint* point);

/// Settings of check_derivatives. Options database keys (prefix -bilevel_test_derivatives_) in brackets.
struct DerivativeCheckOptions {
  /// [-bilevel_test_derivatives_seed] seed of the random point and of the random directions
  std::uint64_t seed = 0;
  PetscInt directions = 2;  ///< [-bilevel_test_derivatives_directions] random directions per oracle
  /// [-bilevel_test_derivatives_point random|current] where to compare (DerivativeCheckPoint)
  DerivativeCheckPoint point = DerivativeCheckPoint::Random;
  /// [-bilevel_test_derivatives_spread] the random point is (x + s_x z_x, y + s_y z_y) with z standard
  /// normals drawn on the global index and s = spread · max(1, RMS of the given point's entries); x is then
  /// projected onto the problem's box (ProblemHints::x_lower_bound / x_upper_bound).
  PetscReal spread = 0.5;
  /// [-bilevel_test_derivatives_step] finite-difference step relative to the point: directions have
  /// entries of RMS 1 and h = step · max(1, RMS of the point's entries).
  PetscReal step = 1e-4;
  /// [-bilevel_test_derivatives_tolerance] what passed() uses when called without an argument.
  PetscReal tolerance = 1e-5;
  /// Absolute floor of the denominator of relative errors; a comparison whose two sides are both below it
  /// is vacuous (it says nothing about the oracle).
  PetscReal floor = 1e-12;
  /// Reads the keys above. Collective on comm.
  static DerivativeCheckOptions from_options(MPI_Comm comm);
};

/// One comparison: the worst relative error over the directions tried, and the two values compared along
/// the first direction.
struct DerivativeCheckEntry {
  std::string oracle;     ///< e.g. "grad_y g"
  std::string reference;  ///< what it is compared with, e.g. "central differences of g"
  /// The oracles whose outputs the comparison uses, the checked one first ("g" and "f" are the values):
  /// a disagreement means one of them is wrong, an agreement of two clears both (flagged_oracles).
  std::vector<std::string> uses;
  PetscReal analytic =
      0;  ///< the oracle's value along the first direction (a directional derivative or a norm)
  PetscReal reference_value = 0;
  PetscReal relative_error = 0;
  bool vacuous =
      false;  ///< both sides were below the floor: nothing was compared (e.g. ∇_x f when f has no x)
  bool skipped = false;  ///< the problem does not provide the oracle (or what it is checked against)
  std::string note;      ///< why it was skipped
};

/// The checker's result, identical on every rank.
struct DerivativeReport {
  std::vector<DerivativeCheckEntry> entries;
  PetscReal tolerance = 1e-5;  ///< default of passed()
  PetscReal step = 0;
  PetscInt directions = 0;
  DerivativeCheckPoint point = DerivativeCheckPoint::Random;
  /// True if every entry that compared something has a relative error ≤ tol. Not collective.
  bool passed(PetscReal tol) const;
  bool passed() const { return passed(tolerance); }
  /// Largest relative error over the checked entries. Not collective.
  PetscReal max_error() const;
  /// The entry for an oracle name, or nullptr. Not collective.
  const DerivativeCheckEntry* find(const std::string& oracle) const;
  /// The oracles that explain the failed comparisons (empty when passed(tol)): the smallest set of oracles
  /// that every failed comparison uses, leaving out those that a passed comparison between two oracles
  /// cleared. Among equally small sets, derivatives are preferred to values (a value is the definition of
  /// its derivatives: when f has no x, a wrong f and a wrong ∇_y f look the same and ∇_y f is named); when
  /// several sets remain, their union. One wrong oracle gives exactly its name. Not collective.
  std::vector<std::string> flagged_oracles(PetscReal tol) const;
  std::vector<std::string> flagged_oracles() const { return flagged_oracles(tolerance); }
  /// Prints a table (one line per comparison) and the flagged oracles on rank 0 of comm. Collective on comm.
  void print(MPI_Comm comm) const;
};

/// Compares the problem's oracles, on full batches, with finite differences along random directions d with
/// entries of RMS 1 (drawn from a counter-based generator on the global index, so neither the point nor
/// the directions depend on the number of ranks). D_h F = (8 (F(h) − F(−h)) − (F(2h) − F(−2h))) / 12h is
/// the fourth-order central difference of F(t) = F(point + t d). At (x, y), or at the random point of
/// options.point:
///   grad_y g   <∇_y g, d> vs D_h of g(x, y + t d)        (LowerValue)             uses grad_y g, g
///   grad_x g   <∇_x g, d> vs D_h of g(x + t d, y)        (LowerValue, LowerGradX) uses grad_x g, g
///   grad_y f, grad_x f    likewise with f                (UpperValue)             uses grad_* f, f
///   hvp        H d        vs D_h of ∇_y g(x, y + t d), relative error in 2-norm    uses hvp, grad_y g
///   hvp sym    <u, H v>   vs <v, H u>                                              uses hvp
///   hvp_multi  H [v1 v2]  vs [H v1, H v2] (one pass against single products)      uses hvp_multi, hvp
///   jvp        <d, J w>   vs D_h of <∇_y g(x + t d, y), w>                         uses jvp, grad_y g
/// Relative errors are |a − b| / max(|a|, |b|, floor). x and y are not modified. Oracle calls are counted
/// by the problem as usual. Collective on problem.comm().
DerivativeReport check_derivatives(BilevelProblem& problem,
                                   Vec x,
                                   Vec y,
                                   const DerivativeCheckOptions& options = {});

}  // namespace bilevel
