#pragma once
/// \file RAII around SlepcInitialize/SlepcFinalize (which also initialise PETSc and MPI).
#include <slepcsys.h>

#include <optional>
#include <string>

namespace bilevel::petsc {

/// Initialises MPI (unless the program already did), SLEPc and PETSc in the constructor, finalises them in
/// the destructor. Collective on MPI_COMM_WORLD. Also registers the library's log events and limits BLAS
/// threads to one per rank when several ranks share a node.
///
/// PETSc reads `-options_file FILE` inside PetscInitialize and aborts the job with a traceback when FILE
/// cannot be read. So before initialising PETSc, rank 0 checks every -options_file of argv; when one cannot
/// be read, every rank drops the -options_file arguments from argv, PETSc starts without them, and
/// startup_error() holds a one-line message that guarded_main (core/app.hpp) throws as an InputError.
class Session {
 public:
  Session(int* argc, char*** argv, const char* help = nullptr);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  /// The problem found with the command line before PETSc started (an unreadable -options_file), the
  /// same on every rank; nullopt when there was none. Not collective.
  static const std::optional<std::string>& startup_error();

 private:
  bool own_mpi_ = false;  // MPI_Init was ours, so MPI_Finalize is too
};

/// Makes the library usable whoever initialised PETSc:
///  * PETSc and SLEPc initialised (SlepcInitialize, a Session): nothing to do;
///  * PETSc only (PetscInitialize): calls SlepcInitializeNoArguments and registers SlepcFinalize with
///    PetscRegisterFinalize, so the program's PetscFinalize ends what the library began and nothing else;
///  * neither: calls SlepcInitializeNoArguments, which starts PETSc too (and MPI if the program did not;
///    options come from PETSC_OPTIONS and .petscrc only), and ends them again when the program calls
///    MPI_Finalize (an attribute on MPI_COMM_SELF, deleted first by MPI_Finalize) or else at exit.
/// Idempotent. Collective on PETSC_COMM_WORLD the first time.
void ensure_initialized();

/// One-time registration of the library's classid and log events (after ensure_initialized()); undone by
/// PetscFinalize, so a later PetscInitialize registers them again. BilevelSolver's constructor calls it.
/// Idempotent. Collective on PETSC_COMM_WORLD the first time.
void initialize_package();

}  // namespace bilevel::petsc
