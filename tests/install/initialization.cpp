// Who initialises PETSc and SLEPc: the library works whether the program called PetscInitialize,
// SlepcInitialize or a bilevel::petsc::Session, and finalises only what it began (issue 12, item 2).
//
//   initialization petsc        PetscInitialize: the first solver starts SLEPc, PetscFinalize ends it
//   initialization petsc-twice  MPI_Init by the program, then PetscInitialize/solve/PetscFinalize twice
//   initialization slepc        SlepcInitialize: the library starts nothing and registers no finalizer
//   initialization user-slepc   PetscInitialize, solver, then the program's own SlepcInitialize/SlepcFinalize
//   initialization none         MPI only: creating a solver is an error that says what to call
//
// Each mode prints "initialization <mode>: ok" on rank 0 and exits 0; any other outcome exits non-zero.
// Runs under -malloc_dump (the ctest fails on any leak report).
#include <mpi.h>
#include <slepcsys.h>

#include <cmath>
#include <cstdio>
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
  return bilevel::guarded_main("initialization", [] {
    MPI_Comm comm = PETSC_COMM_WORLD;
    auto problem = bilevel::make_problem(comm, "quadratic", bilevel::ProblemInputs{});
    bilevel::BilevelSolver solver(comm);
    if (!slepc_initialized()) return fail("SLEPc not initialised after the solver was created");
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
  });
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
  if (mode == "none") {
    MPI_Init(argc, argv);
    note_rank();
    bool thrown = false;
    try {
      bilevel::BilevelSolver solver(MPI_COMM_WORLD);
    } catch (const bilevel::Error& e) {
      thrown = std::strstr(e.what(), "call PetscInitialize or SlepcInitialize") != nullptr;
      if (!thrown) std::fprintf(stderr, "unexpected message: %s\n", e.what());
    }
    if (petsc_initialized()) return fail("the library initialised PETSc");
    MPI_Finalize();
    return thrown ? 0 : fail("no error naming PetscInitialize for a solver created before PETSc");
  }
  return fail("unknown mode (petsc | petsc-twice | slepc | user-slepc | none)");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const int rc = run(mode, &argc, &argv);
  if (rc == 0 && g_rank == 0) std::printf("initialization %s: ok\n", mode.c_str());
  return rc;
}
