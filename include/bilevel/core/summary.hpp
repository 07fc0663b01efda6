#pragma once
/// \file The --summary JSON (DESIGN.md "Interfaces users see").
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/solver.hpp"

namespace bilevel {

/// The JSON object of a report plus extra keys. Not collective.
std::string summary_json(const SolveReport& report, const std::vector<std::pair<std::string, PetscReal>>& extras);

/// Rank 0 writes `text` to path.tmp and renames it to path, so no half-written file is ever left; an
/// unwritable path is an InputError naming it on every rank. Collective on comm.
void write_file_atomically(MPI_Comm comm, const std::string& path, const std::string& text,
                           const std::string& option = "--summary");

/// The library version string ("0.1.0").
const char* version();

}  // namespace bilevel
