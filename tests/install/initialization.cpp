// Who initialises PETSc and SLEPc: the library works whether the program called PetscInitialize,
// SlepcInitialize or a bilevel::petsc::Session, and finalises only what it began (issue 12, item 2).
//
//   initialization petsc        PetscInitialize: the first solver starts SLEPc, PetscFinalize ends it
//   initialization petsc-twice  MPI_Init by the program, then PetscInitialize/solve/PetscFinalize twice
//   initialization slepc        SlepcInitialize: the library starts nothing and registers no finalizer
//   initialization user-slepc   PetscInitialize, solver, then the program's own SlepcInitialize/SlepcFinalize
//   initialization none         MPI only: the solver starts SLEPc and PETSc, the program's MPI_Finalize ends
//   them initialization nothing      no MPI either: the library starts MPI, PETSc and SLEPc and ends them at
//   exit
//
// Each mode prints "initialization <mode>: ok" on rank 0 and exits 0; any other outcome exits non-zero.
// Runs under -malloc_dump (the ctest fails on any leak report).
#include <mpi.h>
#include <slepcsys.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bilevel/bilevel.hpp"

namespace {

int g_rank = 0;  ///< this process's rank, noted while MPI is up

void note_rank() {
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
}

bool petsc_initialized() {
  PetscBool b = PETSC_FALSE;
  (void)PetscInitialized(&b);
  return b;
}
bool slepc_initialized() {
  PetscBool b = PETSC_FALSE;
  (void)SlepcInitialized(&b);
  return b;
}
bool slepc_finalized() {
  PetscBool b = PETSC_FALSE;
  (void)SlepcFinalized(&b);
  return b;
}

int fail(const char* what) {
  std::fprintf(stderr, "[rank %d] initialization: FAILED: %s\n", g_rank, what);
  return 1;
}

/// 20 iterations of the default method on the quadratic, then the largest eigenvalue of its lower Hessian
/// with SLEPc's EPS (κ = 100 by construction): 0 when both worked, else 1. Collective.
int solve_small_problem() {
  try {
    MPI_Comm comm = MPI_COMM_WORLD;
    bilevel::BilevelSolver solver(comm);  // first: it starts what the program did not
    if (!slepc_initialized()) return fail("SLEPc not initialised after the solver was created");
    auto problem = bilevel::make_problem(comm, "quadratic", bilevel::ProblemInputs{});
    solver.set_problem(problem);
    solver.options().max_iterations = 20;
    solver.set_from_options();
    auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
    problem->initial_point(x, y);
    const bilevel::SolveReport r = solver.solve(x, y);
    if (r.outer_iterations != 20) return fail("the solve did not run 20 iterations");
    if (!(r.true_hypergradient_norm.value_or(1e300) < 1.0)) return fail("||grad F|| did not come down");
    const PetscReal lipschitz = bilevel::estimate_lower_lipschitz(*problem, x, y);
    if (!(std::abs(lipschitz / 100.0 - 1.0) < 1e-2))
      return fail("EPS did not find the largest eigenvalue 100");
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

int run(const std::string& mode, int* argc, char*** argv) {
  if (mode == "petsc") {
    if (PetscInitialize(argc, argv, nullptr, nullptr)) return fail("PetscInitialize");
    note_rank();
    if (slepc_initialized()) return fail("SLEPc initialised before the library was used");
    if (solve_small_problem()) return 1;
    if (PetscFinalize()) return fail("PetscFinalize");
    if (slepc_initialized() || !slepc_finalized()) return fail("PetscFinalize did not finalise SLEPc");
    return 0;
  }
  if (mode == "petsc-twice") {  // the library's package state and SLEPc restart with PETSc
    MPI_Init(argc, argv);
    note_rank();
    for (int round = 0; round < 2; ++round) {
      if (PetscInitialize(argc, argv, nullptr, nullptr)) return fail("PetscInitialize");
      if (slepc_initialized()) return fail("SLEPc still initialised from the previous round");
      if (solve_small_problem()) return 1;
      if (PetscFinalize()) return fail("PetscFinalize");
    }
    MPI_Finalize();
    return 0;
  }
  if (mode == "slepc") {
    if (SlepcInitialize(argc, argv, nullptr, nullptr)) return fail("SlepcInitialize");
    note_rank();
    if (solve_small_problem()) return 1;
    if (SlepcFinalize()) return fail("SlepcFinalize");
    if (petsc_initialized()) return fail("SlepcFinalize left PETSc initialised");
    return 0;
  }
  if (mode == "user-slepc") {  // the program starts and ends SLEPc itself after the library did
    if (PetscInitialize(argc, argv, nullptr, nullptr)) return fail("PetscInitialize");
    note_rank();
    if (solve_small_problem()) return 1;
    if (SlepcInitialize(argc, argv, nullptr, nullptr) || SlepcFinalize())
      return fail("program's SLEPc calls");
    if (PetscFinalize()) return fail("PetscFinalize after the program's SlepcFinalize");
    return 0;
  }
  if (mode == "none") {  // the program owns MPI; PETSc is the library's from the first solver to MPI_Finalize
    MPI_Init(argc, argv);
    note_rank();
    if (petsc_initialized()) return fail("PETSc initialised before the library was used");
    if (solve_small_problem()) return 1;
    if (!petsc_initialized() || !slepc_initialized())
      return fail("PETSc/SLEPc not left running after the solve");
    MPI_Finalize();
    PetscBool ended = PETSC_FALSE;
    (void)PetscFinalized(&ended);
    if (petsc_initialized() || !ended) return fail("MPI_Finalize did not end the PETSc the library began");
    return 0;
  }
  if (mode == "nothing") {  // no MPI_Init: the library begins everything and ends it at exit
    if (solve_small_problem()) return 1;
    note_rank();
    int mpi = 0;
    MPI_Initialized(&mpi);
    if (!mpi || !petsc_initialized()) return fail("the library did not start MPI and PETSc");
    // registered after the library's atexit handler, so it runs before it: nothing is ended yet
    std::atexit([] {
      if (!petsc_initialized()) std::fprintf(stderr, "initialization: FAILED: PETSc ended before exit\n");
    });
    return 0;
  }
  return fail("unknown mode (petsc | petsc-twice | slepc | user-slepc | none | nothing)");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const int rc = run(mode, &argc, &argv);
  if (rc == 0 && g_rank == 0) std::printf("initialization %s: ok\n", mode.c_str());
  return rc;
}
