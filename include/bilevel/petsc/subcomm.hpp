#pragma once
/// \file Sub-communicators of contiguous rank blocks, and copies of a Vec into every block (the pattern of
/// PETSc's PCREDUNDANT), for work that runs side by side on groups of ranks.
#include <petscvec.h>

#include "bilevel/petsc/handle.hpp"

namespace bilevel::petsc {

/// An MPI communicator this object owns, freed on destruction: declare it before the objects that live on it.
class OwnedComm {
 public:
  OwnedComm() = default;
  OwnedComm(const OwnedComm&) = delete;
  OwnedComm& operator=(const OwnedComm&) = delete;
  ~OwnedComm() { reset(); }
  /// Frees the communicator. Collective on it.
  void reset();
  MPI_Comm get() const { return comm_; }
  explicit operator bool() const { return comm_ != MPI_COMM_NULL; }
  /// Splits `comm` into `groups` contiguous rank blocks (rank r joins block ⌊r groups / size⌋, the ranks keep
  /// their order) and owns this rank's block; returns the block's index. Collective on comm.
  int split_contiguous(MPI_Comm comm, int groups);

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// Copies between a Vec `full` of a communicator and a Vec `sub` of the same global size on this rank's
/// contiguous block (OwnedComm::split_contiguous): copy() gives every block the whole vector, copy_back()
/// returns block 0's copy. One VecScatter into a Vec of the full communicator that lays the blocks' copies
/// side by side, then a local copy, as PCREDUNDANT does. Collective on the full communicator.
class RedundantCopy {
 public:
  /// `group` is this rank's block; `full` and `sub` give the layouts (their values are not read).
  void setup(Vec full, Vec sub, int group);
  /// sub ← full on every block.
  void copy(Vec full, Vec sub);
  /// full ← block 0's sub (every rank passes its block's Vec; only block 0's values are read).
  void copy_back(Vec sub, Vec full);

 private:
  VecHandle stacked_;
  ScatterHandle scatter_, back_;
};

}  // namespace bilevel::petsc
