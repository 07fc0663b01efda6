#include "bilevel/blocks/lower_solver.hpp"

#include <petscksp.h>

#include <algorithm>
#include <cmath>

#include "bilevel/blocks/hessian_shell.hpp"
#include "bilevel/petsc/callback.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

void GradientSteps::setup(Vec y_layout) { g_ = petsc::duplicate(y_layout); }

PetscReal GradientSteps::run(BilevelProblem& problem, Vec x, Vec y, PetscInt steps, PetscReal eta,
                             BatchSampler* sampler, PetscInt batch_size) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  if (!g_) setup(y);
  const PetscInt n = problem.dataset_sizes().lower;
  PetscReal norm = -1;
  for (PetscInt t = 0; t < steps; ++t) {
    const Batch batch = (sampler && batch_size > 0 && n > 0) ? sampler->next(n, batch_size) : Batch::all();
    problem.lower_grad_y(x, y, batch, g_);        // g = ∇_y g(x, y; B_t)
    BILEVEL_PETSC_CALL(VecNorm(g_, NORM_2, &norm));
    BILEVEL_PETSC_CALL(VecAXPY(y, -eta, g_));     // y <- y - eta g
  }
  return norm;
}

void NewtonSteps::setup(BilevelProblem& problem, Vec y_layout) {
  shell_ = std::make_unique<HessianShell>(problem, y_layout);
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(y_layout));
  BILEVEL_PETSC_CALL(KSPCreate(comm, ksp_.out()));
  BILEVEL_PETSC_CALL(KSPSetType(ksp_, KSPCG));
  BILEVEL_PETSC_CALL(KSPSetOperators(ksp_, shell_->mat(), shell_->mat()));
  shell_->attach_preconditioner(ksp_);  // the problem's M ≈ H⁻¹ if it has one (PCG), else plain CG
  BILEVEL_PETSC_CALL(KSPSetOptionsPrefix(ksp_, "bilevel_inner_"));
  BILEVEL_PETSC_CALL(KSPSetFromOptions(ksp_));
  g_ = petsc::duplicate(y_layout);
  d_ = petsc::duplicate(y_layout);
}

PetscReal NewtonSteps::run(BilevelProblem& problem, Vec x, Vec y, PetscInt steps, PetscInt cg_its,
                           const Batch& batch) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  if (!shell_) setup(problem, y);
  PetscReal norm = -1;
  iterations_ = 0;
  for (PetscInt t = 0; t < steps; ++t) {
    problem.lower_grad_y(x, y, batch, g_);  // g = ∇_y g(x, y)
    BILEVEL_PETSC_CALL(VecNorm(g_, NORM_2, &norm));
    if (norm == 0 || !std::isfinite(norm)) break;
    shell_->set_point(x, y, batch);
    BILEVEL_PETSC_CALL(KSPSetTolerances(ksp_, 1e-6, 1e-300, PETSC_DEFAULT, cg_its));
    BILEVEL_PETSC_CALL(VecSet(d_, 0.0));
    BILEVEL_PETSC_CALL_GUARDED(shell_->pending(), KSPSolve(ksp_, g_, d_));  // d ≈ H⁻¹ g (truncated CG)
    PetscInt its = 0;
    BILEVEL_PETSC_CALL(KSPGetIterationNumber(ksp_, &its));
    iterations_ += its;
    BILEVEL_PETSC_CALL(VecAXPY(y, -1.0, d_));  // y <- y − d
  }
  return norm;
}

PetscReal solve_lower_accurately(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol, PetscInt max_newton) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  HessianShell shell(problem, y);
  petsc::KspHandle ksp;
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(y));
  BILEVEL_PETSC_CALL(KSPCreate(comm, ksp.out()));
  BILEVEL_PETSC_CALL(KSPSetType(ksp, KSPCG));
  BILEVEL_PETSC_CALL(KSPSetOperators(ksp, shell.mat(), shell.mat()));
  shell.attach_preconditioner(ksp);
  BILEVEL_PETSC_CALL(KSPSetOptionsPrefix(ksp, "bilevel_final_"));
  BILEVEL_PETSC_CALL(KSPSetFromOptions(ksp));
  petsc::VecHandle g = petsc::duplicate(y), d = petsc::duplicate(y), trial = petsc::duplicate(y);
  const bool has_value = has(problem.capabilities(), Capability::LowerValue);
  PetscReal g0 = -1, norm = 0;
  for (PetscInt it = 0; it <= max_newton; ++it) {
    problem.lower_grad_y(x, y, Batch::all(), g);
    BILEVEL_PETSC_CALL(VecNorm(g, NORM_2, &norm));
    if (g0 < 0) g0 = norm;
    if (!std::isfinite(norm) || norm <= rtol * std::max<PetscReal>(1, g0) || it == max_newton) break;
    // Newton step d ~ H⁻¹ ∇_y g with a forcing term min(0.5, sqrt(|g|/g0)) (Eisenstat-Walker flavour).
    const PetscReal forcing = std::min<PetscReal>(0.5, std::sqrt(norm / std::max<PetscReal>(g0, 1e-300)));
    BILEVEL_PETSC_CALL(KSPSetTolerances(ksp, forcing, 1e-300, PETSC_DEFAULT, 200));
    shell.set_point(x, y, Batch::all());
    BILEVEL_PETSC_CALL(VecSet(d, 0.0));
    BILEVEL_PETSC_CALL_GUARDED(shell.pending(), KSPSolve(ksp, g, d));
    if (!has_value) {
      BILEVEL_PETSC_CALL(VecAXPY(y, -1.0, d));  // y <- y - d
      continue;
    }
    // Backtracking on g(x, ·) keeps Newton safe far from the solution.
    const PetscReal f0 = problem.lower_value(x, y, Batch::all());
    PetscReal gd = 0;
    BILEVEL_PETSC_CALL(VecDot(g, d, &gd));
    PetscReal t = 1;
    for (int ls = 0; ls < 30; ++ls, t *= 0.5) {
      BILEVEL_PETSC_CALL(VecWAXPY(trial, -t, d, y));
      const PetscReal ft = problem.lower_value(x, trial, Batch::all());
      if (std::isfinite(ft) && ft <= f0 - 1e-4 * t * gd) break;
    }
    BILEVEL_PETSC_CALL(VecCopy(trial, y));
  }
  return norm;
}

}  // namespace bilevel
