#pragma once
/// \file The dynamic Lanczos process of LancBiO (Yang, Gao & Yuan, ICLR 2025, Alg. 2 and Alg. 4 "DLanczos";
/// algorithms.md §2.4): a Lanczos basis for H v = b that grows by one vector per outer iteration, each
/// step taken with that iteration's Hessian, restarted at an anchor v̄ with a residual correction.
#include <petscvec.h>

#include <span>
#include <string>
#include <vector>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// Solves T s = rhs for the symmetric tridiagonal T with diagonal `alpha` (n entries) and off-diagonal
/// `beta` (n − 1 entries) by the Thomas algorithm (LDLᵀ without pivoting). Returns the number of leading
/// pivots that were positive (relative to the largest |alpha|): n on success; a smaller value k means T is
/// not numerically positive definite and `s` holds the solution of the leading k x k system instead.
/// `pivot` is work space of n entries. Not collective (replicated on every rank).
PetscInt solve_spd_tridiagonal(std::span<const PetscReal> alpha,
                               std::span<const PetscReal> beta,
                               std::span<const PetscReal> rhs,
                               std::span<PetscReal> s,
                               std::span<PetscReal> pivot);

/// State of one restart cycle: anchor v̄, frozen w = H v̄ and b̄ (the right-hand side at the restart),
/// basis Q_j = [q_1 … q_j] in a SLEPc BV, tridiagonal T_j (α on the diagonal, β off it) and the next
/// Lanczos vector q_{j+1}. No re-orthogonalisation (plain three-term recurrence, as in the paper).
///
/// Finite precision: the Galerkin right-hand side Q_jᵀ(b − w) is formed as ||r̄|| e_1 + Q_jᵀ(b − b̄)
/// (r̄ = b̄ − w), which equals it in exact arithmetic because q_1 = r̄/||r̄|| and Q_j is orthonormal. Once the
/// recurrence has lost orthogonality the explicit product amplifies the error at every restart (measured:
/// the residual doubles per cycle of 80 on a κ = 1e3 quadratic), the split form does not.
///
/// Preconditioned variant (setup with precondition = true; the problem's M ≈ H⁻¹, Capability::
/// LowerPreconditioner, M = L Lᵀ): the same process on Ĥ = Lᵀ H L, whose spectrum M clusters, carried out
/// in the original variables without L. The basis holds u_j = L q̂_j (M⁻¹-orthonormal) and the recurrence
/// the dual vectors m_j = M⁻¹ u_j: t = H u_j − β_{j−1} m_{j−1}, α_j = u_jᵀ t, t −= α_j m_j, z = M t,
/// β_j = sqrt(tᵀ z), m_{j+1} = t/β_j, u_{j+1} = z/β_j; at a restart m_1 = r̄/ρ, u_1 = M r̄/ρ with
/// ρ = sqrt(r̄ᵀ M r̄). The Galerkin condition Uᵀ(H v − b) = 0 gives the same formula
/// v = v̄ + U_j T_j⁻¹ U_jᵀ(b − w), and Uᵀ r̄ = ρ e_1. M is rebuilt at each restart; within a cycle each step
/// applies the problem's M as it is then, so whatever builds M between steps (lancbio's Newton-PCG lower
/// update on full batches, a monitor's accurate hypergradient) moves it along, as the operator H(x_k,
/// y_{k+1}) of the dynamic process moves. One M application per step (two per restart); M = I gives the
/// unpreconditioned process exactly.
///
/// Every method except the accessors is collective on the communicator of the layout Vec.
class DynamicLanczos {
 public:
  /// Allocates the basis (BV with `max_dim` columns, options prefix -bilevel_lanczos_bv_) and the work
  /// vectors; no allocation happens afterwards. With `precondition`, the problem passed to restart() must
  /// have Capability::LowerPreconditioner.
  void setup(Vec y_layout, PetscInt max_dim, bool precondition = false);
  /// New cycle at the anchor v̄ = v (Alg. 4, restart branch): w = H v̄ (1 HVP at (x, y; batch)),
  /// r̄ = b − w, q_1 = r̄/||r̄|| (preconditioned: M rebuilt at (x, y), u_1 = M r̄/ρ), empty basis. If r̄ = 0
  /// the cycle is empty and solve() returns v̄.
  void restart(BilevelProblem& problem, Vec x, Vec y, const Batch& batch, Vec v, Vec b);
  /// One Lanczos step with the current Hessian (Alg. 4, lines "z, α, ω, β"): z = H q_j − β_{j−1} q_{j−1}
  /// (1 HVP), α_j = q_jᵀ z, q_j joins the basis, ω = z − α_j q_j, β_j = ||ω||, q_{j+1} = ω/β_j. A vanishing
  /// β_j (invariant subspace) or a full basis marks the cycle exhausted: the caller must restart next.
  void extend(BilevelProblem& problem, Vec x, Vec y, const Batch& batch);
  /// Residual-corrected Galerkin solve on the current basis (Alg. 2, v-update):
  /// v = v̄ + Q_j T_j⁻¹ Q_jᵀ(b − w). Returns the Lanczos estimate of the residual norm,
  /// sqrt(||d||² − ||Q_jᵀd||² + (β_j s_j)²) with d = b − b̄ (exact for a fixed H and an orthonormal basis);
  /// preconditioned, the norms are M-norms (||r||_M = sqrt(rᵀ M r), one more M application).
  /// If T_j is not positive definite the leading positive-definite block is used and the cycle is marked
  /// exhausted.
  PetscReal solve(Vec b, Vec v);
  /// Whether the process is preconditioned. Not collective.
  bool preconditioned() const { return precondition_; }

  /// Number of basis vectors j. Not collective.
  PetscInt dimension() const { return static_cast<PetscInt>(alpha_.size()); }
  /// True when the next step needs a restart (breakdown, indefinite T_j, empty or full basis). Not
  /// collective.
  bool exhausted() const { return exhausted_; }
  PetscInt max_dimension() const { return max_dim_; }
  /// The tridiagonal entries of the current cycle (α: j entries, β: j − 1 entries). Not collective.
  std::span<const PetscReal> alpha() const { return alpha_; }
  std::span<const PetscReal> beta() const { return beta_; }
  /// Registers the cycle (basis, tridiagonal, anchor, frozen w and b̄, next vector) for checkpoints. A
  /// preconditioned process restarts its cycle after a restart from a checkpoint (M was built at the cycle's
  /// start point, which the checkpoint does not hold). Not collective.
  void declare_state(StateRegistry& state, const std::string& prefix = "lanczos.");

 private:
  PetscInt max_dim_ = 0;
  petsc::BvHandle basis_;
  /// Apply M (or copy without a preconditioner): out = M in.
  void apply_m(Vec in, Vec out);

  bool precondition_ = false;
  BilevelProblem* problem_ = nullptr;  // of the last restart (for M)
  // q_: next basis vector u_{j+1}; m_, m_prev_: dual vectors m_{j+1}, m_j; t_, mt_: work
  petsc::VecHandle anchor_, w_, b_bar_, q_, m_, m_prev_, t_, mt_, d_;
  std::vector<PetscReal> alpha_, beta_;     // capacity max_dim_, reserved in setup()
  std::vector<PetscReal> rhs_, s_, pivot_;  // max_dim_ entries each
  PetscReal r_bar_norm_ = 0;                // ||r̄||
  PetscReal beta_last_ = 0;                 // β_j of the newest step (next vector's scale)
  bool exhausted_ = true;
};

}  // namespace bilevel
