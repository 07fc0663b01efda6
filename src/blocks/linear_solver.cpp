#include "bilevel/blocks/linear_solver.hpp"

#include "bilevel/petsc/callback.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

CgLinearSolver::CgLinearSolver(BilevelProblem& problem, Vec y_layout, PetscInt max_it, PetscReal rtol)
    : shell_(problem, y_layout), ksp_(make_hessian_ksp(shell_, "bilevel_hyper_", rtol, max_it, /*warm_start=*/true)) {}

PetscInt CgLinearSolver::solve(Vec x, Vec y, const Batch& batch, Vec b, Vec v) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  PetscReal bnorm = 0;
  BILEVEL_PETSC_CALL(VecNorm(b, NORM_2, &bnorm));
  if (bnorm == 0) {  // H v = 0 has v = 0; KSP's relative test would otherwise run to max_it
    BILEVEL_PETSC_CALL(VecSet(v, 0.0));
    residual_ = 0;
    return 0;
  }
  shell_.set_point(x, y, batch);
  BILEVEL_PETSC_CALL_GUARDED(shell_.pending(), KSPSolve(ksp_, b, v));  // v <- H⁻¹ b (CG, warm start)
  PetscInt its = 0;
  BILEVEL_PETSC_CALL(KSPGetIterationNumber(ksp_, &its));
  BILEVEL_PETSC_CALL(KSPGetResidualNorm(ksp_, &residual_));
  KSPConvergedReason reason;
  BILEVEL_PETSC_CALL(KSPGetConvergedReason(ksp_, &reason));
  if (reason < 0 && reason != KSP_DIVERGED_ITS) {
    throw Error("CG on the lower Hessian failed: " + std::string(KSPConvergedReasons[reason]) +
                " (is the lower level strongly convex?)");
  }
  return its;
}

void NeumannSolver::setup(Vec y_layout) {
  p_ = petsc::duplicate(y_layout);
  hp_ = petsc::duplicate(y_layout);
}

void NeumannSolver::solve(BilevelProblem& problem, Vec x, Vec y, Vec b, Vec v, PetscInt q_steps, PetscReal eta,
                          BatchSampler* sampler, PetscInt batch_size) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  if (!p_) setup(y);
  const PetscInt n = problem.dataset_sizes().lower;
  BILEVEL_PETSC_CALL(VecCopy(b, p_));  // p_0 = b
  BILEVEL_PETSC_CALL(VecCopy(b, v));   // v = Σ p_q
  for (PetscInt q = 0; q < q_steps; ++q) {
    const Batch batch = (sampler && batch_size > 0 && n > 0) ? sampler->next(n, batch_size) : Batch::all();
    problem.lower_hvp(x, y, batch, p_, hp_);      // H(B_q) p_q
    BILEVEL_PETSC_CALL(VecAXPY(p_, -eta, hp_));   // p_{q+1} = p_q - eta H p_q
    BILEVEL_PETSC_CALL(VecAXPY(v, 1.0, p_));
  }
  BILEVEL_PETSC_CALL(VecScale(v, eta));  // v = eta Σ_{q=0}^{Q} p_q ≈ H⁻¹ b
}

}  // namespace bilevel
