#include "bilevel/blocks/linear_solver.hpp"

#include <cmath>
#include <utility>

#include "bilevel/petsc/callback.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

HessianKsp::HessianKsp(BilevelProblem& problem,
                       Vec y_layout,
                       std::string prefix,
                       PetscReal rtol,
                       PetscInt max_it,
                       bool warm_start,
                       ConvergedReason on_failure)
    : prefix_(std::move(prefix)),
      on_failure_(on_failure),
      shell_(problem, y_layout),
      ksp_(make_hessian_ksp(shell_, prefix_, rtol, max_it, warm_start)) {}

HessianKsp::Result HessianKsp::solve(
    Vec x, Vec y, const Batch& batch, Vec b, Vec v, std::optional<PetscReal> bnorm) {
  Result out;
  if (!bnorm) {
    PetscReal n = 0;
    BILEVEL_PETSC_CALL(VecNorm(b, NORM_2, &n));
    bnorm = n;
  }
  require_finite(*bnorm, ConvergedReason::DivergedNaN, "the right-hand side norm of KSP -" + prefix_);
  if (*bnorm == 0) {  // H v = 0 has v = 0; KSP's relative test would otherwise run to max_it
    BILEVEL_PETSC_CALL(VecSet(v, 0.0));
    out.residual = 0;
    return out;
  }
  shell_.set_point(x, y, batch);
  BILEVEL_PETSC_CALL_GUARDED(shell_.pending(), KSPSolve(ksp_, b, v));  // v <- H⁻¹ b
  BILEVEL_PETSC_CALL(KSPGetIterationNumber(ksp_, &out.iterations));
  BILEVEL_PETSC_CALL(KSPGetResidualNorm(ksp_, &out.residual));
  KSPConvergedReason reason;
  BILEVEL_PETSC_CALL(KSPGetConvergedReason(ksp_, &reason));  // the same on every rank
  if (reason < 0 && reason != KSP_DIVERGED_ITS) {
    std::string hint = "is the lower level strongly convex at this point?";
    if (reason == KSP_DIVERGED_DTOL)
      hint = "the residual grew past -" + prefix_ +
             "ksp_divtol times ||b||: H or the warm start changed too much";
    else if (reason == KSP_DIVERGED_NANORINF)
      hint = "a NaN or Inf in a Hessian product or the right-hand side";
    throw NumericalFailure(on_failure_,
                           "KSP -" + prefix_ +
                               " on the lower Hessian: " + std::string(KSPConvergedReasons[reason]) +
                               " after " + std::to_string(out.iterations) + " iterations (" + hint + ")");
  }
  return out;
}

void HessianKsp::view(PetscViewer viewer, const char* what) const {
  KSPType type = nullptr;
  PCType pc = nullptr;
  PC p = nullptr;
  PetscReal rtol = 0, abstol = 0, dtol = 0;
  PetscInt max_it = 0;
  PetscBool guess = PETSC_FALSE;
  BILEVEL_PETSC_CALL(KSPGetType(ksp_, &type));
  BILEVEL_PETSC_CALL(KSPGetPC(ksp_, &p));
  BILEVEL_PETSC_CALL(PCGetType(p, &pc));
  BILEVEL_PETSC_CALL(KSPGetTolerances(ksp_, &rtol, &abstol, &dtol, &max_it));
  BILEVEL_PETSC_CALL(KSPGetInitialGuessNonzero(ksp_, &guess));
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
      viewer,
      "%s: KSP %s, PC %s (options -%sksp_*, -%spc_*): rtol %g, max_it %d, initial guess %s\n",
      what,
      type ? type : "?",
      pc ? pc : "none",
      prefix_.c_str(),
      prefix_.c_str(),
      static_cast<double>(rtol),
      static_cast<int>(max_it),
      guess ? "the previous solution" : "zero"));
}

CgLinearSolver::CgLinearSolver(BilevelProblem& problem, Vec y_layout, PetscInt max_it, PetscReal rtol)
    : ksp_(problem,
           y_layout,
           "bilevel_hyper_",
           rtol,
           max_it,
           /*warm_start=*/true,
           ConvergedReason::DivergedLinearSolve) {}

PetscInt CgLinearSolver::solve(Vec x, Vec y, const Batch& batch, Vec b, Vec v) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  const HessianKsp::Result r = ksp_.solve(x, y, batch, b, v);  // v <- H⁻¹ b (CG, warm start)
  residual_ = r.residual;
  return r.iterations;
}

void NeumannSolver::setup(Vec y_layout) {
  p_ = petsc::duplicate(y_layout);
  hp_ = petsc::duplicate(y_layout);
  mhp_ = petsc::duplicate(y_layout);
}

void NeumannSolver::solve(BilevelProblem& problem,
                          Vec x,
                          Vec y,
                          Vec b,
                          Vec v,
                          PetscInt q_steps,
                          PetscReal eta,
                          BatchSampler* sampler,
                          PetscInt batch_size,
                          bool precondition) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  if (!p_) setup(y);
  const PetscInt n = problem.dataset_sizes().lower;
  if (precondition) {
    problem.lower_precondition(b, p_);  // p_0 = M b
  } else {
    BILEVEL_PETSC_CALL(VecCopy(b, p_));  // p_0 = b
  }
  BILEVEL_PETSC_CALL(VecCopy(p_, v));  // v = Σ p_q
  for (PetscInt q = 0; q < q_steps; ++q) {
    const Batch batch = sampler ? sampler->draw(n, batch_size) : Batch::all();
    problem.lower_hvp(x, y, batch, p_, hp_);  // H(B_q) p_q
    if (precondition) {
      problem.lower_precondition(hp_, mhp_);        // M H(B_q) p_q
      BILEVEL_PETSC_CALL(VecAXPY(p_, -eta, mhp_));  // p_{q+1} = p_q - eta M H p_q
    } else {
      BILEVEL_PETSC_CALL(VecAXPY(p_, -eta, hp_));  // p_{q+1} = p_q - eta H p_q
    }
    BILEVEL_PETSC_CALL(VecAXPY(v, 1.0, p_));
  }
  BILEVEL_PETSC_CALL(VecScale(v, eta));  // v = eta Σ_{q=0}^{Q} p_q ≈ H⁻¹ b
}

}  // namespace bilevel
