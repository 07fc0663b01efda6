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

const PetscScalar* ExpRegularisers::of(Vec x, bool scalar) {
  if (scalar) {
    lam_.assign(1, std::exp(gather_.gather(x)[0]));
    return lam_.data();
  }
  petsc::ReadView xv(x);
  lam_.resize(static_cast<std::size_t>(xv.size()));
  for (PetscInt j = 0; j < xv.size(); ++j)
    lam_[static_cast<std::size_t>(j)] = std::exp(xv[j]);  // λ_j = e^{x_j}
  return lam_.data();
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
