#pragma once
/// \file The Kronecker preconditioner of hyperclean's lower level (private to src/problems).
///
/// P = (c G + diag(μ, …, μ, μ_b)) ⊗ I_K, G = (1/n) Σ_i a'_i a'_iᵀ: the lower Hessian
/// (1/n) Σ ω_i a'_i a'_iᵀ ⊗ (diag(p_i) − p_i p_iᵀ) + μ with every softmax curvature block replaced by c I.
/// It removes what makes raw pixels ill-conditioned (the mean image, the pixel scales and correlations).
/// Cholesky-factored by PETSc (SeqDense, replicated: (nf + 1)² entries); applied to row-major
/// (nf + 1) × K blocks, the layout of y.
/// With rank r > 0 (PreconditionerKind::Cheap) M is instead a truncated Kronecker inverse that also keeps
/// the class structure of the curvature (K-FAC's two factors):
///   P_c = G ⊗ C + μ I,   C = (1/n) Σ_i ω_i (diag(p_i) − p_i p_iᵀ)   (K × K, at the cached probabilities),
///   M   = Σ_{i ≤ r} v_i v_iᵀ ⊗ U diag(1/(λ_i σ_k + μ)) Uᵀ + (I − V_r V_rᵀ) ⊗ U diag(1/(λ_{r+1} σ_k + μ)) Uᵀ,
/// from G = V Λ Vᵀ (LAPACK syev once; eigenvalues descending) and C = U Σ Uᵀ (syev of order K at every
/// refactorisation): exact on G's top-r eigenvectors, and on the rest of G's spectrum (λ ≤ λ_{r+1}) every λ
/// is replaced by λ_{r+1}, so M is SPD and M ⪯ P_c⁻¹. (The bias weight μ_b is taken as μ here.) Applying it
/// costs two dgemms with r columns and two of order K per vector, about 4 (nf+1) r flops per column of y,
/// against 2 (nf+1)² for the two triangular solves.
#include <petscmat.h>

#include <vector>

#include "bilevel/petsc/handle.hpp"

namespace bilevel::detail {

/// M ≈ P⁻¹ of the file comment on replicated data; no method communicates (not collective).
class KronPreconditioner {
 public:
  /// n1 = n_features + 1 rows of y's matrix form, K classes, r = rank (0: the Cholesky form).
  KronPreconditioner(PetscInt n1, PetscInt K, PetscInt rank = 0);
  /// Factors P for the curvature c (Cholesky), or with rank > 0 the truncated Kronecker form for the class
  /// curvature `klass` (K × K, row-major). `gram` is G, n1 × n1.
  void factor(const std::vector<PetscScalar>& gram,
              PetscReal c,
              PetscReal mu,
              PetscReal mub,
              const std::vector<PetscScalar>& klass = {});
  /// out = M in (whole y, row-major; in and out may alias).
  void apply(const PetscScalar* in, PetscScalar* out);
  /// Room for exactly m right-hand sides in one solve (solve_wide).
  void resize_wide(PetscInt m);
  /// Right-hand side i (whole y, row-major) of the next solve_wide.
  void set_rhs(PetscInt i, const PetscScalar* in);
  /// X_i = M B_i for the wide_m right-hand sides in one call: one pair of triangular solves with m K columns
  /// (or the spectral form's two dgemms).
  void solve_wide();
  /// Entry l (row-major y index) of solution i of the last solve_wide.
  PetscScalar solution(PetscInt i, PetscInt l) const {
    return wx_[static_cast<std::size_t>(i * K_ * n1_ + (l % K_) * n1_ + l / K_)];
  }
  /// The curvature c of the factored P (−1: none yet).
  PetscReal curvature() const { return c_; }
  /// Forgets the factorisation's curvature, so the next setup refactors.
  void invalidate() { c_ = -1; }

 private:
  /// Symmetric eigendecomposition of the order-n matrix `a` (column-major, overwritten by the
  /// eigenvectors); eigenvalues ascending.
  static std::vector<PetscReal> eigen(std::vector<PetscScalar>& a, PetscInt order);
  /// The truncated Kronecker form. G's eigenpairs are computed once.
  void factor_spectral(const std::vector<PetscScalar>& gram,
                       const std::vector<PetscScalar>& klass,
                       PetscReal mu);
  /// X = M B for `vecs` column-major n1 × K blocks B side by side (truncated Kronecker form).
  void apply_spectral(const PetscScalar* b, PetscScalar* x, PetscInt vecs);

  PetscInt n1_, K_, rank_;
  std::vector<PetscScalar> bbuf_, xbuf_, wb_, wx_;
  // Truncated Kronecker form: V_r (column-major n1 × r), Λ_r, λ_{r+1}, U (K × K), the scales
  // 1/(λ_i σ_k + μ) − tail_k (r × K column-major) and tail_k = 1/(λ_{r+1} σ_k + μ), scratch.
  std::vector<PetscScalar> vr_, lam_, u_, d_, tail_, z_, t_;
  PetscReal lam_tail_ = 0;
  petsc::MatHandle P_, B_, X_, WB_, WX_;
  PetscInt wide_m_ = 0;
  PetscReal c_ = -1;
};

}  // namespace bilevel::detail
