#include "bilevel/blocks/lower_steps.hpp"

#include <cmath>

#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

PetscReal resolve_lower_lipschitz(BilevelProblem& problem, Vec x, Vec y) {
  const ProblemHints h = problem.hints();
  return h.lower_lipschitz ? *h.lower_lipschitz : estimate_lower_lipschitz(problem, x, y);
}

void GradientSteps::setup(Vec y_layout) {
  g_ = petsc::duplicate(y_layout);
  mg_ = petsc::duplicate(y_layout);
}

PetscReal GradientSteps::run(BilevelProblem& problem,
                             Vec x,
                             Vec y,
                             PetscInt steps,
                             PetscReal eta,
                             BatchSampler* sampler,
                             PetscInt batch_size,
                             bool precondition) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  if (!g_) setup(y);
  const PetscInt n = problem.dataset_sizes().lower;
  PetscReal norm = -1;
  for (PetscInt t = 0; t < steps; ++t) {
    const Batch batch = sampler ? sampler->draw(n, batch_size) : Batch::all();
    problem.lower_grad_y(x, y, batch, g_);  // g = ∇_y g(x, y; B_t)
    BILEVEL_PETSC_CALL(VecNorm(g_, NORM_2, &norm));
    if (!std::isfinite(norm)) break;  // diverged: the caller decides (the same on every rank)
    if (precondition) {
      problem.lower_precondition(g_, mg_);        // M g
      BILEVEL_PETSC_CALL(VecAXPY(y, -eta, mg_));  // y <- y - eta M g
    } else {
      BILEVEL_PETSC_CALL(VecAXPY(y, -eta, g_));  // y <- y - eta g
    }
  }
  return norm;
}

void NewtonSteps::setup(BilevelProblem& problem, Vec y_layout, PetscInt cg_its) {
  ksp_ = std::make_unique<HessianKsp>(problem,
                                      y_layout,
                                      "bilevel_inner_",
                                      1e-6,
                                      cg_its,
                                      /*warm_start=*/false,
                                      ConvergedReason::DivergedInnerSolve);
  g_ = petsc::duplicate(y_layout);
  d_ = petsc::duplicate(y_layout);
}

PetscReal NewtonSteps::run(BilevelProblem& problem, Vec x, Vec y, PetscInt steps, const Batch& batch) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  if (!ksp_) throw Error("NewtonSteps::run: call setup first");
  PetscReal norm = -1;
  iterations_ = 0;
  for (PetscInt t = 0; t < steps; ++t) {
    problem.lower_grad_y(x, y, batch, g_);  // g = ∇_y g(x, y)
    BILEVEL_PETSC_CALL(VecNorm(g_, NORM_2, &norm));
    if (norm == 0 || !std::isfinite(norm)) break;
    iterations_ += ksp_->solve(x, y, batch, g_, d_, norm).iterations;  // d ≈ H⁻¹ g (truncated CG from 0)
    BILEVEL_PETSC_CALL(VecAXPY(y, -1.0, d_));                          // y <- y − d
  }
  return norm;
}

void NewtonSteps::view(PetscViewer viewer) const {
  if (ksp_) ksp_->view(viewer, "Newton steps on y");
}

}  // namespace bilevel
