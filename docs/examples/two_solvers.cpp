// Two solvers in one program, each with its own options prefix (docs/library.md, "Options prefixes"):
// solver a reads -a_bilevel_*, solver b reads -b_bilevel_*, as two PETSc KSPs with prefixes a_ and b_ do.
//
//   lower:  g(x, y) = 1/2 yᵀ A y − xᵀ y,  A = diag(a), a_i = 1 + (i mod 4)   ⇒  y*(x) = A⁻¹ x
//   upper:  f(x, y) = 1/2 ||y − 1||² + r/2 ||x||²,  r = 0.1                 ⇒  x*_i = a_i / (1 + r a_i²)
//
// Run:   mpirun -np 2 ./two_solvers -a_bilevel_type aidcg -b_bilevel_type qnbo -a_bilevel_view -b_bilevel_view
// With no options, solver a runs aidcg and solver b runs qnbo (the types set in code are the defaults that
// the options override) and each prints its view.
#include <petscsys.h>

#include <bilevel/bilevel.hpp>
#include <string>

static const char help[] = "Two bilevel solvers with the options prefixes a_ and b_.\n";

namespace {

constexpr PetscInt kDim = 40;
constexpr PetscReal kReg = 0.1;

PetscReal curvature(PetscInt i) { return 1.0 + static_cast<PetscReal>(i % 4); }  // a_i

void fill(Vec v, PetscReal (*value)(PetscInt)) {
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  bilevel::petsc::WriteView w(v);
  for (PetscInt i = lo; i < hi; ++i) w[i - lo] = value(i);
}

/// The problem's oracles; `a` holds the diagonal of A.
std::shared_ptr<bilevel::CallbackProblem> diagonal_problem(MPI_Comm comm, Vec a) {
  bilevel::ProblemCallbacks cb;
  cb.lower_grad_y = [a](Vec x, Vec y, const bilevel::Batch&, Vec gy) {  // ∇_y g = A y − x
    BILEVEL_PETSC_CALL(VecPointwiseMult(gy, a, y));
    BILEVEL_PETSC_CALL(VecAXPY(gy, -1.0, x));
  };
  cb.lower_hvp = [a](Vec, Vec, const bilevel::Batch&, Vec w, Vec out) {  // A w
    BILEVEL_PETSC_CALL(VecPointwiseMult(out, a, w));
  };
  cb.lower_jvp = [](Vec, Vec, const bilevel::Batch&, Vec w, Vec out) {  // ∇_x <∇_y g, w> = −w
    BILEVEL_PETSC_CALL(VecCopy(w, out));
    BILEVEL_PETSC_CALL(VecScale(out, -1.0));
  };
  cb.upper_grad = [](Vec x, Vec y, const bilevel::Batch&, Vec gx, Vec gy) {
    if (gx) BILEVEL_PETSC_CALL(VecAXPBY(gx, kReg, 0.0, x));  // ∇_x f = r x
    if (gy) {                                                // ∇_y f = y − 1
      BILEVEL_PETSC_CALL(VecCopy(y, gy));
      BILEVEL_PETSC_CALL(VecShift(gy, -1.0));
    }
  };
  auto problem = std::make_shared<bilevel::CallbackProblem>(comm, kDim, kDim, cb, "diagonal");
  bilevel::ProblemHints hints;
  hints.lower_lipschitz = 4.0;  // max a_i
  hints.max_iterations = 300;   // default of -a_bilevel_max_it and -b_bilevel_max_it
  problem->set_hints(hints);
  return problem;
}

/// Solves with `solver` from the problem's initial point; returns max |x − x*|. Collective.
PetscReal solve_and_check(bilevel::BilevelSolver& solver, bilevel::BilevelProblem& problem) {
  auto x = problem.create_upper_vec(), y = problem.create_lower_vec();
  problem.initial_point(x, y);
  const bilevel::SolveReport r = solver.solve(x, y);
  auto err = bilevel::petsc::duplicate(x);
  fill(err, [](PetscInt i) { return curvature(i) / (1.0 + kReg * curvature(i) * curvature(i)); });  // x*
  BILEVEL_PETSC_CALL(VecAXPY(err, -1.0, x));
  PetscReal e = 0;
  BILEVEL_PETSC_CALL(VecNorm(err, NORM_INFINITY, &e));
  BILEVEL_PETSC_CALL(PetscPrintf(problem.comm(), "two_solvers: solver %s ran %s: %s after %lld iterations, max |x - x*| = %.3e\n",
                                 solver.options_prefix().c_str(), solver.type().c_str(),
                                 std::string(bilevel::to_string(r.reason)).c_str(),
                                 static_cast<long long>(r.outer_iterations), e));
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  PetscCall(PetscInitialize(&argc, &argv, nullptr, help));
  const int status = bilevel::guarded_main("two_solvers", [] {
    MPI_Comm comm = PETSC_COMM_WORLD;
    bilevel::petsc::VecHandle a;
    BILEVEL_PETSC_CALL(VecCreateMPI(comm, PETSC_DECIDE, kDim, a.out()));
    fill(a, curvature);
    auto problem = diagonal_problem(comm, a);

    bilevel::BilevelSolver solver_a(comm), solver_b(comm);
    solver_a.set_options_prefix("a_");  // reads -a_bilevel_type, -a_bilevel_view, -a_bilevel_hyper_ksp_rtol, ...
    solver_b.set_options_prefix("b_");
    solver_a.set_type("aidcg");         // defaults in code; -a_bilevel_type and -b_bilevel_type override them
    solver_b.set_type("qnbo");
    for (bilevel::BilevelSolver* s : {&solver_a, &solver_b}) {
      s->set_problem(problem);
      s->set_from_options();
    }
    const PetscReal ea = solve_and_check(solver_a, *problem);
    const PetscReal eb = solve_and_check(solver_b, *problem);
    PetscBool viewed = PETSC_FALSE;  // with no options, show both views here
    BILEVEL_PETSC_CALL(PetscOptionsHasName(nullptr, "a_", "-bilevel_view", &viewed));
    if (!viewed) {
      solver_a.view();
      solver_b.view();
    }
    return ea < 1e-3 && eb < 1e-3 ? 0 : 3;
  });
  PetscCall(PetscFinalize());
  return status;
}
