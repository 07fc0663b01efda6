#pragma once
/// \file The --summary JSON (DESIGN.md "Interfaces users see").
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/solver.hpp"

namespace bilevel {

/// The JSON object of a report plus extra keys. Not collective.
std::string summary_json(const SolveReport& report,
                         const std::vector<std::pair<std::string, PetscReal>>& extras);

/// Rank 0 writes `text` to path.tmp and renames it to path, so no half-written file is ever left; an
/// unwritable path is an InputError naming it on every rank. Collective on comm.
void write_file_atomically(MPI_Comm comm,
                           const std::string& path,
                           const std::string& text,
                           const std::string& option = "--summary");

/// Checks before any work that `path` can be written the way write_file_atomically and write_checkpoint
/// write it (path.tmp created in its folder, then renamed): an InputError naming the path and `option`
/// otherwise. Leaves nothing behind. Collective on comm.
void check_output_path(MPI_Comm comm, const std::string& path, const std::string& option);

/// The library version string ("0.1.0").
const char* version();

}  // namespace bilevel
