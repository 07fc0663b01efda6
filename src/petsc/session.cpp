#include "bilevel/petsc/session.hpp"

#include <dlfcn.h>

#include <cstdlib>

#include "bilevel/petsc/error.hpp"

namespace bilevel::petsc {
namespace {

/// OpenBLAS starts one thread per core in every rank; with several ranks on a node that oversubscribes
/// the cores. Unless the user chose (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS), use one thread per rank
/// when more than one rank runs. Found at run time, so any BLAS works.
void limit_blas_threads() {
  if (std::getenv("OPENBLAS_NUM_THREADS") || std::getenv("OMP_NUM_THREADS")) return;
  int size = 1;
  MPI_Comm_size(PETSC_COMM_WORLD, &size);
  if (size <= 1) return;
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(1);
}

/// Whether ensure_initialized() called SlepcInitialize (and so owes the SlepcFinalize).
bool g_began_slepc = false;

/// Registered with PetscRegisterFinalize: PetscFinalize calls it before it tears PETSc down.
PetscErrorCode finalize_slepc() {
  if (!g_began_slepc) return 0;
  g_began_slepc = false;
  PetscBool slepc = PETSC_FALSE;  // the program may have called SlepcInitialize/SlepcFinalize itself since
  const PetscErrorCode ierr = SlepcInitialized(&slepc);
  if (ierr || !slepc) return ierr;
  return SlepcFinalize();
}

}  // namespace

void ensure_initialized() {
  PetscBool petsc = PETSC_FALSE, slepc = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscInitialized(&petsc));
  if (!petsc)
    throw ::bilevel::Error(
        "bilevel: PETSc is not initialised: call PetscInitialize or SlepcInitialize (or create a "
        "bilevel::petsc::Session) before using the library");
  BILEVEL_PETSC_CALL(SlepcInitialized(&slepc));
  if (slepc) return;
  BILEVEL_PETSC_CALL(SlepcInitializeNoArguments());
  g_began_slepc = true;
  BILEVEL_PETSC_CALL(PetscRegisterFinalize(finalize_slepc));
}

Session::Session(int* argc, char*** argv, const char* help) {
  BILEVEL_PETSC_CALL(SlepcInitialize(argc, argv, nullptr, help));
  initialize_package();
  limit_blas_threads();
  // PETSc errors become C++ exceptions whose message we print once; no tracebacks for user mistakes.
  BILEVEL_PETSC_CALL(PetscPushErrorHandler(PetscReturnErrorHandler, nullptr));
}

Session::~Session() {
  (void)PetscPopErrorHandler();
  (void)SlepcFinalize();
}

}  // namespace bilevel::petsc
