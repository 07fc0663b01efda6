#pragma once
/// \file Parallel reader of LIBSVM/svmlight text files (plain, .gz, .bz2, .xz).
#include <string>

#include "bilevel/data/dataset.hpp"

namespace bilevel {

struct LibsvmReadOptions {
  PetscInt n_features = 0;  ///< 0: the largest index found; larger: pad
  PetscInt first_row = 0;   ///< skip this many rows of the file
  PetscInt max_rows = -1;   ///< read at most this many rows (-1: all)
  /// Index base: -1 detect (0-based if any index 0 appears, else 1-based), 0 or 1 to force.
  int index_base = -1;
};

/// Reads a LIBSVM file into a row-sharded Dataset: every rank streams (and decompresses) the file, a
/// first pass counts rows, a second parses only the rank's own block, so no rank holds the whole file.
/// Empty lines are skipped, '#' starts a comment, "qid:N" tokens are ignored; rows are counted without them.
/// Labels: {-1,+1} or {0,1} become classes {0,1}; other values become classes 0..C-1 in sorted order. A file
/// whose labels are all +1 (or all -1, or all 0) still gets both binary classes, so that its class indices
/// agree with the training file's.
/// A malformed file (non-numeric value, bad or non-increasing index, missing value, no rows) is an
/// InputError "FILE:LINE: what is wrong", thrown on every rank. Collective on comm.
Dataset read_libsvm(MPI_Comm comm, const std::string& path, const LibsvmReadOptions& options = {});

}  // namespace bilevel
