#pragma once
/// \file Private to src/data: parsing LIBSVM lines and turning raw labels into class indices, shared by
/// the text reader (libsvm.cpp) and the PETSc binary converter (petsc_binary.cpp).
#include <mpi.h>
#include <petscsys.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "local_csr.hpp"

namespace bilevel::libsvm {

/// What is wrong with one line; the caller adds "FILE:LINE: ".
struct LineError {
  std::string what;
};

/// The line's content before any '#' comment, without surrounding white space. Not collective.
std::string_view content_of(std::string_view line);

/// Rows parsed from a file, with the file's own (not yet re-based) feature indices.
struct ParsedRows {
  LocalCsr csr;
  std::vector<double> labels;
  PetscInt max_index = -1;
  bool saw_index_zero = false;
};

/// Parses one data line "label [qid:Q] index:value ... " (content_of already applied) into `rows`; throws
/// LineError. index_base 1 rejects index 0. Not collective.
void parse_line(std::string_view text, int index_base, ParsedRows& rows);

/// The number of INDEX:VALUE pairs on a data line (content_of applied), without parsing numbers; the
/// weight used to balance rows over ranks. Not collective.
std::int64_t count_pairs(std::string_view text);

/// The sorted distinct values of `local` over all ranks of comm. Collective.
std::vector<double> distinct_over_ranks(MPI_Comm comm, std::vector<double> local);

/// Class values for the distinct labels: binary {-1,+1} or {0,1} (also when only one of them occurs),
/// otherwise the labels themselves in sorted order. Not collective.
std::vector<double> class_values_for(const std::vector<double>& labels);

/// Sets data.class_values, n_classes and labels (class indices) from this rank's raw label values, agreed
/// over data.comm. Collective.
void assign_labels(Dataset& data, const std::vector<double>& raw);

}  // namespace bilevel::libsvm
