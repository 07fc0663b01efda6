#pragma once
/// \file Limited-memory inverse-Hessian approximations H ≈ (∇²_yy g)⁻¹ from secant pairs (qNBO,
/// algorithms.md §2.1, recursions C_b and C_s).
///
/// A secant pair is (s, g) = (y⁺ − y, ∇_y g(x, y⁺) − ∇_y g(x, y)) at one x; H0 = γ I with γ = sᵀg / gᵀg of
/// the most recent accepted pair (Nocedal & Wright eq. 7.20), or the value given by set_scale() before any
/// pair.
///
/// SecantPairs is our vector-free form (after Chen, Wang, Zhou & Zhou, NeurIPS 2014, "vector-free L-BFGS"):
/// the Gram matrix of the stored [S G] is kept up to date, so H d costs ONE reduction (VecMDot of d against
/// [S G]), O(m²) replicated scalar work and one VecMAXPY, for BFGS (the two-loop recursion run on
/// coefficients) and for SR1 (the compact form H = γ I + Σ p_i p_iᵀ / (p_iᵀ g_i), p_i = s_i − H_i g_i, kept
/// as coefficients over [S G], so a new γ or a dropped pair rebuilds the p_i without communication). Adding
/// a pair is one reduction as well.
///
/// LmvmBfgs is PETSc's MATLMVMBFGS (MatSolve is the two-loop recursion, two reductions per pair) with the
/// scalar J0 scaling; pairs are fed through cumulative shadows, since MatLMVMUpdate takes iterates, not
/// pairs. It avoids the two PETSc 3.18 traps of style-anchors.md §3.12.
#include <petscmat.h>
#include <petscvec.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bilevel/core/checkpoint.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// Which quasi-Newton update builds H.
enum class SecantKind { Bfgs, Sr1 };
const char* to_string(SecantKind kind);

/// Acceptance rules for pairs. BFGS keeps a pair iff sᵀg > curvature_eps ||s|| ||g|| (positive curvature,
/// scale free). SR1 uses a pair iff |p_iᵀg_i| >= sr1_skip ||p_i|| ||g_i|| and ||p_i|| > sr1_tiny (||s_i|| +
/// γ||g_i||) (a vanishing p_i means the pair carries no new curvature).
struct SecantRules {
  PetscReal curvature_eps = 1e-8;
  PetscReal sr1_skip = 1e-8;
  PetscReal sr1_tiny = 1e-6;
};

/// H ≈ (∇²_yy g)⁻¹ from at most `memory` secant pairs (first in, first out). Every method is collective on
/// the communicator of the layout given at construction unless it says otherwise.
class InverseHessianApprox {
 public:
  virtual ~InverseHessianApprox() = default;
  virtual SecantKind kind() const = 0;
  /// Drops every pair; H becomes γ I with the current γ.
  virtual void reset() = 0;
  /// Offers the pair (s, g) (copied); returns whether it was stored.
  virtual bool push(Vec s, Vec g) = 0;
  /// out <- H d. `out` must not be `d`.
  virtual void apply(Vec d, Vec out) = 0;
  /// Pairs stored. Not collective.
  virtual PetscInt size() const = 0;
  /// Pairs refused by push() since construction. Not collective.
  virtual std::int64_t rejected() const = 0;
  /// γ of H0 = γ I. Not collective.
  virtual PetscReal scale() const = 0;
  /// Sets γ (used until the next accepted pair rescales it). Collective (LmvmBfgs may reset).
  virtual void set_scale(PetscReal gamma) = 0;
  /// Registers the stored pairs and γ for checkpoints (names start with `prefix`). Not collective.
  virtual void declare_state(StateRegistry& state, const std::string& prefix) = 0;
};

/// Our vector-free BFGS / SR1 (see the file comment). Collective unless noted.
class SecantPairs final : public InverseHessianApprox {
 public:
  SecantPairs(Vec layout, SecantKind kind, PetscInt memory, SecantRules rules = {});
  SecantKind kind() const override { return kind_; }
  void reset() override;
  bool push(Vec s, Vec g) override;
  void apply(Vec d, Vec out) override;
  PetscInt size() const override { return static_cast<PetscInt>(order_.size()); }
  std::int64_t rejected() const override { return rejected_; }
  PetscReal scale() const override { return gamma_; }
  void set_scale(PetscReal gamma) override;
  /// Pairs SR1 currently uses (after its skip rule); size() for BFGS. Not collective.
  PetscInt active() const;
  void declare_state(StateRegistry& state, const std::string& prefix) override;

 private:
  PetscReal& gram(PetscInt a, PetscInt b) { return gram_[static_cast<std::size_t>(a * 2 * m_ + b)]; }
  PetscReal gram(PetscInt a, PetscInt b) const { return gram_[static_cast<std::size_t>(a * 2 * m_ + b)]; }
  /// Σ_b Gram(row, b) c_b over the stored slots (c indexed like the Gram matrix).
  PetscReal gram_row_dot(PetscInt row, const PetscReal* c) const;
  void rebuild_list();
  void rebuild_sr1();
  /// Scatters the coefficient vector c (Gram indexing) to the VecMAXPY order of list_.
  void combine(PetscReal d_coef, Vec d, const PetscReal* c, Vec out);

  SecantKind kind_;
  PetscInt m_;
  SecantRules rules_;
  std::vector<petsc::VecHandle> s_, g_;  // slot storage: S at Gram index j, G at Gram index m + j
  std::vector<Vec> list_;                // [S_0..S_{n-1}, G_0..G_{n-1}] for VecMDot / VecMAXPY
  std::vector<PetscInt> order_;          // slots, oldest first
  std::vector<PetscReal> gram_;          // (2m)² inner products of the stored vectors
  std::vector<PetscScalar> dots_s_, dots_g_, dots_d_;  // VecMDot results
  std::vector<PetscReal> a_, b_, alpha_, coef_;        // two-loop coefficients (Gram indexing)
  std::vector<PetscReal> p_;                           // SR1: p_i as Gram-indexed coefficients, per slot
  std::vector<PetscReal> sigma_;                       // SR1: p_iᵀ g_i per slot
  std::vector<char> use_;                              // SR1: slot passes the skip rule
  std::vector<PetscScalar> maxpy_;
  bool sr1_stale_ = true;
  PetscReal gamma_ = 1;
  std::int64_t rejected_ = 0;
};

/// PETSc's MATLMVMBFGS behind the same interface (scalar J0: γ = sᵀg/gᵀg of the latest pair; MatSolve applies
/// the inverse). set_scale() acts now when no pair is stored, otherwise from the next reset() (PETSc's δ).
/// Options prefix: -<prefix>mat_lmvm_*. Collective unless noted.
class LmvmBfgs final : public InverseHessianApprox {
 public:
  LmvmBfgs(Vec layout, PetscInt memory, const std::string& prefix);
  SecantKind kind() const override { return SecantKind::Bfgs; }
  void reset() override;
  bool push(Vec s, Vec g) override;
  void apply(Vec d, Vec out) override;
  PetscInt size() const override { return stored_; }
  std::int64_t rejected() const override;
  PetscReal scale() const override { return gamma_; }
  void set_scale(PetscReal gamma) override;
  /// PETSc's LMVM matrix cannot be written: a restart from a checkpoint starts with no stored pair (γ and
  /// the counters are kept), so its iterates differ from an uninterrupted run's (docs/operations.md).
  void declare_state(StateRegistry& state, const std::string& prefix) override;
  Mat mat() const { return mat_; }

 private:
  petsc::MatHandle mat_;
  petsc::VecHandle x_shadow_, f_shadow_;  // cumulative Σ s and Σ g fed to MatLMVMUpdate
  PetscInt memory_ = 0, stored_ = 0;
  PetscReal gamma_ = 1;
};

/// Which implementation stores the pairs.
enum class SecantBackend { Own, Petsc };
const char* to_string(SecantBackend backend);

/// The implementation selected: backend Own (SecantPairs, bfgs or sr1) or Petsc (LmvmBfgs, bfgs only; sr1 is
/// an InputError naming the option -<prefix>backend). Collective.
std::unique_ptr<InverseHessianApprox> make_inverse_hessian_approx(Vec layout,
                                                                  SecantKind kind,
                                                                  PetscInt memory,
                                                                  SecantBackend backend,
                                                                  const std::string& prefix,
                                                                  SecantRules rules = {});

}  // namespace bilevel
