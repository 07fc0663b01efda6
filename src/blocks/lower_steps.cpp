#include "bilevel/blocks/lower_steps.hpp"

#include <petscksp.h>

#include <algorithm>
#include <cmath>

#include "bilevel/core/lower_hessian.hpp"
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

void NewtonSteps::setup(BilevelProblem& problem, Vec y_layout, PetscInt cg_its) {
  shell_ = std::make_unique<HessianShell>(problem, y_layout);
  ksp_ = make_hessian_ksp(*shell_, "bilevel_inner_", 1e-6, cg_its);
  g_ = petsc::duplicate(y_layout);
  d_ = petsc::duplicate(y_layout);
}

PetscReal NewtonSteps::run(BilevelProblem& problem, Vec x, Vec y, PetscInt steps, const Batch& batch) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  if (!shell_) throw Error("NewtonSteps::run: call setup first");
  PetscReal norm = -1;
  iterations_ = 0;
  for (PetscInt t = 0; t < steps; ++t) {
    problem.lower_grad_y(x, y, batch, g_);  // g = ∇_y g(x, y)
    BILEVEL_PETSC_CALL(VecNorm(g_, NORM_2, &norm));
    if (norm == 0 || !std::isfinite(norm)) break;
    shell_->set_point(x, y, batch);
    BILEVEL_PETSC_CALL(VecSet(d_, 0.0));
    BILEVEL_PETSC_CALL_GUARDED(shell_->pending(), KSPSolve(ksp_, g_, d_));  // d ≈ H⁻¹ g (truncated CG)
    PetscInt its = 0;
    BILEVEL_PETSC_CALL(KSPGetIterationNumber(ksp_, &its));
    iterations_ += its;
    BILEVEL_PETSC_CALL(VecAXPY(y, -1.0, d_));  // y <- y − d
  }
  return norm;
}

}  // namespace bilevel
