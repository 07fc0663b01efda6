#pragma once
/// \file Parallel reader of LIBSVM/svmlight text files (plain, .gz, .bz2, .xz).
#include <cstdint>
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

/// Reads a LIBSVM file into a row-sharded Dataset in two passes, rows balanced over ranks by nonzeros
/// (weight nonzeros + 1, see weighted_owner). Plain text: each rank scans only its byte range of the file
/// (split at line boundaries) and then parses its own rows from their first byte, so no rank reads the
/// whole file. Compressed text (by magic bytes: gzip, bzip2, xz): rank 0 decompresses it once, sending
/// contiguous blocks of lines to the ranks as it goes (rank 0 holds one chunk of text at a time), every
/// rank parses what it receives, and one exchange of the parsed rows balances them by nonzeros (during
/// it a rank holds up to twice its share; PETSc binary files, bilevel-convert, avoid that). data.index_base
/// is the base used (index_base, or detected: 0 if any index 0 appears, else 1) and data.index_zero_seen says
/// whether the file has an index 0 (for unify_index_base). Empty lines are skipped, '#' starts a comment,
/// "qid:N" tokens are ignored; rows are counted without them. Labels: {-1,+1} or {0,1} become classes {0,1};
/// other values become classes 0..C-1 in sorted order. A file whose labels are all +1 (or all -1, or all 0)
/// still gets both binary classes, so that its class indices agree with the training file's. A malformed file
/// (non-numeric value, bad or non-increasing index, missing value, no rows) is an InputError "FILE:LINE: what
/// is wrong", thrown on every rank. Collective on comm.
Dataset read_libsvm(MPI_Comm comm, const std::string& path, const LibsvmReadOptions& options = {});

/// The number of data rows of a LIBSVM file (pass 1 of read_libsvm alone). Collective on comm.
std::int64_t count_libsvm_rows(MPI_Comm comm, const std::string& path);

}  // namespace bilevel
