#include "data_parallel.hpp"

#include <petsc/private/petscimpl.h>  // PetscObjectStateGet (exported, declared only here in 3.18)

#include <string>

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
  BILEVEL_PETSC_CALL(VecScatterBegin(scatter_, v, full_[next], INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterEnd(scatter_, v, full_[next], INSERT_VALUES, SCATTER_FORWARD));
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
  BILEVEL_PETSC_CALL(
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(buf.size()), MPIU_SCALAR, MPIU_SUM, comm));
}

PetscReal sum_over_ranks(MPI_Comm comm, PetscReal value) {
  PetscReal out = value;
  BILEVEL_PETSC_CALL(MPI_Allreduce(&value, &out, 1, MPIU_REAL, MPIU_SUM, comm));
  return out;
}

}  // namespace bilevel::detail
