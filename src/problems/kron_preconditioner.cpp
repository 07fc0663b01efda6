/// \file The Kronecker preconditioner of hyperclean's lower level: the Cholesky form of (c G + μ) ⊗ I_K and
/// the truncated Kronecker (K-FAC-like) form; see kron_preconditioner.hpp for the mathematics.
#include "kron_preconditioner.hpp"

// clang-format off
#include <petscsys.h>
#include <petscblaslapack.h>  // after petscsys.h, which it needs
// clang-format on

#include <algorithm>
#include <string>

#include "bilevel/petsc/error.hpp"

namespace bilevel::detail {

KronPreconditioner::KronPreconditioner(PetscInt n1, PetscInt K, PetscInt rank)
    : n1_(n1),
      K_(K),
      rank_(std::min(rank, n1)),
      bbuf_(static_cast<std::size_t>(n1 * K)),
      xbuf_(static_cast<std::size_t>(n1 * K)) {
  BILEVEL_PETSC_CALL(MatCreateSeqDense(PETSC_COMM_SELF, n1_, K_, bbuf_.data(), B_.out()));
  BILEVEL_PETSC_CALL(MatCreateSeqDense(PETSC_COMM_SELF, n1_, K_, xbuf_.data(), X_.out()));
}

void KronPreconditioner::factor(const std::vector<PetscScalar>& gram,
                                PetscReal c,
                                PetscReal mu,
                                PetscReal mub,
                                const std::vector<PetscScalar>& klass) {
  c_ = c;
  if (rank_ > 0) return factor_spectral(gram, klass, mu);
  P_.reset();
  BILEVEL_PETSC_CALL(MatCreateSeqDense(PETSC_COMM_SELF, n1_, n1_, nullptr, P_.out()));
  PetscScalar* a = nullptr;
  PetscInt lda = 0;
  BILEVEL_PETSC_CALL(MatDenseGetLDA(P_, &lda));
  BILEVEL_PETSC_CALL(MatDenseGetArray(P_, &a));
  for (PetscInt j = 0; j < n1_; ++j)  // P = c G + diag(μ, …, μ, μ_b)
    for (PetscInt i = 0; i < n1_; ++i) a[i + j * lda] = c * gram[static_cast<std::size_t>(i + j * n1_)];
  for (PetscInt j = 0; j < n1_; ++j) a[j + j * lda] += j < n1_ - 1 ? mu : mub;
  BILEVEL_PETSC_CALL(MatDenseRestoreArray(P_, &a));
  BILEVEL_PETSC_CALL(MatAssemblyBegin(P_, MAT_FINAL_ASSEMBLY));
  BILEVEL_PETSC_CALL(MatAssemblyEnd(P_, MAT_FINAL_ASSEMBLY));
  BILEVEL_PETSC_CALL(MatCholeskyFactor(P_, nullptr, nullptr));
}

std::vector<PetscReal> KronPreconditioner::eigen(std::vector<PetscScalar>& a, PetscInt order) {
  std::vector<PetscReal> w(static_cast<std::size_t>(order));
  PetscBLASInt n = 0, lwork = -1, info = 0;
  BILEVEL_PETSC_CALL(PetscBLASIntCast(order, &n));
  PetscScalar query = 0;
  LAPACKsyev_("V", "L", &n, a.data(), &n, w.data(), &query, &lwork, &info);
  lwork = static_cast<PetscBLASInt>(query);
  std::vector<PetscScalar> work(static_cast<std::size_t>(std::max<PetscBLASInt>(lwork, 1)));
  LAPACKsyev_("V", "L", &n, a.data(), &n, w.data(), work.data(), &lwork, &info);
  if (info != 0) throw Error("hyperclean: LAPACK syev failed (info " + std::to_string(info) + ")");
  return w;
}

void KronPreconditioner::factor_spectral(const std::vector<PetscScalar>& gram,
                                         const std::vector<PetscScalar>& klass,
                                         PetscReal mu) {
  if (vr_.empty()) {
    std::vector<PetscScalar> a(gram);
    const std::vector<PetscReal> w = eigen(a, n1_);
    vr_.assign(a.end() - static_cast<std::ptrdiff_t>(n1_ * rank_), a.end());  // the top r: the last r columns
    lam_.assign(w.end() - rank_, w.end());
    lam_tail_ = rank_ < n1_ ? w[static_cast<std::size_t>(n1_ - rank_ - 1)] : 0.0;  // λ_{r+1}
  }
  u_ = klass;  // symmetric, so row- and column-major agree
  const std::vector<PetscReal> sigma = eigen(u_, K_);
  d_.resize(static_cast<std::size_t>(rank_ * K_));
  tail_.resize(static_cast<std::size_t>(K_));
  for (PetscInt k = 0; k < K_; ++k) {
    const PetscReal sk = std::max<PetscReal>(sigma[static_cast<std::size_t>(k)], 0);
    tail_[static_cast<std::size_t>(k)] = 1.0 / (lam_tail_ * sk + mu);
    for (PetscInt i = 0; i < rank_; ++i)
      d_[static_cast<std::size_t>(i + k * rank_)] =
          1.0 / (lam_[static_cast<std::size_t>(i)] * sk + mu) - tail_[static_cast<std::size_t>(k)];
  }
}

void KronPreconditioner::apply_spectral(const PetscScalar* b, PetscScalar* x, PetscInt vecs) {
  PetscBLASInt n = 0, r = 0, kk = 0, cols = 0;
  BILEVEL_PETSC_CALL(PetscBLASIntCast(n1_, &n));
  BILEVEL_PETSC_CALL(PetscBLASIntCast(rank_, &r));
  BILEVEL_PETSC_CALL(PetscBLASIntCast(K_, &kk));
  BILEVEL_PETSC_CALL(PetscBLASIntCast(vecs * K_, &cols));
  const std::size_t block = static_cast<std::size_t>(n1_ * K_);
  z_.resize(block * static_cast<std::size_t>(vecs));
  t_.resize(static_cast<std::size_t>(rank_ * vecs * K_));
  const PetscScalar one = 1, zero = 0;
  for (PetscInt v = 0; v < vecs; ++v)  // Z = B U (class basis)
    BLASgemm_(
        "N", "N", &n, &kk, &kk, &one, b + v * block, &n, u_.data(), &kk, &zero, z_.data() + v * block, &n);
  BLASgemm_(
      "T", "N", &r, &cols, &n, &one, vr_.data(), &n, z_.data(), &n, &zero, t_.data(), &r);  // T = V_rᵀ Z
  for (PetscInt col = 0; col < vecs * K_; ++col)
    for (PetscInt i = 0; i < rank_; ++i)
      t_[static_cast<std::size_t>(i + col * rank_)] *= d_[static_cast<std::size_t>(i + (col % K_) * rank_)];
  for (PetscInt col = 0; col < vecs * K_; ++col) {  // Z ← Z diag(tail) + V_r T
    PetscScalar* zc = z_.data() + static_cast<std::size_t>(col * n1_);
    const PetscReal sc = tail_[static_cast<std::size_t>(col % K_)];
    for (PetscInt j = 0; j < n1_; ++j) zc[j] *= sc;
  }
  BLASgemm_("N", "N", &n, &cols, &r, &one, vr_.data(), &n, t_.data(), &r, &one, z_.data(), &n);
  for (PetscInt v = 0; v < vecs; ++v)  // X = Z Uᵀ
    BLASgemm_(
        "N", "T", &n, &kk, &kk, &one, z_.data() + v * block, &n, u_.data(), &kk, &zero, x + v * block, &n);
}

void KronPreconditioner::apply(const PetscScalar* in, PetscScalar* out) {
  for (PetscInt j = 0; j < n1_; ++j)
    for (PetscInt k = 0; k < K_; ++k) bbuf_[static_cast<std::size_t>(j + k * n1_)] = in[j * K_ + k];
  if (rank_ > 0)
    apply_spectral(bbuf_.data(), xbuf_.data(), 1);
  else
    BILEVEL_PETSC_CALL(MatMatSolve(P_, B_, X_));
  for (PetscInt j = 0; j < n1_; ++j)
    for (PetscInt k = 0; k < K_; ++k) out[j * K_ + k] = xbuf_[static_cast<std::size_t>(j + k * n1_)];
}

void KronPreconditioner::resize_wide(PetscInt m) {
  if (m == wide_m_) return;
  wide_m_ = m;
  wb_.assign(static_cast<std::size_t>(n1_ * m * K_), 0.0);
  wx_.assign(wb_.size(), 0.0);
  BILEVEL_PETSC_CALL(MatCreateSeqDense(PETSC_COMM_SELF, n1_, m * K_, wb_.data(), WB_.out()));
  BILEVEL_PETSC_CALL(MatCreateSeqDense(PETSC_COMM_SELF, n1_, m * K_, wx_.data(), WX_.out()));
}

void KronPreconditioner::set_rhs(PetscInt i, const PetscScalar* in) {
  PetscScalar* col = wb_.data() + static_cast<std::size_t>(i * K_ * n1_);
  for (PetscInt j = 0; j < n1_; ++j)
    for (PetscInt k = 0; k < K_; ++k) col[j + k * n1_] = in[j * K_ + k];
}

void KronPreconditioner::solve_wide() {
  if (rank_ > 0)
    apply_spectral(wb_.data(), wx_.data(), wide_m_);
  else
    BILEVEL_PETSC_CALL(MatMatSolve(P_, WB_, WX_));
}

}  // namespace bilevel::detail
