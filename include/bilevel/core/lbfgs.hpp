#pragma once
/// \file L-BFGS with a preconditioned initial matrix: the two-loop recursion (Nocedal & Wright, Alg. 7.4) and
/// a minimiser built on it with Armijo backtracking (core/line_search.hpp). A numerical utility below blocks
/// and problems (hyperclean's replicated fit of the lower level uses it).
///
/// H ≈ (∇²φ)⁻¹ from the last m secant pairs (s_i, t_i) = (y_{i+1} − y_i, ∇φ(y_{i+1}) − ∇φ(y_i)), with
/// H_0 = γ M, M ≈ (∇²φ)⁻¹ a given SPD preconditioner (the identity when none is given) and
/// γ = sᵀt / tᵀ M t of the newest pair (N&W eq. 7.20 with M in place of I).
#include <petscvec.h>

#include <functional>
#include <vector>

#include "bilevel/core/line_search.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// out <- M in, an SPD preconditioner (in and out distinct). Collective whenever the Vecs are.
using LbfgsPreconditioner = std::function<void(Vec in, Vec out)>;

/// The inverse-Hessian approximation H of the file comment, on Vecs of one layout. Collective on the
/// communicator of that layout (every method that touches Vecs; size() and scale() are not collective).
/// On sequential Vecs holding a replicated model nothing communicates.
class Lbfgs {
 public:
  /// `memory` pairs at most (first in, first out); a pair is kept iff sᵀt > curvature_eps ||s|| ||t||.
  Lbfgs(Vec layout, PetscInt memory, LbfgsPreconditioner precondition = {}, PetscReal curvature_eps = 1e-14);
  /// Drops every pair (γ is kept).
  void reset();
  /// Offers the pair (s, t) (copied); if it passes the curvature test, γ becomes sᵀt / tᵀ M t and the pair is
  /// stored (dropping the oldest when full). Returns whether it was stored.
  bool push(Vec s, Vec t);
  /// out <- H g by the two-loop recursion. `out` must not be `g`.
  void apply(Vec g, Vec out);
  /// out <- M in (the identity without a preconditioner).
  void precondition(Vec in, Vec out);
  /// γ of H_0 = γ M. Not collective.
  PetscReal scale() const { return gamma_; }
  /// Sets γ until the next stored pair. Not collective.
  void set_scale(PetscReal gamma) { gamma_ = gamma; }
  /// Pairs stored. Not collective.
  PetscInt size() const { return static_cast<PetscInt>(s_.size()); }

 private:
  PetscInt memory_;
  LbfgsPreconditioner precondition_;
  PetscReal eps_;
  PetscReal gamma_ = 1;
  std::vector<petsc::VecHandle> s_, t_;  // oldest first
  std::vector<PetscReal> rho_, alpha_;   // ρ_i = 1 / s_iᵀt_i; α_i of the first loop
  petsc::VecHandle q_, mt_;              // work vectors
};

/// Settings of lbfgs_minimize.
struct LbfgsOptions {
  PetscInt memory = 10;             ///< secant pairs kept
  PetscReal gatol = 1e-5;           ///< stop when ||∇φ|| ≤ gatol
  PetscInt max_it = 1000;           ///< iterations at most
  PetscReal curvature_eps = 1e-14;  ///< pairs with sᵀt ≤ eps ||s|| ||t|| are skipped
  /// With a phase deadline set (core/run_clock.hpp, the solver's final phase), the ranks of this
  /// communicator stop together once it has passed (the Vecs may be sequential, so they cannot decide).
  MPI_Comm deadline_comm = MPI_COMM_NULL;
  /// every `refresh_every` iterations (from iteration 0; 0: never) the `refresh` hook runs (the caller
  /// rebuilds M, e.g. from the curvature at the current point) and γ restarts at 1
  PetscInt refresh_every = 0;
  ArmijoOptions line_search;  ///< backtracking from the unit step
};

/// Outcome of lbfgs_minimize.
struct LbfgsResult {
  PetscInt iterations = 0;
  PetscReal value = 0;          ///< φ at the returned point
  PetscReal gradient_norm = 0;  ///< ||∇φ|| there
  bool converged = false;       ///< gradient_norm ≤ gatol
};

/// φ(y) and ∇φ(y) into g (the value is returned). Collective whenever the Vecs are.
using LbfgsObjective = std::function<PetscReal(Vec y, Vec g)>;

/// Minimises φ from y (overwritten by the last accepted iterate) by y ← y + t d, d = −H ∇φ, t from Armijo
/// backtracking; a direction that is not a descent direction drops the pairs and restarts from d = −M ∇φ.
/// Stops at ||∇φ|| ≤ gatol, after max_it iterations or when the line search fails. Collective on y's
/// communicator (with sequential Vecs: on whatever communicator φ is).
LbfgsResult lbfgs_minimize(const LbfgsObjective& objective,
                           Vec y,
                           const LbfgsOptions& options = {},
                           LbfgsPreconditioner precondition = {},
                           const std::function<void()>& refresh = {});

}  // namespace bilevel
