#include "bilevel/petsc/subcomm.hpp"

#include <algorithm>
#include <cstdint>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel::petsc {

void OwnedComm::reset() {
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
}

int OwnedComm::split_contiguous(MPI_Comm comm, int groups) {
  reset();
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  const int group = static_cast<int>(static_cast<std::int64_t>(rank) * groups / size);
  MPI_Comm_split(comm, group, rank, &comm_);
  return group;
}

void RedundantCopy::setup(Vec full, Vec sub, int group) {
  PetscInt n_sub = 0, lo = 0, hi = 0, n_global = 0, s_lo = 0, s_hi = 0, f_lo = 0, f_hi = 0;
  BILEVEL_PETSC_CALL(VecGetSize(full, &n_global));
  BILEVEL_PETSC_CALL(VecGetLocalSize(sub, &n_sub));
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(sub, &lo, &hi));
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(full, &f_lo, &f_hi));
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(full));
  BILEVEL_PETSC_CALL(VecCreateMPI(comm, n_sub, PETSC_DETERMINE, stacked_.out()));
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(stacked_, &s_lo, &s_hi));
  // The blocks are contiguous rank ranges, so block g's copy occupies [g n, (g + 1) n) of the stacked Vec.
  BILEVEL_ASSERT(s_lo == group * n_global + lo);
  IsHandle from, to, back_from, back_to;
  BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, n_sub, lo, 1, from.out()));
  BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, n_sub, s_lo, 1, to.out()));
  BILEVEL_PETSC_CALL(VecScatterCreate(full, from, stacked_, to, scatter_.out()));
  // Back: the full Vec's entries [f_lo, f_hi) from block 0's copy, the range [0, n) of the stacked Vec.
  BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, f_hi - f_lo, f_lo, 1, back_from.out()));
  BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, f_hi - f_lo, f_lo, 1, back_to.out()));
  BILEVEL_PETSC_CALL(VecScatterCreate(stacked_, back_from, full, back_to, back_.out()));
}

void RedundantCopy::copy(Vec full, Vec sub) {
  BILEVEL_PETSC_CALL(VecScatterBegin(scatter_, full, stacked_, INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterEnd(scatter_, full, stacked_, INSERT_VALUES, SCATTER_FORWARD));
  ReadView s(stacked_);
  WriteView d(sub);
  std::copy(s.data(), s.data() + s.size(), d.data());
}

void RedundantCopy::copy_back(Vec sub, Vec full) {
  {
    ReadView s(sub);
    WriteView d(stacked_);
    std::copy(s.data(), s.data() + s.size(), d.data());
  }
  BILEVEL_PETSC_CALL(VecScatterBegin(back_, stacked_, full, INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterEnd(back_, stacked_, full, INSERT_VALUES, SCATTER_FORWARD));
}

}  // namespace bilevel::petsc
