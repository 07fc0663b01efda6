#pragma once
/// \file The private multinomial engine of the softmax-model problems (hyperclean, softmax): the model
/// y = [W; bᵀ] row-major ((n_features + 1) × K), the kernel row_pass that forms z_i = Bᵀ a'_i for a stack
/// of such matrices B, lets the caller turn each row's z into an s and accumulates Σ a'_i ⊗ s_i, and
/// MultinomialEngine, which owns the data sets and runs the passes every oracle of both problems is made
/// of (weighted cross-entropy and its gradient, Hessian products, directional passes, test metrics). Not
/// installed; used by src/problems/*.cpp only.
// clang-format off
#include <petscsys.h>
#include <petscblaslapack.h>  // after petscsys.h, which it needs
// clang-format on

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "bilevel/petsc/handle.hpp"
#include "data_parallel.hpp"

namespace bilevel::detail {

/// Work buffers of the engine, grown on demand and then reused (no allocation in steady state).
struct MultinomialWorkspace {
  std::vector<PetscScalar> pack;    // dense minibatch: the selected rows, row-major count × n_features
  std::vector<PetscScalar> z;       // dense: products Z (row-major count × width), reused for S
  std::vector<PetscScalar> row_z;   // one row's z (width)
  std::vector<PetscScalar> row_s;   // one row's s (width, or gofs + grad_width)
  std::vector<PetscScalar> s_wide;  // dense: S when it is wider than Z (row-major count × grad_width)
  std::vector<PetscScalar> stack;   // stacked [W | V_1 | ...] row-major (n_features + 1) × width
  std::vector<PetscScalar> acc;     // model-sized reduction buffer(s)
  std::vector<PetscScalar> p;       // softmax of one row of a non-caching side
  std::vector<PetscScalar> grad;    // the whole gradient, replicated
  std::vector<PetscScalar> dir;     // compressed sides: one gathered direction (a side's entries)
  std::vector<PetscScalar> one;     // compressed sides: one direction's block of a multi-direction sum
};

/// Copies a dense (column-major SeqDense) local block into `dense` row-major and releases the Mat, so one
/// copy of the data is kept. Sparse data are left alone. Not collective.
void adopt_dense(Dataset& data, std::vector<PetscScalar>& dense);

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

/// z[c0, c0 + C) = init[c0, c0 + C) + Σ_{p ∈ [begin, end)} values[p] B[ja[p] width + c0 + ·): C columns of
/// one sparse row's forward product accumulated in registers (the same additions in the same order as a
/// plain loop, so the result is bit for bit that of z += a_ij B_j row by row). Not collective.
/// The model rows a few entries ahead are prefetched (kPrefetch): they are scattered over a model that does
/// not fit in cache, and their latency, not bandwidth, bounds the pass.
inline constexpr PetscInt kPrefetch = 8;

template <PetscInt C>
inline void csr_forward_block(const PetscInt* __restrict ja,
                              const PetscScalar* __restrict values,
                              PetscInt begin,
                              PetscInt end,
                              const PetscScalar* __restrict B,
                              PetscInt width,
                              PetscInt c0,
                              const PetscScalar* init,
                              PetscScalar* z) {
  PetscScalar r[C];
  for (PetscInt c = 0; c < C; ++c) r[c] = init[c0 + c];
  for (PetscInt p = begin; p < end; ++p) {
    if (p + kPrefetch < end) __builtin_prefetch(B + ja[p + kPrefetch] * width + c0);
    const PetscScalar a = values[p];
    const PetscScalar* b = B + ja[p] * width + c0;
    for (PetscInt c = 0; c < C; ++c) r[c] += a * b[c];
  }
  for (PetscInt c = 0; c < C; ++c) z[c0 + c] = r[c];
}

/// G[ja[p] gw + c0 + ·) += values[p] s[c0, c0 + C) for p ∈ [begin, end): C columns of one sparse row's
/// backward product, s held in registers. Not collective.
template <PetscInt C>
inline void csr_backward_block(const PetscInt* __restrict ja,
                               const PetscScalar* __restrict values,
                               PetscInt begin,
                               PetscInt end,
                               const PetscScalar* s,
                               PetscInt gw,
                               PetscInt c0,
                               PetscScalar* __restrict G) {
  PetscScalar r[C];
  for (PetscInt c = 0; c < C; ++c) r[c] = s[c0 + c];
  for (PetscInt p = begin; p < end; ++p) {
    if (p + kPrefetch < end) __builtin_prefetch(G + ja[p + kPrefetch] * gw + c0, 1);
    const PetscScalar a = values[p];
    PetscScalar* __restrict g = G + ja[p] * gw + c0;
    for (PetscInt c = 0; c < C; ++c) g[c] += a * r[c];
  }
}

/// Runs block(C, c0) over [0, width) in register blocks of 20 (one pass for 20 classes), 16, 8, 4, 2 and 1
/// columns.
template <typename Block>
inline void by_register_blocks(PetscInt width, Block&& block) {
  PetscInt c0 = 0;
  if (width % 20 == 0)
    for (; c0 + 20 <= width; c0 += 20) block(std::integral_constant<PetscInt, 20>{}, c0);
  for (; c0 + 16 <= width; c0 += 16) block(std::integral_constant<PetscInt, 16>{}, c0);
  if (c0 + 8 <= width) block(std::integral_constant<PetscInt, 8>{}, c0), c0 += 8;
  if (c0 + 4 <= width) block(std::integral_constant<PetscInt, 4>{}, c0), c0 += 4;
  if (c0 + 2 <= width) block(std::integral_constant<PetscInt, 2>{}, c0), c0 += 2;
  if (c0 < width) block(std::integral_constant<PetscInt, 1>{}, c0);
}

/// The engine of every oracle. For each selected local row i (the k-th of `rows`):
///   z = Bᵀ a'_i            (B row-major (nf + 1) × width; its last row multiplies the constant 1)
///   op(k, i, z, s)         (fills s[gofs, gofs + gw) when G is given)
///   G += a'_i ⊗ s[gofs:]   (G row-major (nf + 1) × gw)
/// gw = grad_width, or width − gofs when grad_width < 0 (a wider G serves several gradients that share one
/// forward product, e.g. ∇_y g at several x). B and G have bias_row + 1 rows, the last one the bias's
/// (bias_row < 0: nf, the whole model; a compressed side passes its LocalColumns positions).
/// Sparse blocks: one fused pass over each CSR row (forward and backward while the row is in cache), each
/// direction in register blocks of columns (csr_forward_block, csr_backward_block).
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
              PetscInt grad_width = -1,
              PetscInt bias_row = -1) {
  const PetscInt nf = data.n_features, cnt = rows.count(), gw = grad_width < 0 ? width - gofs : grad_width;
  const PetscInt br = bias_row < 0 ? nf : bias_row;
  PetscScalar* z = ensure(ws.row_z, static_cast<std::size_t>(width));
  PetscScalar* s = ensure(ws.row_s, static_cast<std::size_t>(std::max(width, gofs + gw)));
  const PetscScalar* bias = B + br * width;
  if (cnt == 0) return;
  PetscScalar* Gb = G ? G + br * gw : nullptr;
  if (data.format == DataFormat::Sparse) {
    CsrView A(data.local);
    for (PetscInt k = 0; k < cnt; ++k) {
      const PetscInt i = rows.row(k);
      const PetscInt begin = A.ia[i], end = A.ia[i + 1];
      by_register_blocks(width, [&](auto C, PetscInt c0) {  // z = b + Σ_j a_ij B_j
        csr_forward_block<C()>(A.ja, A.values, begin, end, B, width, c0, bias, z);
      });
      op(k, i, z, s);
      if (!G) continue;
      const PetscScalar* sg = s + gofs;
      by_register_blocks(gw, [&](auto C, PetscInt c0) {  // G_j += a_ij s
        csr_backward_block<C()>(A.ja, A.values, begin, end, sg, gw, c0, G);
      });
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

// read_rows and count_rows: data_files.hpp.

/// One data set of a multinomial problem: its rows (sparse CSR, or our row-major copy of dense rows, when
/// data.local is released), its labels data.labels (hyperclean's training side holds the corrupted ones),
/// and on a caching side the probabilities p_i (K per local row) valid for the model generation of `stamps`.
/// A compressed side (sparse rows, when the engine compresses) addresses its own model arrays: the
/// columns its local rows use, then the bias row (LocalColumns, block K; the CSR's column indices are
/// renumbered), so a pass moves and touches only the model entries its rows need and adds its sums onto
/// the owners of y's entries.
struct MultinomialSide {
  Dataset data;
  std::vector<PetscScalar> dense;
  std::vector<PetscScalar> p;
  RowStamps stamps;
  LocalRows rows;
  bool caches = false;
  bool compressed = false;
  LocalColumns cols;      // compressed: the columns of the local rows, then the bias row
  TrackedModel model;     // compressed: y on those positions
  PetscInt bias_row = 0;  // position of the bias row in the side's model arrays (n_features, or compressed)
  /// Rows of the side's model arrays (bias_row + 1). Not collective.
  PetscInt positions() const { return bias_row + 1; }
};

/// How y = [W; bᵀ] ((n_features + 1) K entries) is split over the ranks.
enum class ModelLayout {
  Entries,  ///< PETSC_DECIDE over the entries (hyperclean: x is per sample, nothing ties y's layout)
  Rows,     ///< whole rows of [W; bᵀ] per rank (softmax: x_j and row j of W live together)
};

/// The data sets of a multinomial problem and the passes its oracles are made of. The model reaches every
/// rank (gathered whole, or for a compressed side only the entries its rows use), each rank runs row_pass
/// over its rows, model-sized results are summed over ranks (an allreduce, or added onto the owners). The
/// training side caches p_i. Collective on comm() unless a method says otherwise.
class MultinomialEngine {
 public:
  /// Unifies the class indices of the sets through their class values, pads the features to the widest
  /// set, stores the blocks as `format` ("dense", "sparse", or "auto": dense above 30% nonzeros with an
  /// optimised BLAS) and keeps one row-major copy of dense rows. With `compress`, sparse sides become
  /// compressed (their own model arrays, moved by LocalColumns in that mode); without, every pass uses the
  /// whole gathered model (hyperclean, whose oracles address the whole model). Fewer than 2 classes is an
  /// InputError naming the training file and `problem`. Collective.
  MultinomialEngine(Dataset train,
                    Dataset validation,
                    std::optional<Dataset> test,
                    const std::string& format,
                    ModelLayout layout,
                    const std::string& problem,
                    std::optional<ModelComm> compress = std::nullopt);
  MultinomialEngine(const MultinomialEngine&) = delete;
  MultinomialEngine& operator=(const MultinomialEngine&) = delete;

  /// Not collective (the accessors below neither).
  MPI_Comm comm() const { return comm_; }
  PetscInt classes() const { return classes_; }
  PetscInt n_features() const { return n_features_; }
  /// (n_features + 1) K, the size of y.
  PetscInt dy() const { return dy_; }
  /// This rank's entries [y_begin, y_end) of y (with ModelLayout::Rows, rows y_begin/K … y_end/K of [W; bᵀ]).
  PetscInt y_begin() const { return y_begin_; }
  PetscInt y_end() const { return y_end_; }
  MultinomialSide& train() { return *train_; }
  MultinomialSide& validation() { return *validation_; }
  MultinomialSide* test() { return test_.get(); }
  const MultinomialSide& train() const { return *train_; }
  const MultinomialSide& validation() const { return *validation_; }
  const MultinomialSide* test() const { return test_.get(); }
  /// Bytes of this rank's share of the train, validation and test data (matrix, dense block, labels). Not
  /// collective.
  std::int64_t local_data_bytes() const;
  MultinomialWorkspace& workspace() { return work_; }

  /// A Vec with y's layout. Collective.
  petsc::VecHandle create_lower_vec() const;
  /// InputError unless y has dy() entries. Collective.
  void check_lower(Vec y) const;
  /// The training probabilities back to their value at y = 0 (1/K), every row stale. Not collective.
  void reset_probabilities();

  /// y gathered to every rank; the training cache starts a new epoch when y's content changed. Collective.
  const PetscScalar* gather_model(Vec y);
  /// A direction (a Vec with y's layout) gathered to every rank, valid until the next call. Collective.
  const PetscScalar* gather_direction(Vec w);
  /// y in the side's model arrays: compressed (only a compressed side's positions, regathered when y
  /// changed) or gathered whole; the training cache starts a new epoch when y's content changed. Collective.
  const PetscScalar* model(MultinomialSide& side, Vec y);
  /// out = (1/m) Σ_{i ∈ batch} ω_i a'_i ⊗ (p_i − e_{l_i}) + ridge ∘ y (ridge on y's local entries; none
  /// when empty) on a side at y; returns the batch's global size. Collective.
  PetscInt gradient(MultinomialSide& side,
                    Vec y,
                    const Batch& batch,
                    const PetscReal* weights,
                    std::span<const PetscScalar> ridge,
                    Vec out);

  /// Σ_i ω_i CE_i over the batch's local rows (ω_i = 1 without weights; `weights` indexed by local row);
  /// with grad: += Σ ω_i a'_i ⊗ (p_i − e_{l_i}). y_full and grad are in the side's model arrays (model()).
  /// *count gets the batch's global size. Refreshes the probability cache of a caching side. Not
  /// collective.
  double loss_pass(MultinomialSide& side,
                   const Batch& batch,
                   const PetscScalar* y_full,
                   const PetscReal* weights,
                   PetscScalar* grad,
                   PetscInt* count);
  /// loss_pass summed over ranks into a replicated buffer of dy + 1 entries (valid until the next pass):
  /// [0, dy) the gradient sum when `gradient`, [dy] the loss sum when `value`. Not for compressed sides
  /// (gradient()). Collective.
  const PetscScalar* sums(MultinomialSide& side,
                          const Batch& batch,
                          const PetscScalar* y_full,
                          const PetscReal* weights,
                          bool gradient,
                          bool value,
                          PetscInt* count);
  /// Σ_i ω_i a'_i ⊗ s_iq, s_iq = p_i ∘ (u_iq − p_i·u_iq), u_iq = V_qᵀ a'_i, over the training rows of the
  /// batch, for the m directions w_q side by side (row-major positions × m K, the training side's model
  /// arrays), summed over ranks (replicated, valid until the next pass) unless the training side is
  /// compressed (then this rank's part, for LocalColumns::add). *count gets the batch's global size.
  /// Collective.
  const PetscScalar* hvp_sums(const Batch& batch,
                              const PetscScalar* y_full,
                              const PetscReal* weights,
                              std::span<const Vec> w,
                              PetscInt* count);
  /// f = (1/m) Σ_{i ∈ batch} CE_i on the validation side, the upper level of both problems. Collective.
  PetscReal upper_value(Vec y, const Batch& batch);
  /// ∇_y f = (1/m) Σ_{i ∈ batch} a'_i ⊗ (p_i − e_{l_i}) on the validation side into gy. Collective.
  void upper_gradient(Vec y, const Batch& batch, Vec gy);
  /// The lower Hessian-vector products out_q = (1/n) Σ_i ω_i a'_i ⊗ s_iq + ridge ∘ w_q (hvp_sums, with the
  /// diagonal `ridge` of the regulariser's Hessian on y's local entries) at the model y. Collective.
  void hvp(Vec y,
           const Batch& batch,
           const PetscReal* weights,
           std::span<const Vec> w,
           std::span<const Vec> out,
           std::span<const PetscScalar> ridge);
  /// Selects the training rows of the batch for direction_pass; returns the batch's global size. Not
  /// collective.
  PetscInt select_train(const Batch& batch);
  /// One pass over the training rows selected by select_train with the cached p_i: for each row i,
  /// op(i, p_i, u_i, s_i) with u_i = [V_1ᵀ a'_i, …, V_mᵀ a'_i] (m K entries) and G += a'_i ⊗ s_i (G row-major
  /// positions × m K, when not null; y_full and G in the training side's model arrays). A row whose p_i is
  /// stale gets it recomputed in the same pass (W rides along as an extra block of the forward product).
  /// Collective (gathers the directions).
  template <typename Op>
  void direction_pass(const PetscScalar* y_full, std::span<const Vec> w, PetscScalar* G, Op&& op);
  /// out_l = scale · acc[(e / K) m K + q K + e % K] + ridge_l · src_l for this rank's entries e = y_begin +
  /// l: block q of a row-major (nf + 1) × m K sum, plus a diagonal term (none when ridge is empty). Not
  /// collective.
  void write_local(Vec out,
                   const PetscScalar* acc,
                   PetscInt m,
                   PetscInt q,
                   PetscReal scale,
                   std::span<const PetscScalar> ridge = {},
                   const PetscScalar* src = nullptr) const;
  /// Mean cross-entropy and accuracy (arg max_k z_k = l) of the model y on a side. Collective.
  TestMetrics evaluate(MultinomialSide& side, Vec y);

 private:
  /// Whether a row of the training side's selected rows has a stale p_i (decided per rank: the products are
  /// local).
  bool probabilities_stale() const;
  /// B = [W | V_1 | … | V_m] (with_model) or [V_1 | … | V_m], row-major positions × width in the training
  /// side's model arrays; the gathered direction itself for m = 1 without the model.
  const PetscScalar* stack(const PetscScalar* y_full, std::span<const Vec> w, bool with_model);
  /// Direction w in the training side's model arrays (compressed or whole), valid until the next call.
  const PetscScalar* direction(Vec w);

  MPI_Comm comm_;
  std::string problem_;
  PetscInt classes_ = 0, n_features_ = 0, dy_ = 0, y_begin_ = 0, y_end_ = 0;
  std::unique_ptr<MultinomialSide> train_, validation_, test_;
  MultinomialWorkspace work_;
  Gatherer y_gather_{true}, w_gather_;
};

template <typename Op>
void MultinomialEngine::direction_pass(const PetscScalar* y_full,
                                       std::span<const Vec> w,
                                       PetscScalar* G,
                                       Op&& op) {
  MultinomialSide& side = *train_;
  const auto m = static_cast<PetscInt>(w.size());
  const PetscInt K = classes_;
  const PetscInt wb = probabilities_stale() ? 1 : 0, width = (m + wb) * K;
  const PetscScalar* B = stack(y_full, w, wb != 0);
  row_pass(
      side.data,
      side.dense,
      side.rows,
      B,
      width,
      wb * K,
      G,
      work_,
      [&](PetscInt, PetscInt i, const PetscScalar* z, PetscScalar* s) {
        PetscScalar* p = side.p.data() + i * K;
        if (wb) {  // p_i = softmax(Wᵀ a'_i) from the model's block
          softmax(z, K, p);
          side.stamps.mark(i);
        }
        op(i, static_cast<const PetscScalar*>(p), z + wb * K, s + wb * K);
      },
      -1,
      side.bias_row);
  if (side.rows.full()) side.stamps.mark_all();
}

}  // namespace bilevel::detail
