#pragma once
/// \file The error policy of the programs (DESIGN.md "Errors").
#include <functional>
#include <string>
#include <vector>

namespace bilevel {

/// Runs body() and turns exceptions into exit codes: an InputError, CollectiveError or PETSc error (all
/// thrown on every rank) is printed once by rank 0 as "PROGRAM: error: MESSAGE" and every rank returns 1;
/// any other exception (possibly on one rank only) is printed by its rank and aborts the job with
/// MPI_Abort, so no rank waits forever in a collective. Collective on PETSC_COMM_WORLD.
int guarded_main(const char* program, const std::function<int()>& body);

/// Splits argv: tokens after the first that Boost.Program_options recognised go to `long_args`, the rest
/// (single-dash PETSc options and their values) to `petsc_args`. Not collective.
void split_arguments(int argc, char** argv, const std::vector<std::string>& long_options_with_value,
                     const std::vector<std::string>& long_flags, std::vector<std::string>& long_args,
                     std::vector<std::string>& petsc_args);

}  // namespace bilevel
