#include "data_parallel.hpp"

#include <petsc/private/petscimpl.h>  // PetscObjectStateGet (exported, declared only here in 3.18)

#include <algorithm>
#include <cmath>
#include <string>

#include "bilevel/petsc/vec_access.hpp"

namespace bilevel::detail {

void LocalRows::select(const Dataset& data, const Batch& batch) {
  if (batch.full) {  // the flag decides, as in BilevelProblem::batch_size
    full_ = true;
    indices_ = nullptr;
    offset_ = data.row_begin;
    count_ = data.local_rows();
    global_size_ = data.n_rows;
    return;
  }
  const auto idx = batch.indices;
  if (idx.empty()) throw InputError("empty batch on " + data.source);
  if (idx.front() < 0 || idx.back() >= data.n_rows)
    throw InputError("batch index out of range [0, " + std::to_string(data.n_rows) + ") on " + data.source);
  const auto lo = std::lower_bound(idx.begin(), idx.end(), data.row_begin);
  const auto hi = std::lower_bound(lo, idx.end(), data.row_end);
  full_ = false;
  indices_ = idx.data() + (lo - idx.begin());
  offset_ = data.row_begin;
  count_ = static_cast<PetscInt>(hi - lo);
  global_size_ = static_cast<PetscInt>(idx.size());
}

CsrView::CsrView(Mat a) : a_(a) {
  PetscBool done = PETSC_FALSE;
  BILEVEL_PETSC_CALL(MatGetRowIJ(a_, 0, PETSC_FALSE, PETSC_FALSE, &rows, &ia, &ja, &done));
  BILEVEL_ASSERT(done == PETSC_TRUE);
  BILEVEL_PETSC_CALL(MatSeqAIJGetArrayRead(a_, &values));
}

CsrView::~CsrView() {
  PetscBool done = PETSC_FALSE;
  (void)MatSeqAIJRestoreArrayRead(a_, &values);
  (void)MatRestoreRowIJ(a_, 0, PETSC_FALSE, PETSC_FALSE, &rows, &ia, &ja, &done);
}

DenseView::DenseView(Mat a) : a_(a) {
  BILEVEL_PETSC_CALL(MatDenseGetArrayRead(a_, &values));
  BILEVEL_PETSC_CALL(MatDenseGetLDA(a_, &lda));
}

DenseView::~DenseView() {
  (void)MatDenseRestoreArrayRead(a_, &values);
}

VecKey vec_key(Vec v) {
  VecKey key;
  BILEVEL_PETSC_CALL(PetscObjectGetId(reinterpret_cast<PetscObject>(v), &key.id));
  BILEVEL_PETSC_CALL(PetscObjectStateGet(reinterpret_cast<PetscObject>(v), &key.state));
  return key;
}

const PetscScalar* Gatherer::gather(Vec v) {
  if (!scatter_) {
    // The scatter "to all" from v's layout; its targets wrap our own buffers so the pointers stay valid.
    petsc::VecHandle created;
    BILEVEL_PETSC_CALL(VecScatterCreateToAll(v, scatter_.out(), created.out()));
    PetscInt n = 0;
    BILEVEL_PETSC_CALL(VecGetSize(v, &n));
    for (int b = 0; b < (track_ ? 2 : 1); ++b) {
      buf_[b].assign(static_cast<std::size_t>(n), 0.0);
      BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, n, buf_[b].data(), full_[b].out()));
    }
  }
  const int next = track_ ? 1 - cur_ : 0;
  {
    // Bytes: this rank's entries to each of the other ranks.
    int size = 1;
    PetscInt n_local = 0;
    MPI_Comm_size(PetscObjectComm(reinterpret_cast<PetscObject>(v)), &size);
    BILEVEL_PETSC_CALL(VecGetLocalSize(v, &n_local));
    petsc::CountedComm counted(
        petsc::CommPhase::Gather,
        static_cast<std::int64_t>(n_local) * (size - 1) * static_cast<std::int64_t>(sizeof(PetscScalar)),
        true);
    BILEVEL_PETSC_CALL(VecScatterBegin(scatter_, v, full_[next], INSERT_VALUES, SCATTER_FORWARD));
    BILEVEL_PETSC_CALL(VecScatterEnd(scatter_, v, full_[next], INSERT_VALUES, SCATTER_FORWARD));
  }
  if (track_) {
    const bool same = valid_ && std::equal(buf_[next].begin(), buf_[next].end(), buf_[cur_].begin());
    if (!same) ++generation_;
  }
  cur_ = next;
  valid_ = true;
  return buf_[cur_].data();
}

void sum_over_ranks(MPI_Comm comm, std::span<PetscScalar> buf) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  if (size == 1 || buf.empty()) return;
  petsc::allreduce(comm,
                   MPI_IN_PLACE,
                   buf.data(),
                   static_cast<int>(buf.size()),
                   MPIU_SCALAR,
                   MPIU_SUM,
                   petsc::CommPhase::Reduce);
}

PetscReal sum_over_ranks(MPI_Comm comm, PetscReal value) {
  PetscReal out = value;
  petsc::allreduce(comm, &value, &out, 1, MPIU_REAL, MPIU_SUM, petsc::CommPhase::Reduce);
  return out;
}

bool changed_anywhere(Vec v, VecKey& last) {
  const VecKey now = vec_key(v);
  int changed = now == last ? 0 : 1;
  last = now;
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(v));
  int size = 1;
  MPI_Comm_size(comm, &size);
  if (size > 1) {
    int any = 0;
    petsc::allreduce(comm, &changed, &any, 1, MPI_INT, MPI_MAX, petsc::CommPhase::Reduce);
    changed = any;
  }
  return changed != 0;
}

void LocalColumns::setup(
    Mat local, Vec layout, PetscInt block, std::span<const PetscInt> extra, ModelComm comm) {
  MPI_Comm c = PetscObjectComm(reinterpret_cast<PetscObject>(layout));
  int size = 1, rank = 0;
  MPI_Comm_size(c, &size);
  MPI_Comm_rank(c, &rank);
  PetscInt n_model = 0;
  BILEVEL_PETSC_CALL(VecGetSize(layout, &n_model));
  block_ = block;
  const PetscInt n_columns = n_model / block - static_cast<PetscInt>(extra.size());
  PetscBool seqaij = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscObjectTypeCompare(reinterpret_cast<PetscObject>(local), MATSEQAIJ, &seqaij));
  if (!seqaij) throw Error("LocalColumns: the local rows are not a MATSEQAIJ");
  {
    // The distinct columns (a mark per model column, once), then the rows' indices renumbered in place:
    // MatGetRowIJ of a MATSEQAIJ hands out the matrix's own index array.
    CsrView A(local);
    const PetscInt nnz = A.ia[A.rows];
    std::vector<PetscInt> map(static_cast<std::size_t>(std::max<PetscInt>(n_columns, 0)), -1);
    for (PetscInt p = 0; p < nnz; ++p) map[static_cast<std::size_t>(A.ja[p])] = 0;
    columns_.clear();
    for (PetscInt j = 0; j < n_columns; ++j)
      if (map[static_cast<std::size_t>(j)] == 0) {
        map[static_cast<std::size_t>(j)] = static_cast<PetscInt>(columns_.size());
        columns_.push_back(j);
      }
    PetscInt* ja = const_cast<PetscInt*>(A.ja);
    for (PetscInt p = 0; p < nnz; ++p) ja[p] = map[static_cast<std::size_t>(ja[p])];
  }
  for (const PetscInt e : extra) columns_.push_back(e);
  owners_ =
      comm == ModelComm::Owners || (comm == ModelComm::Auto && (size == 1 || n_model >= kOwnersFromEntries));
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(layout, &own_begin_, &own_end_));
  const auto entry = static_cast<std::int64_t>(sizeof(PetscScalar));
  if (owners_) {
    petsc::IsHandle from;
    BILEVEL_PETSC_CALL(ISCreateBlock(PETSC_COMM_SELF,
                                     block,
                                     static_cast<PetscInt>(columns_.size()),
                                     columns_.data(),
                                     PETSC_COPY_VALUES,
                                     from.out()));
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, block, entries(), nullptr, local_.out()));
    BILEVEL_PETSC_CALL(VecScatterCreate(layout, from, local_, nullptr, scatter_.out()));
    // Entries this rank receives from each owner; the transpose (one alltoall at setup) is what it sends.
    const PetscInt* ranges = nullptr;
    BILEVEL_PETSC_CALL(VecGetOwnershipRanges(layout, &ranges));
    std::vector<int> recv(static_cast<std::size_t>(size), 0), send(static_cast<std::size_t>(size), 0);
    for (const PetscInt col : columns_) {
      const PetscInt e = col * block;
      const auto owner = static_cast<int>(std::upper_bound(ranges, ranges + size + 1, e) - ranges - 1);
      if (owner != rank) recv[static_cast<std::size_t>(owner)] += static_cast<int>(block);
    }
    BILEVEL_PETSC_CALL(MPI_Alltoall(recv.data(), 1, MPI_INT, send.data(), 1, MPI_INT, c));
    gather_bytes_ = add_bytes_ = 0;
    for (int r = 0; r < size; ++r) {
      gather_bytes_ += send[static_cast<std::size_t>(r)] * entry;
      add_bytes_ += recv[static_cast<std::size_t>(r)] * entry;
    }
  } else {
    full_.assign(static_cast<std::size_t>(n_model), 0.0);
    petsc::VecHandle created;
    BILEVEL_PETSC_CALL(VecScatterCreateToAll(layout, scatter_.out(), created.out()));
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, n_model, full_.data(), local_.out()));
    gather_bytes_ = static_cast<std::int64_t>(own_end_ - own_begin_) * (size - 1) * entry;
    add_bytes_ = petsc::allreduce_bytes(n_model * entry, size);
  }
}

void LocalColumns::gather(Vec v, PetscScalar* dst) {
  if (owners_) {
    petsc::CountedComm counted(petsc::CommPhase::Gather, gather_bytes_);
    BILEVEL_PETSC_CALL(VecPlaceArray(local_, dst));
    BILEVEL_PETSC_CALL(VecScatterBegin(scatter_, v, local_, INSERT_VALUES, SCATTER_FORWARD));
    BILEVEL_PETSC_CALL(VecScatterEnd(scatter_, v, local_, INSERT_VALUES, SCATTER_FORWARD));
    BILEVEL_PETSC_CALL(VecResetArray(local_));
    return;
  }
  {
    petsc::CountedComm counted(petsc::CommPhase::Gather, gather_bytes_, true);
    BILEVEL_PETSC_CALL(VecScatterBegin(scatter_, v, local_, INSERT_VALUES, SCATTER_FORWARD));
    BILEVEL_PETSC_CALL(VecScatterEnd(scatter_, v, local_, INSERT_VALUES, SCATTER_FORWARD));
  }
  const PetscInt b = block_;
  for (PetscInt k = 0; k < size(); ++k)
    std::copy_n(full_.data() + columns_[static_cast<std::size_t>(k)] * b, b, dst + k * b);
}

void LocalColumns::add(const PetscScalar* src, Vec out) {
  if (owners_) {
    petsc::CountedComm counted(petsc::CommPhase::Reduce, add_bytes_);
    BILEVEL_PETSC_CALL(VecPlaceArray(local_, src));
    BILEVEL_PETSC_CALL(VecScatterBegin(scatter_, local_, out, ADD_VALUES, SCATTER_REVERSE));
    BILEVEL_PETSC_CALL(VecScatterEnd(scatter_, local_, out, ADD_VALUES, SCATTER_REVERSE));
    BILEVEL_PETSC_CALL(VecResetArray(local_));
    return;
  }
  const PetscInt b = block_;
  std::fill(full_.begin(), full_.end(), 0.0);
  for (PetscInt k = 0; k < size(); ++k)
    std::copy_n(src + k * b, b, full_.data() + columns_[static_cast<std::size_t>(k)] * b);
  MPI_Comm c = PetscObjectComm(reinterpret_cast<PetscObject>(out));
  sum_over_ranks(c, std::span<PetscScalar>(full_));
  petsc::WriteView o(out);
  for (PetscInt l = 0; l < o.size(); ++l) o[l] += full_[static_cast<std::size_t>(own_begin_ + l)];
}

const PetscScalar* TrackedModel::get(LocalColumns& cols, Vec y) {
  if (!changed_anywhere(y, key_) && valid_) return buf_[cur_].data();
  const int next = 1 - cur_;
  buf_[next].resize(static_cast<std::size_t>(cols.entries()));
  cols.gather(y, buf_[next].data());
  const bool same = valid_ && buf_[next] == buf_[cur_];
  if (!same) ++generation_;
  cur_ = next;
  valid_ = true;
  return buf_[cur_].data();
}

const PetscScalar* ExpRegularisers::of(Vec x, bool scalar) {
  if (scalar) {
    scalar_.assign(1, std::exp(gather_.gather(x)[0]));
    return scalar_.data();
  }
  const VecKey now = vec_key(x);
  ++clock_;
  for (Entry& e : cache_)
    if (e.key == now) {
      e.last_use = clock_;
      return e.lam.data();
    }
  petsc::ReadView xv(x);
  const auto n = static_cast<std::size_t>(xv.size());
  const std::size_t capacity = std::clamp<std::size_t>(
      kMaxBytes / (sizeof(PetscScalar) * std::max<std::size_t>(n, 1)), 1, kMaxEntries);
  Entry* slot = nullptr;
  if (cache_.size() < capacity) {
    slot = &cache_.emplace_back();
  } else {
    slot = &*std::min_element(
        cache_.begin(), cache_.end(), [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; });
  }
  ++evaluations_;
  slot->key = now;
  slot->last_use = clock_;
  slot->lam.resize(n);
  for (std::size_t j = 0; j < n; ++j) slot->lam[j] = std::exp(xv[static_cast<PetscInt>(j)]);  // λ_j = e^{x_j}
  return slot->lam.data();
}

petsc::VecHandle create_feature_vec(
    MPI_Comm comm, bool scalar, PetscInt begin, PetscInt end, PetscInt n_features) {
  petsc::VecHandle v;
  if (scalar) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    BILEVEL_PETSC_CALL(VecCreateMPI(comm, rank == 0 ? 1 : 0, 1, v.out()));
  } else {
    const PetscInt local = std::max<PetscInt>(0, std::min(end, n_features) - begin);
    BILEVEL_PETSC_CALL(VecCreateMPI(comm, local, n_features, v.out()));
  }
  return v;
}

Capability data_capabilities(bool has_test) {
  Capability c =
      Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX | Capability::Stochastic;
  if (has_test) c = c | Capability::TestSet;
  return c;
}

std::pair<PetscInt, PetscInt> ownership_range(MPI_Comm comm, PetscInt global) {
  PetscInt local = PETSC_DECIDE, end = 0;
  BILEVEL_PETSC_CALL(PetscSplitOwnership(comm, &local, &global));
  BILEVEL_PETSC_CALL(MPI_Scan(&local, &end, 1, MPIU_INT, MPI_SUM, comm));
  return {end - local, end};
}

}  // namespace bilevel::detail
