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
  /// included) in the arrays of `csr` themselves: nothing is copied. The arrays move into an object
  /// composed with the Mat (PetscContainer "bilevel_csr"), freed when the last Mat using them is
  /// destroyed. Not collective.
  static petsc::MatHandle adopt(LocalCsr&& csr, PetscInt n_cols);
  /// The arrays behind a Mat made by adopt() (nullptr for any other Mat). Not collective.
  static LocalCsr* owned_by(Mat a);
  /// A MATSEQAIJ of n_cols columns on the arrays of `a` (made by adopt(); they are shared, not copied),
  /// or a copy when `a` is another sequential AIJ matrix. Not collective.
  static petsc::MatHandle with_columns(Mat a, PetscInt n_cols);
};

}  // namespace bilevel
