#pragma once
/// \file Private to src/data: a rank's rows in CSR arrays, the form the readers build before PETSc sees them.
#include <petscmat.h>

#include <vector>

#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// Rows in compressed sparse row form with 0-based columns, increasing within each row.
struct LocalCsr {
  std::vector<PetscInt> row_ptr{0};  ///< size rows + 1
  std::vector<PetscInt> cols;
  std::vector<PetscScalar> vals;

  /// Number of rows. Not collective.
  PetscInt rows() const;
  /// A MATSEQAIJ of rows() x n_cols on PETSC_COMM_SELF holding exactly these entries (explicit zeros
  /// included), preallocated exactly. Not collective.
  petsc::MatHandle to_seqaij(PetscInt n_cols) const;
};

}  // namespace bilevel
