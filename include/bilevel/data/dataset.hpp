#pragma once
/// \file Data sets sharded by rows over the ranks of a communicator.
#include <petscmat.h>

#include <cstdint>
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
  /// Feature index of the file's column 0 (0 or 1; -1 when the format has no indices, as IDX).
  int index_base = -1;
  bool index_zero_seen = false;  ///< the file itself has a feature index 0
  bool fixed_width = false;      ///< features are positions (IDX pixels): never padded, widths must agree

  PetscInt local_rows() const { return row_end - row_begin; }
  /// Global row where each rank's block begins, size ranks+1 (replicated). Not collective.
  std::vector<PetscInt> row_ranges;
};

/// Even block distribution of n rows over `size` ranks: rank r gets [begin(r), begin(r+1)). Not collective.
PetscInt block_begin(PetscInt n, int size, int rank);

/// Owner of a row when rows are balanced by weight (nonzeros + 1): the row whose weight interval
/// [before, before + weight) has its midpoint in rank r's share [r total/size, (r+1) total/size) goes to r,
/// so each rank's weight is within one row of total/size and owners never decrease along the rows. Not
/// collective.
int weighted_owner(std::int64_t before, std::int64_t weight, std::int64_t total, int size);

/// The index-base rule for all files of a problem, applied once: `forced` 0 or 1 is used as is (the
/// readers were told); with -1 (auto) every file is read 0-based if any of them has a feature index 0,
/// else 1-based, and files read 1-based are shifted in place (one more column). Collective on each
/// dataset's communicator (all share one).
void unify_index_base(const std::vector<Dataset*>& sets, int forced);

/// Pads a dataset to `n_features` columns (a test file with fewer features than the training file).
/// More columns than n_features is an InputError naming the file. Collective.
void reconcile_features(Dataset& data, PetscInt n_features);

/// Converts the local block to the other format (sparse <-> dense). Collective.
void convert_format(Dataset& data, DataFormat format);

}  // namespace bilevel
