// A user-defined bilevel problem embedded in a PETSc program (docs/user-problem.md).
//
//   lower:  g(x, y) = 1/2 ||y − c||² + 1/2 Σ_i e^{x_i} y_i²      ⇒  y*_i = c_i / (1 + e^{x_i})
//   upper:  f(x, y) = 1/2 ||y − t||²
// so F(x) is minimised where y*(x) = t, i.e. x_i = log(c_i / t_i − 1) when c_i > t_i > 0.
//
// Build against an installed copy: see docs/library.md (docs/examples/CMakeLists.txt, build-with-pkg-config.sh).
// Run:   mpirun -np 2 ./user_problem [-bilevel_monitor -bilevel_monitor_every 50]
#include <bilevel/bilevel.hpp>

#include <cmath>
#include <cstdio>

namespace {

constexpr PetscInt kDim = 50;

// c_i = 3 + sin(i), t_i = 1: the optimum is x_i = log(2 + sin(i)).
void fill(Vec v, double (*value)(PetscInt)) {
  PetscInt lo = 0, hi = 0;
  VecGetOwnershipRange(v, &lo, &hi);
  bilevel::petsc::WriteView a(v);
  for (PetscInt i = lo; i < hi; ++i) a[i - lo] = value(i);
}

}  // namespace

int main(int argc, char** argv) {
  bilevel::petsc::Session session(&argc, &argv, "user-defined bilevel problem\n");
  return bilevel::guarded_main("user_problem", [] {
    MPI_Comm comm = PETSC_COMM_WORLD;
    bilevel::petsc::VecHandle c, t, ex;
    BILEVEL_PETSC_CALL(VecCreateMPI(comm, PETSC_DECIDE, kDim, c.out()));
    t = bilevel::petsc::duplicate(c);
    ex = bilevel::petsc::duplicate(c);
    fill(c, [](PetscInt i) { return 3.0 + std::sin(static_cast<double>(i)); });
    fill(t, [](PetscInt) { return 1.0; });

    bilevel::ProblemCallbacks cb;
    cb.upper_grad = [&](Vec, Vec y, Vec gx, Vec gy) {
      if (gx) VecSet(gx, 0.0);               // ∇_x f = 0
      if (gy) VecWAXPY(gy, -1.0, t, y);       // ∇_y f = y − t
    };
    cb.upper_value = [&](Vec, Vec y) {
      VecWAXPY(ex, -1.0, t, y);
      PetscReal n = 0;
      VecNorm(ex, NORM_2, &n);
      return 0.5 * n * n;
    };
    cb.lower_grad_y = [&](Vec x, Vec y, Vec gy) {
      VecCopy(x, ex);
      VecExp(ex);                             // e^x
      VecPointwiseMult(gy, ex, y);            // e^x ∘ y
      VecAXPY(gy, 1.0, y);
      VecAXPY(gy, -1.0, c);                   // ∇_y g = y − c + e^x ∘ y
    };
    cb.lower_hvp = [&](Vec x, Vec, Vec w, Vec out) {
      VecCopy(x, ex);
      VecExp(ex);
      VecPointwiseMult(out, ex, w);
      VecAXPY(out, 1.0, w);                   // H w = (1 + e^x) ∘ w
    };
    cb.lower_jvp = [&](Vec x, Vec y, Vec w, Vec out) {
      VecCopy(x, ex);
      VecExp(ex);
      VecPointwiseMult(out, ex, y);
      VecPointwiseMult(out, out, w);          // J w = e^x ∘ y ∘ w
    };
    auto problem = std::make_shared<bilevel::CallbackProblem>(comm, kDim, kDim, cb, "user");
    bilevel::ProblemHints hints;
    hints.upper_stepper = bilevel::UpperStepperType::Adam;
    hints.upper_step = 0.05;
    hints.lower_update = "newton";  // e^x grows with x: a fixed step 1/L from the start would diverge
    hints.max_iterations = 400;     // default of -bilevel_max_it for this problem (the option wins)
    problem->set_hints(hints);

    bilevel::BilevelSolver solver(comm);
    solver.set_problem(problem);
    solver.set_from_options();
    auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
    problem->initial_point(x, y);
    const bilevel::SolveReport r = solver.solve(x, y);

    // Distance to the known optimum x_i = log(2 + sin i).
    fill(ex, [](PetscInt i) { return std::log(2.0 + std::sin(static_cast<double>(i))); });
    VecAXPY(ex, -1.0, x);
    PetscReal err = 0;
    VecNorm(ex, NORM_INFINITY, &err);
    PetscPrintf(comm, "user_problem: %s after %d iterations, f = %.3e, max |x - x*| = %.3e\n",
                std::string(bilevel::to_string(r.reason)).c_str(), static_cast<int>(r.outer_iterations),
                r.upper_objective, err);
    return err < 1e-3 ? 0 : 3;
  });
}
