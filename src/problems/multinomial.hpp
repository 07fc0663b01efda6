#pragma once
/// \file Private building blocks of the multinomial (softmax) problems, hyperclean and softmax: the model
/// y = [W; bᵀ] row-major ((n_features + 1) × K), and one engine that forms z_i = Bᵀ a'_i for a stack of
/// such matrices B, lets the caller turn each row's z into an s, and accumulates Σ a'_i ⊗ s_i. Not
/// installed; used by src/problems/*.cpp only.
// clang-format off
#include <petscsys.h>
#include <petscblaslapack.h>  // after petscsys.h, which it needs
// clang-format on

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "data_parallel.hpp"

namespace bilevel::detail {

/// Work buffers of the engine, grown on demand and then reused (no allocation in steady state).
struct MultinomialWorkspace {
  std::vector<PetscScalar> pack;   // dense minibatch: the selected rows, row-major count × n_features
  std::vector<PetscScalar> z;      // dense: products Z (row-major count × width), reused for S
  std::vector<PetscScalar> row_z;  // one row's z (width)
  std::vector<PetscScalar> row_s;  // one row's s (width, or gofs + grad_width)
  std::vector<PetscScalar> s_wide; // dense: S when it is wider than Z (row-major count × grad_width)
  std::vector<PetscScalar> stack;  // stacked [W | V_1 | ...] row-major (n_features + 1) × width
  std::vector<PetscScalar> acc;    // model-sized reduction buffer(s)
  std::vector<PetscScalar> p;      // softmax of one row of a non-caching side
  std::vector<PetscScalar> grad;   // the whole gradient, replicated
};

/// Copies a dense (column-major SeqDense) local block into `dense` row-major and releases the Mat, so one
/// copy of the data is kept. Sparse data are left alone. Not collective.
void adopt_dense(Dataset& data, std::vector<PetscScalar>& dense);

inline PetscBLASInt blas_int(PetscInt n) {
  PetscBLASInt b = 0;
  BILEVEL_PETSC_CALL(PetscBLASIntCast(n, &b));
  return b;
}

/// p = softmax(z) over K entries; returns log Σ_k e^{z_k} (shifted by max z for stability).
inline double softmax(const PetscScalar* z, PetscInt K, PetscScalar* p) {
  double mx = z[0];
  for (PetscInt k = 1; k < K; ++k) mx = std::max(mx, z[k]);
  double sum = 0;
  for (PetscInt k = 0; k < K; ++k) {
    p[k] = std::exp(z[k] - mx);
    sum += p[k];
  }
  const double inv = 1.0 / sum;
  for (PetscInt k = 0; k < K; ++k) p[k] *= inv;
  return mx + std::log(sum);
}

/// The engine of every oracle. For each selected local row i (the k-th of `rows`):
///   z = Bᵀ a'_i            (B row-major (nf + 1) × width; its last row multiplies the constant 1)
///   op(k, i, z, s)         (fills s[gofs, gofs + gw) when G is given)
///   G += a'_i ⊗ s[gofs:]   (G row-major (nf + 1) × gw)
/// gw = grad_width, or width − gofs when grad_width < 0 (a wider G serves several gradients that share one
/// forward product, e.g. ∇_y g at several x).
/// Sparse blocks: one fused pass over each CSR row (forward and backward while the row is in cache).
/// Dense blocks (row-major, so a row and a minibatch's rows are contiguous): Zᵀ = B_Wᵀ A_selᵀ and
/// G_W += A_selᵀ S by one dgemm each, Z and S row-major (a row's z and s contiguous); A_sel is the local
/// block or the batch's rows packed.
template <typename Op>
void row_pass(const Dataset& data,
              const std::vector<PetscScalar>& dense,
              const LocalRows& rows,
              const PetscScalar* B,
              PetscInt width,
              PetscInt gofs,
              PetscScalar* G,
              MultinomialWorkspace& ws,
              Op&& op,
              PetscInt grad_width = -1) {
  const PetscInt nf = data.n_features, cnt = rows.count(), gw = grad_width < 0 ? width - gofs : grad_width;
  PetscScalar* z = ensure(ws.row_z, static_cast<std::size_t>(width));
  PetscScalar* s = ensure(ws.row_s, static_cast<std::size_t>(std::max(width, gofs + gw)));
  const PetscScalar* bias = B + nf * width;
  if (cnt == 0) return;
  PetscScalar* Gb = G ? G + nf * gw : nullptr;
  if (data.format == DataFormat::Sparse) {
    CsrView A(data.local);
    for (PetscInt k = 0; k < cnt; ++k) {
      const PetscInt i = rows.row(k);
      const PetscInt begin = A.ia[i], end = A.ia[i + 1];
      for (PetscInt c = 0; c < width; ++c) z[c] = bias[c];
      for (PetscInt p = begin; p < end; ++p) {  // z += a_ij B_j
        const PetscScalar a = A.values[p];
        const PetscScalar* b = B + A.ja[p] * width;
        for (PetscInt c = 0; c < width; ++c) z[c] += a * b[c];
      }
      op(k, i, z, s);
      if (!G) continue;
      const PetscScalar* sg = s + gofs;
      for (PetscInt p = begin; p < end; ++p) {  // G_j += a_ij s
        const PetscScalar a = A.values[p];
        PetscScalar* g = G + A.ja[p] * gw;
        for (PetscInt c = 0; c < gw; ++c) g[c] += a * sg[c];
      }
      for (PetscInt c = 0; c < gw; ++c) Gb[c] += sg[c];
    }
    return;
  }
  const PetscScalar* Asel = dense.data();  // row-major cnt × nf = column-major nf × cnt
  if (!rows.full()) {
    PetscScalar* pack = ensure(ws.pack, static_cast<std::size_t>(cnt * nf));
    for (PetscInt k = 0; k < cnt; ++k) std::copy_n(dense.data() + rows.row(k) * nf, nf, pack + k * nf);
    Asel = pack;
  }
  PetscScalar* Z = ensure(ws.z, static_cast<std::size_t>(cnt * width));
  PetscScalar* S = gw <= width ? Z : ensure(ws.s_wide, static_cast<std::size_t>(cnt * gw));
  const PetscBLASInt bm = blas_int(cnt), bn = blas_int(width), bk = blas_int(nf), bgw = blas_int(gw);
  const PetscBLASInt lda = blas_int(std::max<PetscInt>(nf, 1));
  const PetscScalar one = 1, zero = 0;
  // Zᵀ (width × cnt, column-major = Z row-major) = B_W (column-major width × nf) · A_selᵀ (nf × cnt)
  if (nf > 0)
    BLASgemm_("N", "N", &bn, &bm, &bk, &one, B, &bn, Asel, &lda, &zero, Z, &bn);
  else
    std::fill(Z, Z + cnt * width, 0.0);
  for (PetscInt k = 0; k < cnt; ++k) {
    PetscScalar* zk = Z + k * width;
    for (PetscInt c = 0; c < width; ++c) z[c] = zk[c] + bias[c];
    op(k, rows.row(k), z, s);
    if (!G) continue;
    // S (row-major cnt × gw) overwrites Z in place when gw ≤ width: row k of S lies inside rows 0..k of Z,
    // which are consumed already (row k was copied to z above); a wider S has its own buffer
    PetscScalar* sk = S + k * gw;
    for (PetscInt c = 0; c < gw; ++c) {
      sk[c] = s[gofs + c];
      Gb[c] += s[gofs + c];
    }
  }
  // G_W (column-major gw × nf) += Sᵀ (column-major gw × cnt) · A_sel (cnt × nf; A_sel is column-major nf ×
  // cnt)
  if (G && nf > 0) BLASgemm_("N", "T", &bgw, &bk, &bm, &one, S, &bgw, Asel, &lda, &one, G, &bgw);
}

/// True if the BLAS behind dgemm is an optimised one (OpenBLAS, BLIS, MKL), judged by the library file
/// that provides the symbol (the Debian libblas.so.3 alternative resolves to it). Not collective.
bool optimized_blas();

/// Fraction of stored-and-nonzero entries of a data set. Collective.
double density(const Dataset& data);

/// Number of records of an IDX file (gzip or plain), read on rank 0 and broadcast. Collective.
PetscInt idx_records(MPI_Comm comm, const std::string& path);

inline bool is_idx(const std::string& path) {
  return path.find("idx3") != std::string::npos;
}

std::string idx_labels_for(const std::string& images);

/// Renumbers the class indices of several sets onto the sorted union of their class values. Not
/// collective (class values are replicated).
PetscInt unify_classes(std::vector<Dataset*> sets);

}  // namespace bilevel::detail
