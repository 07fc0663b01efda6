#pragma once
/// \file Data sets sharded by rows over the ranks of a communicator.
#include <petscmat.h>

#include <string>
#include <vector>

#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// How the local block of rows is stored.
enum class DataFormat { Sparse, Dense };

/// Rows [row_begin, row_end) of a data set of n_rows x n_features live on this rank as `local`, a
/// sequential PETSc matrix (MATSEQAIJ for sparse data, MATSEQDENSE column-major for dense) on
/// PETSC_COMM_SELF with all n_features columns. Keeping every column of a row on its owner means a
/// product A v needs the (small) model vector on every rank and one reduction of a model-sized result,
/// instead of PETSc MPIAIJ's column split and its scatter per product (performance-facts.md).
/// Labels are class indices 0..n_classes-1; `class_values` maps them back to the file's label values.
struct Dataset {
  MPI_Comm comm = MPI_COMM_NULL;
  std::string source;   ///< file name(s), for messages
  PetscInt n_rows = 0;  ///< global rows
  PetscInt n_features = 0;
  PetscInt row_begin = 0, row_end = 0;  ///< this rank's rows
  DataFormat format = DataFormat::Sparse;
  petsc::MatHandle local;        ///< local rows x n_features, PETSC_COMM_SELF
  std::vector<PetscInt> labels;  ///< local rows' class indices
  PetscInt n_classes = 0;
  std::vector<double> class_values;  ///< class index -> label value in the file (sorted)

  PetscInt local_rows() const { return row_end - row_begin; }
  /// Global row where each rank's block begins, size ranks+1 (replicated). Not collective.
  std::vector<PetscInt> row_ranges;
};

/// Even block distribution of n rows over `size` ranks: rank r gets [begin(r), begin(r+1)). Not collective.
PetscInt block_begin(PetscInt n, int size, int rank);

/// Pads a dataset to `n_features` columns (a test file with fewer features than the training file).
/// More columns than n_features is an InputError naming the file. Collective.
void reconcile_features(Dataset& data, PetscInt n_features);

/// Converts the local block to the other format (sparse <-> dense). Collective.
void convert_format(Dataset& data, DataFormat format);

}  // namespace bilevel
