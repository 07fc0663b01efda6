// A PETSc program that initialises PETSc itself, as PETSc programs do, and embeds the library
// (docs/library.md). It creates no bilevel::petsc::Session: the first BilevelSolver starts SLEPc (which
// the library needs and the program did not start), and the program's PetscFinalize ends it again.
//
//   lower:  g(x, y) = 1/2 yᵀ A y − xᵀ y,  A = diag(a), a_i = 1 + (i mod 4)   ⇒  y*(x) = A⁻¹ x
//   upper:  f(x, y) = 1/2 ||y − 1||² + r/2 ||x||²,  r = 0.1                 ⇒  x*_i = a_i / (1 + r a_i²)
// No Lipschitz constant is given, so the method estimates L = max a_i = 4 with SLEPc before its first step.
//
// Run: mpirun -np 2 ./petsc_initialize [-bilevel_monitor] [-log_view]
#include <petscsys.h>

#include <bilevel/bilevel.hpp>
#include <string>

static const char help[] = "Bilevel in a program that calls PetscInitialize.\n";

namespace {

constexpr PetscInt kDim = 40;
constexpr PetscReal kReg = 0.1;

PetscReal curvature(PetscInt i) {
  return 1.0 + static_cast<PetscReal>(i % 4);
}  // a_i

/// v_i = value(i) on this rank's entries.
void fill(Vec v, PetscReal (*value)(PetscInt)) {
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  bilevel::petsc::WriteView w(v);
  for (PetscInt i = lo; i < hi; ++i) w[i - lo] = value(i);
}

/// The whole library part of the program; every PETSc object it makes is destroyed when it returns.
int solve(MPI_Comm comm) {
  bilevel::petsc::VecHandle a, work;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm, PETSC_DECIDE, kDim, a.out()));
  work = bilevel::petsc::duplicate(a);
  fill(a, curvature);

  bilevel::ProblemCallbacks cb;
  cb.lower_grad_y = [&](Vec x, Vec y, Vec gy) {  // ∇_y g = A y − x
    BILEVEL_PETSC_CALL(VecPointwiseMult(gy, a, y));
    BILEVEL_PETSC_CALL(VecAXPY(gy, -1.0, x));
  };
  cb.lower_hvp = [&](Vec, Vec, Vec w, Vec out) { BILEVEL_PETSC_CALL(VecPointwiseMult(out, a, w)); };  // A w
  cb.lower_jvp = [&](Vec, Vec, Vec w, Vec out) {  // ∇_x <∇_y g, w> = −w
    BILEVEL_PETSC_CALL(VecCopy(w, out));
    BILEVEL_PETSC_CALL(VecScale(out, -1.0));
  };
  cb.upper_grad = [&](Vec x, Vec y, Vec gx, Vec gy) {
    if (gx) BILEVEL_PETSC_CALL(VecAXPBY(gx, kReg, 0.0, x));  // ∇_x f = r x
    if (gy) {                                                // ∇_y f = y − 1
      BILEVEL_PETSC_CALL(VecCopy(y, gy));
      BILEVEL_PETSC_CALL(VecShift(gy, -1.0));
    }
  };
  cb.upper_value = [&](Vec x, Vec y) {
    PetscReal ny = 0, nx = 0;
    BILEVEL_PETSC_CALL(VecCopy(y, work));
    BILEVEL_PETSC_CALL(VecShift(work, -1.0));
    BILEVEL_PETSC_CALL(VecNorm(work, NORM_2, &ny));
    BILEVEL_PETSC_CALL(VecNorm(x, NORM_2, &nx));
    return 0.5 * ny * ny + 0.5 * kReg * nx * nx;
  };
  auto problem = std::make_shared<bilevel::CallbackProblem>(comm, kDim, kDim, cb, "diagonal");
  bilevel::ProblemHints hints;
  hints.max_iterations = 300;  // default of -bilevel_max_it for this problem (the option wins)
  problem->set_hints(hints);

  bilevel::BilevelSolver solver(comm);  // starts SLEPc if the program did not
  solver.set_problem(problem);
  solver.set_from_options();
  auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
  problem->initial_point(x, y);
  const bilevel::SolveReport r = solver.solve(x, y);

  fill(work, [](PetscInt i) { return curvature(i) / (1.0 + kReg * curvature(i) * curvature(i)); });  // x*
  BILEVEL_PETSC_CALL(VecAXPY(work, -1.0, x));
  PetscReal err = 0;
  BILEVEL_PETSC_CALL(VecNorm(work, NORM_INFINITY, &err));
  BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                 "petsc_initialize: %s after %d iterations, max |x - x*| = %.3e\n",
                                 std::string(bilevel::to_string(r.reason)).c_str(),
                                 static_cast<int>(r.outer_iterations),
                                 err));
  return err < 1e-3 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  PetscCall(PetscInitialize(&argc, &argv, nullptr, help));
  const int status = bilevel::guarded_main("petsc_initialize", [] { return solve(PETSC_COMM_WORLD); });
  PetscCall(PetscFinalize());
  return status;
}
