#include "bilevel/petsc/session.hpp"

#include <dlfcn.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/memory.hpp"

namespace bilevel::petsc {
namespace {

std::optional<std::string>& pending_startup_error() {
  static std::optional<std::string> error;
  return error;
}

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

/// Whether ensure_initialized() started PETSc itself (the program called neither PetscInitialize nor
/// SlepcInitialize), and so owes SlepcFinalize, which ends the PETSc that SLEPc began.
bool g_began_petsc = false;

/// Ends the SLEPc and PETSc that begin_everything() started (and MPI when PETSc started it). Idempotent.
void end_everything() {
  if (!g_began_petsc) return;
  g_began_petsc = false;
  PetscBool on = PETSC_FALSE;
  if (SlepcInitialized(&on) == 0 && on) (void)SlepcFinalize();  // calls PetscFinalize: SLEPc began PETSc
  on = PETSC_FALSE;
  if (PetscInitialized(&on) == 0 && on) (void)PetscFinalize();  // the program ended SLEPc but not PETSc
}

/// Delete callback of an attribute on MPI_COMM_SELF: MPI_Finalize deletes MPI_COMM_SELF's attributes first,
/// while MPI still works, so a program that began MPI and ends it has PETSc ended just before.
int end_before_mpi_finalize(MPI_Comm, int, void*, void*) {
  end_everything();
  return MPI_SUCCESS;
}

/// The program called neither PetscInitialize nor SlepcInitialize: start SLEPc (and with it PETSc, and MPI
/// when the program did not) with no arguments (PETSC_OPTIONS still applies), and end them when the program
/// ends MPI (an attribute on MPI_COMM_SELF) or else at exit. Collective on MPI_COMM_WORLD.
void begin_everything() {
  int mpi = 0;
  MPI_Initialized(&mpi);
  BILEVEL_PETSC_CALL(SlepcInitializeNoArguments());
  g_began_petsc = true;
  limit_blas_threads();
  if (mpi) {  // the program owns MPI: end PETSc inside its MPI_Finalize
    int keyval = MPI_KEYVAL_INVALID;
    MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, end_before_mpi_finalize, &keyval, nullptr);
    MPI_Comm_set_attr(MPI_COMM_SELF, keyval, nullptr);
    MPI_Comm_free_keyval(&keyval);  // the attribute keeps it alive
  }
  static const bool registered = [] { return std::atexit(end_everything) == 0; }();
  (void)registered;
}

/// Why `path` cannot serve as an options file, or empty when it can be read. Not collective.
std::string unreadable_reason(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return "it is a folder";
  std::ifstream in(path);
  if (!in) return std::strerror(errno);
  return "";
}

/// Rank 0 checks every `-options_file FILE` of argv and broadcasts the first problem as one line; when
/// there is one, every rank removes the -options_file arguments (argc shrinks) so that PetscInitialize
/// does not read them. Collective on MPI_COMM_WORLD; MPI must be initialised.
void screen_options_files(int* argc, char*** argv) {
  if (!argc || !argv || !*argv) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::string message;
  if (rank == 0) {
    for (int i = 1; i < *argc && message.empty(); ++i) {
      if (std::string_view((*argv)[i]) != "-options_file") continue;
      if (i + 1 >= *argc) {
        message = "option -options_file needs a file name";
      } else if (const std::string why = unreadable_reason((*argv)[i + 1]); !why.empty()) {
        message = "cannot read options file '" + std::string((*argv)[i + 1]) + "' (-options_file): " + why;
      }
    }
  }
  int length = static_cast<int>(message.size());
  MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (length == 0) return;
  message.resize(static_cast<std::size_t>(length));
  MPI_Bcast(message.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD);
  pending_startup_error() = message;
  int kept = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::string_view((*argv)[i]) == "-options_file") {
      ++i;  // and its file name
      continue;
    }
    (*argv)[kept++] = (*argv)[i];
  }
  *argc = kept;
  (*argv)[kept] = nullptr;
}

}  // namespace

void ensure_initialized() {
  // libsuperlu_dist (CombBLAS), loaded with PETSc, sets mallopt(M_MMAP_MAX, 0) and
  // mallopt(M_TRIM_THRESHOLD, -1) at load time, so freed memory is never returned to the system and peak
  // memory stays at the largest transient (a staging copy of a data matrix): restore glibc's defaults.
  restore_allocator_defaults();
  PetscBool petsc = PETSC_FALSE, slepc = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscInitialized(&petsc));
  if (!petsc) return begin_everything();
  BILEVEL_PETSC_CALL(SlepcInitialized(&slepc));
  if (slepc) return;
  BILEVEL_PETSC_CALL(SlepcInitializeNoArguments());
  g_began_slepc = true;
  BILEVEL_PETSC_CALL(PetscRegisterFinalize(finalize_slepc));
}

Session::Session(int* argc, char*** argv, const char* help) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // PETSc's own default level; PETSc then leaves MPI_Finalize to us
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw ::bilevel::Error("MPI_Init_thread failed");
    own_mpi_ = true;
  }
  // libsuperlu_dist (CombBLAS), loaded with PETSc, sets mallopt(M_MMAP_MAX, 0) and
  // mallopt(M_TRIM_THRESHOLD, -1) at load time, so freed memory is never returned to the system and peak
  // memory stays at the largest transient (a staging copy of a data matrix): restore glibc's defaults.
  restore_allocator_defaults();
  screen_options_files(argc, argv);
  BILEVEL_PETSC_CALL(SlepcInitialize(argc, argv, nullptr, help));
  initialize_package();
  limit_blas_threads();
  // PETSc errors become C++ exceptions whose message we print once; no tracebacks for user mistakes.
  BILEVEL_PETSC_CALL(PetscPushErrorHandler(PetscReturnErrorHandler, nullptr));
}

Session::~Session() {
  (void)PetscPopErrorHandler();
  (void)SlepcFinalize();
  if (own_mpi_) MPI_Finalize();
}

const std::optional<std::string>& Session::startup_error() {
  return pending_startup_error();
}

}  // namespace bilevel::petsc
