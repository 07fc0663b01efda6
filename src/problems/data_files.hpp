#pragma once
/// \file Private to src/problems: reading the data files of a problem (LIBSVM text, IDX images, PETSc
/// binary data sets by their header), the index-base rule applied once to all of them, and the label map
/// of binary problems. Not installed.
#include <mpi.h>

#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"

namespace bilevel::detail {

/// -bilevel_data_index_base auto|0|1: how LIBSVM feature indices are read, for all files of a problem.
/// Collective (reads the options database).
int data_index_base_option(MPI_Comm comm);

/// Rows [first, first + count) (count −1: to the end) of a PETSc binary data set (detected by its header),
/// an IDX image file (a name with "idx3"; labels beside it, see idx_labels_for) or a LIBSVM file; dense
/// `format` applies to IDX only. Collective on comm.
Dataset read_rows(MPI_Comm comm,
                  const std::string& path,
                  PetscInt first,
                  PetscInt count,
                  DataFormat format,
                  int index_base = -1);

/// Data rows of a file of any of those kinds (without parsing numbers). Collective on comm.
PetscInt count_rows(MPI_Comm comm, const std::string& path);

/// After reading all files of a problem: one index base for all (unify_index_base with `index_base` from
/// data_index_base_option), and IDX files of different image sizes are an InputError naming both files.
/// Collective.
void settle_files(const std::vector<Dataset*>& sets, int index_base);

/// Parses a class list "10-19", "1,3,5" or "0-4,7" (integers, ranges inclusive) for `option`; anything else
/// is an InputError naming the option and the allowed forms. Not collective.
std::vector<double> parse_class_list(const std::string& text, const std::string& option);

/// Binary labels from a label map: rows whose label value is in `positive` become class 1 (+1), the rest
/// class 0 (−1); class_values becomes {−1, +1}. Not collective.
void binarize_labels(Dataset& data, const std::vector<double>& positive);

/// -bilevel_<problem>_format for sets read from files: whether to store them dense. "dense"/"sparse" as
/// given; "auto": dense when the training set's dense storage (8 rows n_features bytes) is at most twice
/// its CSR arrays (12 bytes per nonzero, 4 per row) and at most 512 MiB on every rank; the same decision on
/// every rank. Collective on train.comm.
bool dense_storage(const std::string& format, const Dataset& train);

}  // namespace bilevel::detail
