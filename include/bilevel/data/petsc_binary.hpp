#pragma once
/// \file Data sets as PETSc binary files: the matrix in MatView's binary format followed by the labels in
/// VecView's (so MatLoad then VecLoad on one viewer read them back), and PATH.meta, a small text file with
/// the feature count, index base and label set. bilevel-convert writes them from LIBSVM or IDX files.
#include <cstdint>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"

namespace bilevel {

/// Contents of PATH.meta ("key value" lines).
struct BinaryMeta {
  std::int64_t rows = 0, features = 0, nonzeros = 0;
  int index_base = 0;             ///< base the file's indices were read with (0 or 1); columns are 0-based
  bool index_zero_seen = false;   ///< the source had a feature index 0
  std::string origin = "libsvm";  ///< libsvm or idx (fixed width: features are pixel positions)
  std::vector<double> labels;     ///< distinct label values, sorted
  std::string source;             ///< the converted file
};

/// True if `path` begins with PETSc's binary matrix header (MAT_FILE_CLASSID, big-endian). A missing file is
/// an InputError "cannot open FILE: reason". Not collective.
bool is_petsc_binary(const std::string& path);

/// Reads PATH.meta; a missing or malformed one is an InputError naming it. Not collective.
BinaryMeta read_binary_meta(const std::string& path);

/// Writes `data` (sparse or dense; only nonzeros are stored) as PETSc binary PATH and PATH.meta with MPI-IO,
/// each rank writing its own rows; labels are written as the file's label values (class_values). The
/// writer h-scale's `bilevel-bench scale` and bilevel-convert share. Collective on data.comm.
void write_petsc_binary(const Dataset& data, const std::string& path);

struct BinaryReadOptions {
  PetscInt first_row = 0;  ///< skip this many rows
  PetscInt max_rows = -1;  ///< read at most this many rows (-1: all)
  int index_base = -1;     ///< -1: as converted; 0 or 1: re-base the columns to it (InputError if impossible)
};

/// Reads a PETSc binary data set with MPI-IO: every rank reads only its own rows' row lengths, column
/// indices, values and labels, directly into the arrays its matrix is built on (no copy); rows are
/// balanced by nonzeros like read_libsvm. Labels become classes as in read_libsvm. Collective on comm.
Dataset read_petsc_binary(MPI_Comm comm, const std::string& path, const BinaryReadOptions& options = {});

struct ConvertOptions {
  int index_base = -1;            ///< LIBSVM: -1 detect (0 if any index 0 appears, else 1), 0 or 1 to force
  std::string idx_labels;         ///< IDX: the label file (default: the name with images-idx3 -> labels-idx1)
  double scale = 1.0 / 255;       ///< IDX: pixel scaling
  std::size_t block_rows = 4096;  ///< rows held in memory at a time
};

/// Converts a LIBSVM (plain, gz, bz2, xz) or IDX image file (with its label file) to PETSc binary `output`
/// and output.meta in one streaming pass with memory bounded by block_rows rows: row lengths, columns,
/// values and labels go to temporary files beside `output`, which are then joined into it. Malformed input
/// is an InputError "FILE:LINE: what" (LIBSVM) or naming the file (IDX). Not collective.
BinaryMeta convert_to_petsc_binary(const std::string& input,
                                   const std::string& output,
                                   const ConvertOptions& options = {});

}  // namespace bilevel
