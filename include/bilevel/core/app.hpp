#pragma once
/// \file The error policy of the programs (DESIGN.md "Errors").
#include <petscsys.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace bilevel {

/// Seconds the ranks that caught an exception wait for the others in guarded_main's agreement.
inline constexpr double kErrorAgreementSeconds = 5.0;

/// Runs body() and turns exceptions into exit codes. The rule: an error on one rank never hangs the
/// others; every exception that leaves body() ends the job on every rank within seconds, with one line.
///
///  1. A rank that catches an exception joins an agreement: MPI_Ibarrier on a communicator that
///     guarded_main duplicates from PETSC_COMM_WORLD before body() starts (so it matches no collective of
///     body), waited for at most kErrorAgreementSeconds.
///  2. Every rank arrived: the error was collective (InputError and CollectiveError are by contract; a
///     PETSc error in a collective call usually is). Rank 0 prints "PROGRAM: error: MESSAGE" and every
///     rank returns 1.
///  3. Not every rank arrived (the others are still computing, or blocked in a collective that the failing
///     rank will never enter): each failing rank prints "PROGRAM: [rank R] error: MESSAGE" and calls
///     MPI_Abort(PETSC_COMM_WORLD, 1), which ends the whole job (the MPI launcher adds its own notice).
///
/// A problem found before PETSc started (petsc::Session::startup_error(), e.g. an unreadable
/// -options_file) is thrown as an InputError on every rank before body() runs. Collective on
/// PETSC_COMM_WORLD.
int guarded_main(const char* program, const std::function<int()>& body);

/// For tests of guarded_main's rule only (the CLI test one_rank_fails): when the environment variable
/// BILEVEL_DEBUG_FAIL_RANK is a rank number, that rank of comm throws a petsc::Error "out of memory" here
/// (as an allocation failing on one rank would); when it is "all", every rank does. Does nothing when the
/// variable is unset. Not collective.
void debug_failure_point(MPI_Comm comm);

/// Rank 0 of comm prints one line on stderr per option of the database under -<prefix> that nothing read
/// ("PROGRAM: warning: option -bilevel_upper_stpe was not used; did you mean -bilevel_upper_step?"), so a
/// typo does not pass silently; returns how many there were. Call at the end of a run, on every rank. Not
/// collective.
int report_unused_options(const char* program, MPI_Comm comm, std::string_view prefix = "bilevel_");

/// Splits argv: tokens after the first that Boost.Program_options recognised go to `long_args`, the rest
/// (single-dash PETSc options and their values) to `petsc_args`. Not collective.
void split_arguments(int argc,
                     char** argv,
                     const std::vector<std::string>& long_options_with_value,
                     const std::vector<std::string>& long_flags,
                     std::vector<std::string>& long_args,
                     std::vector<std::string>& petsc_args);

}  // namespace bilevel
