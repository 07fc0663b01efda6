#pragma once
/// \file Private building blocks of the data-parallel problems (logreg, hyperclean): each rank owns a block
/// of rows with all columns, the model is gathered to every rank, kernels run on the local rows, and
/// model-sized results are summed over ranks. Not installed; used by src/problems/*.cpp only.
#include <petscmat.h>
#include <petscvec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/data/dataset.hpp"
#include "bilevel/petsc/comm_counter.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel::detail {

/// The rows of a batch this rank owns, as local row numbers (0-based in the local block). Not collective.
/// For a full batch row(k) = k; otherwise row(k) = indices[k] − row_begin over the slice of the (sorted)
/// global indices that falls in [row_begin, row_end).
class LocalRows {
 public:
  /// Selects the local part of `batch` on `data`; `global_size` becomes the batch's global size (the
  /// divisor of means). Indices outside [0, n_rows) are an InputError (every rank sees the same batch, so
  /// every rank throws). Not collective.
  void select(const Dataset& data, const Batch& batch);
  PetscInt count() const { return count_; }
  PetscInt global_size() const { return global_size_; }
  bool full() const { return full_; }
  PetscInt row(PetscInt k) const { return full_ ? k : indices_[k] - offset_; }

 private:
  bool full_ = true;
  const PetscInt* indices_ = nullptr;
  PetscInt offset_ = 0;
  PetscInt count_ = 0;
  PetscInt global_size_ = 0;
};

/// Read access to the CSR arrays of a MATSEQAIJ (row pointers, column indices, values). Not collective.
class CsrView {
 public:
  explicit CsrView(Mat a);
  CsrView(const CsrView&) = delete;
  CsrView& operator=(const CsrView&) = delete;
  ~CsrView();
  const PetscInt* ia = nullptr;
  const PetscInt* ja = nullptr;
  const PetscScalar* values = nullptr;
  PetscInt rows = 0;

 private:
  Mat a_;
};

/// Read access to a MATSEQDENSE (column-major, leading dimension lda). Not collective.
class DenseView {
 public:
  explicit DenseView(Mat a);
  DenseView(const DenseView&) = delete;
  DenseView& operator=(const DenseView&) = delete;
  ~DenseView();
  const PetscScalar* values = nullptr;
  PetscInt lda = 0;

 private:
  Mat a_;
};

/// Gathers a distributed Vec to every rank (a VecScatter "to all" made once, reused). Every call scatters
/// (so all ranks always take part, whatever their local view of the Vec's state). With change tracking,
/// the gathered content is compared with the previous one, and generation() changes exactly when the
/// content does: caches keyed on it are valid on every rank alike. Collective on the Vec's communicator.
class Gatherer {
 public:
  explicit Gatherer(bool track_changes = false) : track_(track_changes) {}
  /// Copies the whole of `v` into a sequential array on every rank; returns it (valid until the next
  /// call). All Vecs gathered by one Gatherer must share a layout. Collective.
  const PetscScalar* gather(Vec v);
  /// Counter that changes when a gather returns content different from the previous one (tracking only).
  /// Not collective.
  std::uint64_t generation() const { return generation_; }
  /// Array of the last gather. Not collective.
  const PetscScalar* data() const { return buf_[cur_].data(); }

 private:
  bool track_;
  std::vector<PetscScalar> buf_[2];  // declared before the Vecs that wrap them
  petsc::VecHandle full_[2];
  petsc::ScatterHandle scatter_;
  int cur_ = 0;
  std::uint64_t generation_ = 0;
  bool valid_ = false;
};

/// (id, state) of a PETSc Vec on this rank: equal keys mean equal local content. Not collective.
struct VecKey {
  PetscObjectId id = 0;
  PetscObjectState state = -1;
  bool operator==(const VecKey&) const = default;
};
VecKey vec_key(Vec v);

/// True on every rank if v's key differs from `last` on any rank (one allreduce of an int on several ranks);
/// `last` becomes v's key. Collective on v's communicator.
bool changed_anywhere(Vec v, VecKey& last);

/// How the model reaches the ranks and the model-sized results return to the owners.
enum class ModelComm {
  Auto,  ///< owners for models above kOwnersFromEntries entries, gather below (measured, docs/performance.md)
  Gather,  ///< the whole model gathered to every rank, results summed by one allreduce of the whole model
  Owners,  ///< only the entries a rank's rows use are sent to it; results are added onto the owners
};
/// Model size (entries) from which ModelComm::Auto uses owners.
inline constexpr PetscInt kOwnersFromEntries = 4096;

/// The columns one rank's sparse rows use, and the scatters that move the model entries of those columns
/// (PETSc's MPIAIJ column split applied to the rows' own column set). setup() renumbers the local CSR's
/// column indices in place to positions in the sorted list of the distinct columns the rows use (the
/// mapping is monotone, so rows stay sorted), so kernels address compressed local arrays: the model part
/// the rows need (gather) and their contributions (add), with `block` entries per column (K for a
/// multinomial model) and optional extra model rows after the columns (the intercept or bias row).
/// Owners mode: gather sends each rank only the entries its rows use (a VecScatter from the model's
/// layout), add sends each contribution to the owner of the entry (the reverse scatter with ADD_VALUES).
/// Gather mode: the whole model to every rank and one allreduce of the whole model, for small models.
/// Bytes are counted under CommPhase::Gather and CommPhase::Reduce. Collective on the layout's communicator
/// unless a method says otherwise.
class LocalColumns {
 public:
  /// local: the rank's rows (MATSEQAIJ; its column indices are renumbered); layout: a Vec with the
  /// model's layout, (n_columns + extra.size()) * block entries; extra: model rows (in block units)
  /// appended after the columns. Collective.
  void setup(Mat local, Vec layout, PetscInt block, std::span<const PetscInt> extra, ModelComm comm);
  /// Compressed positions (columns used, then the extra rows). Not collective.
  PetscInt size() const { return static_cast<PetscInt>(columns_.size()); }
  /// Entries of a compressed array: size() * block. Not collective.
  PetscInt entries() const { return size() * block_; }
  /// The model row of compressed position k. Not collective.
  PetscInt column(PetscInt k) const { return columns_[static_cast<std::size_t>(k)]; }
  /// True when the owners mode is in force. Not collective.
  bool owners() const { return owners_; }
  /// dst[k block + c] = v[column(k) block + c] for every position k. Collective.
  void gather(Vec v, PetscScalar* dst);
  /// out[column(k) block + c] += src[k block + c], summed over ranks (out is not zeroed). Collective.
  void add(const PetscScalar* src, Vec out);
  /// Bytes this rank sends per gather / per add. Not collective.
  std::int64_t gather_bytes() const { return gather_bytes_; }
  std::int64_t add_bytes() const { return add_bytes_; }

 private:
  std::vector<PetscInt> columns_;
  PetscInt block_ = 1;
  bool owners_ = true;
  petsc::ScatterHandle scatter_;   // owners: model layout -> compressed; gather mode: to all
  petsc::VecHandle local_;         // sequential Vec whose array is placed per call
  std::vector<PetscScalar> full_;  // gather mode: the whole model
  PetscInt own_begin_ = 0, own_end_ = 0;
  std::int64_t gather_bytes_ = 0, add_bytes_ = 0;
};

/// Per-row cache validity: a row's cached quantity is valid when its stamp equals the current epoch.
/// `all_valid` short-cuts the per-row test after a full-batch evaluation. Not collective.
class RowStamps {
 public:
  void resize(PetscInt rows) { stamp_.assign(static_cast<std::size_t>(rows), 0); }
  /// Starts a new epoch if the model's generation differs from the one the cache was filled for.
  void refresh(std::uint64_t generation) {
    if (generation == generation_) return;
    generation_ = generation;
    ++epoch_;
    all_valid_ = false;
  }
  void invalidate() {
    ++epoch_;
    all_valid_ = false;
  }
  bool valid(PetscInt row) const { return all_valid_ || stamp_[static_cast<std::size_t>(row)] == epoch_; }
  void mark(PetscInt row) { stamp_[static_cast<std::size_t>(row)] = epoch_; }
  void mark_all() { all_valid_ = true; }
  bool all_valid() const { return all_valid_; }

 private:
  std::vector<std::uint64_t> stamp_;
  std::uint64_t epoch_ = 1;
  std::uint64_t generation_ = ~std::uint64_t{0};
  bool all_valid_ = false;
};

/// The compressed model a side's rows use (LocalColumns::gather), regathered only when the model Vec's
/// content changed on some rank (changed_anywhere), with a generation that changes exactly when the
/// gathered content does (so per-row caches keyed on it stay valid across calls at the same model).
/// Collective on the Vec's communicator.
class TrackedModel {
 public:
  /// The model's entries for `cols` (valid until the next call). Collective.
  const PetscScalar* get(LocalColumns& cols, Vec y);
  /// Changes when get() returned content different from the previous one. Not collective.
  std::uint64_t generation() const { return generation_; }

 private:
  std::vector<PetscScalar> buf_[2];
  int cur_ = 0;
  VecKey key_;
  std::uint64_t generation_ = 0;
  bool valid_ = false;
};

/// λ = e^x for the log-regularised problems (logreg, softmax): of the local entries of a per-feature x, or of
/// a scalar x gathered to every rank. Per-feature λ is recomputed only when x's local content changed (its
/// VecKey), not per call, and the λ of the last few x are kept (least recently used first out, at most
/// kMaxEntries and kMaxBytes per rank): a caller that alternates among several points (zeroth-order paths
/// at x and x + μ u_j stepping side by side) then computes each e^x once per point instead of once per call.
/// Collective on x's communicator (the scalar gather).
class ExpRegularisers {
 public:
  /// λ_j = e^{x_j} (local entries) or λ = e^x (one replicated value), valid until the next call.
  const PetscScalar* of(Vec x, bool scalar);

  /// How many times e^x was computed for a per-feature x (cache misses). Not collective.
  std::uint64_t evaluations() const { return evaluations_; }

  static constexpr std::size_t kMaxEntries = 16;
  static constexpr std::size_t kMaxBytes = std::size_t{64} << 20;

 private:
  struct Entry {
    VecKey key;
    std::uint64_t last_use = 0;
    std::vector<PetscScalar> lam;
  };
  Gatherer gather_;
  std::vector<PetscScalar> scalar_;
  std::vector<Entry> cache_;
  std::uint64_t clock_ = 0, evaluations_ = 0;
};

/// A per-feature upper Vec: one entry on rank 0 (scalar), or features [begin, min(end, n_features)) on this
/// rank (the layout of the model rows that hold them, so the regulariser terms are local). Collective.
petsc::VecHandle create_feature_vec(
    MPI_Comm comm, bool scalar, PetscInt begin, PetscInt end, PetscInt n_features);

/// What a data-parallel problem offers: UpperValue, LowerValue, LowerGradX, Stochastic (+ TestSet). Not
/// collective.
Capability data_capabilities(bool has_test);

/// This rank's range [begin, end) of `global` items split by PETSC_DECIDE. Collective on comm.
std::pair<PetscInt, PetscInt> ownership_range(MPI_Comm comm, PetscInt global);

/// buf[i] <- Σ_ranks buf[i] (MPI_Allreduce in place). Collective on comm.
void sum_over_ranks(MPI_Comm comm, std::span<PetscScalar> buf);
/// Σ_ranks value. Collective on comm.
PetscReal sum_over_ranks(MPI_Comm comm, PetscReal value);

/// log(1 + e^t) without overflow.
inline double softplus(double t) {
  return t > 0 ? t + std::log1p(std::exp(-t)) : std::log1p(std::exp(t));
}
/// σ(t) = 1 / (1 + e^{−t}) without overflow.
inline double sigmoid(double t) {
  if (t >= 0) return 1.0 / (1.0 + std::exp(-t));
  const double e = std::exp(t);
  return e / (1.0 + e);
}

/// n as a BLAS integer (a PETSc error when it does not fit). Not collective.
inline PetscBLASInt blas_int(PetscInt n) {
  PetscBLASInt b = 0;
  BILEVEL_PETSC_CALL(PetscBLASIntCast(n, &b));
  return b;
}

/// Makes sure `v` holds at least n elements (grows only; no allocation once large enough). Not collective.
template <typename T>
T* ensure(std::vector<T>& v, std::size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace bilevel::detail
