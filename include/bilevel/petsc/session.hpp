#pragma once
/// \file RAII around SlepcInitialize/SlepcFinalize (which also initialise PETSc and MPI).
#include <slepcsys.h>

namespace bilevel::petsc {

/// Initialises SLEPc/PETSc/MPI in the constructor, finalises in the destructor. Collective on
/// MPI_COMM_WORLD. Also registers the library's log events and limits BLAS threads to one per rank when
/// several ranks share a node.
class Session {
 public:
  Session(int* argc, char*** argv, const char* help = nullptr);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();
};

/// Makes the library usable in a program that initialised PETSc its own way: PETSc must be initialised
/// (PetscInitialize, SlepcInitialize or a Session); when SLEPc is not, this calls SlepcInitializeNoArguments
/// and registers SlepcFinalize with PetscRegisterFinalize, so the program's PetscFinalize ends what the
/// library began and nothing else. Throws bilevel::Error when PETSc is not initialised. Idempotent.
/// Collective on PETSC_COMM_WORLD the first time.
void ensure_initialized();

/// One-time registration of the library's classid and log events (after ensure_initialized()); undone by
/// PetscFinalize, so a later PetscInitialize registers them again. BilevelSolver's constructor calls it.
/// Idempotent. Collective on PETSC_COMM_WORLD the first time.
void initialize_package();

}  // namespace bilevel::petsc
