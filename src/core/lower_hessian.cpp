#include "bilevel/core/lower_hessian.hpp"

#include <slepceps.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/callback.hpp"
#include "bilevel/petsc/compat.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {
namespace {

// MatMult of the shell: out = H(x, y; batch) w.
PetscErrorCode hessian_mult(Mat H, Vec w, Vec out) {
  HessianShell::Context* ctx = nullptr;
  PetscCall(MatShellGetContext(H, &ctx));
  return petsc::guarded(ctx->pending, [&] { ctx->problem->lower_hvp(ctx->x, ctx->y, ctx->batch, w, out); });
}

// PCApply of the shell preconditioner: out = M r (the problem's M ≈ H⁻¹ at the point of the last set_point)
// on a full-batch operator; out = r (plain CG) on a minibatch one (HessianShell::set_point says why).
PetscErrorCode problem_pc_apply(PC pc, Vec r, Vec out) {
  HessianShell::Context* ctx = nullptr;
  PetscCall(PCShellGetContext(pc, &ctx));
  if (!ctx->apply_m) return VecCopy(r, out);
  return petsc::guarded(ctx->pending, [&] { ctx->problem->lower_precondition(r, out); });
}

}  // namespace

bool HessianShell::attach_preconditioner(KSP ksp) {
  PC pc = nullptr;
  BILEVEL_PETSC_CALL(KSPGetPC(ksp, &pc));
  if (!has(ctx_->problem->capabilities(), Capability::LowerPreconditioner)) {
    BILEVEL_PETSC_CALL(PCSetType(pc, PCNONE));
    return false;
  }
  BILEVEL_PETSC_CALL(PCSetType(pc, PCSHELL));
  BILEVEL_PETSC_CALL(PCShellSetContext(pc, ctx_.get()));
  BILEVEL_PETSC_CALL(PCShellSetApply(pc, problem_pc_apply));
  BILEVEL_PETSC_CALL(PCShellSetName(pc, "problem M ~ inverse lower Hessian"));
  // tolerances and reported residuals keep their meaning: ||b − H v||, not ||M (b − H v)||
  BILEVEL_PETSC_CALL(KSPSetNormType(ksp, KSP_NORM_UNPRECONDITIONED));
  ctx_->precondition = true;
  return true;
}

HessianShell::HessianShell(BilevelProblem& problem, Vec y_layout) : ctx_(std::make_unique<Context>()) {
  ctx_->problem = &problem;
  PetscInt n = 0, N = 0;
  BILEVEL_PETSC_CALL(VecGetLocalSize(y_layout, &n));
  BILEVEL_PETSC_CALL(VecGetSize(y_layout, &N));
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(y_layout));
  BILEVEL_PETSC_CALL(MatCreateShell(comm, n, n, N, N, ctx_.get(), mat_.out()));
  BILEVEL_PETSC_CALL(MatShellSetOperation(mat_, MATOP_MULT, reinterpret_cast<void (*)(void)>(hessian_mult)));
  BILEVEL_PETSC_CALL(MatSetOption(mat_, MAT_SYMMETRIC, PETSC_TRUE));
  BILEVEL_PETSC_CALL(MatSetOption(mat_, MAT_SPD, PETSC_TRUE));
}

void HessianShell::set_point(Vec x, Vec y, const Batch& batch) {
  ctx_->x = x;
  ctx_->y = y;
  if (batch.full) {
    ctx_->batch = Batch::all();
  } else {
    ctx_->indices.assign(batch.indices.begin(), batch.indices.end());
    ctx_->batch = Batch::of(ctx_->indices);
  }
  // The problem's M approximates the inverse of the full-batch Hessian. A minibatch Hessian H_B misses the
  // curvature of the features and rows outside B (down to e^{x_j} on ijcnn1 per-feature logreg), and PCG with
  // M resolves those near-null directions that a few plain CG steps leave alone: with batches of 64 to 256
  // rows the warm-started PCG solves diverged (docs/benchmarks.md, "Preconditioned solves on minibatches").
  ctx_->apply_m = ctx_->precondition && ctx_->batch.full;
  if (ctx_->apply_m) ctx_->problem->lower_preconditioner_setup(x, y);
}

petsc::KspHandle make_hessian_ksp(
    HessianShell& shell, const std::string& prefix, PetscReal rtol, PetscInt max_it, bool warm_start) {
  petsc::KspHandle ksp;
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(shell.mat()));
  BILEVEL_PETSC_CALL(KSPCreate(comm, ksp.out()));
  BILEVEL_PETSC_CALL(KSPSetType(ksp, KSPCG));
  BILEVEL_PETSC_CALL(KSPSetOperators(ksp, shell.mat(), shell.mat()));
  shell.attach_preconditioner(ksp);  // PCG with the problem's M ≈ H⁻¹ if it has one, else plain CG
  if (warm_start) BILEVEL_PETSC_CALL(KSPSetInitialGuessNonzero(ksp, PETSC_TRUE));
  BILEVEL_PETSC_CALL(KSPSetTolerances(ksp, rtol, 1e-300, PETSC_DEFAULT, max_it));
  BILEVEL_PETSC_CALL(KSPSetOptionsPrefix(ksp, petsc::prefixed(prefix).c_str()));  // the solver's prefix first
  BILEVEL_PETSC_CALL(KSPSetFromOptions(ksp));
  return ksp;
}

namespace {

/// EPS monitor that keeps the current first Ritz value (the approximation closest to the wanted end of the
/// spectrum, converged or not): when no eigenpair meets the tolerance, EPSGetEigenvalue has nothing to
/// return, and the last Ritz value is the estimate.
PetscErrorCode keep_first_ritz(
    EPS, PetscInt, PetscInt, PetscScalar* eigr, PetscScalar*, PetscReal*, PetscInt nest, void* ctx) {
  if (nest > 0) *static_cast<PetscScalar*>(ctx) = eigr[0];
  return PETSC_SUCCESS;
}

/// One extreme eigenvalue of H(x, y) by SLEPc; `converged` tells whether it met rtol (else the value is the
/// last Ritz value: for the smallest eigenvalue it lies above λ_min, for the largest below λ_max; NaN when
/// SLEPc produced none). Collective.
PetscScalar extreme_eigenvalue(BilevelProblem& problem,
                               Vec x,
                               Vec y,
                               PetscReal rtol,
                               EPSWhich which,
                               PetscInt ncv,
                               PetscInt max_it,
                               bool* converged) {
  HessianShell shell(problem, y);
  shell.set_point(x, y, Batch::all());
  petsc::EpsHandle eps;
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(y));
  BILEVEL_PETSC_CALL(EPSCreate(comm, eps.out()));
  BILEVEL_PETSC_CALL(EPSSetOperators(eps, shell.mat(), nullptr));
  BILEVEL_PETSC_CALL(EPSSetProblemType(eps, EPS_HEP));
  BILEVEL_PETSC_CALL(EPSSetWhichEigenpairs(eps, which));
  BILEVEL_PETSC_CALL(EPSSetDimensions(eps, 1, ncv, PETSC_DEFAULT));
  BILEVEL_PETSC_CALL(EPSSetTolerances(eps, rtol, max_it));
  BILEVEL_PETSC_CALL(EPSSetOptionsPrefix(eps, petsc::prefixed("bilevel_eig_").c_str()));
  BILEVEL_PETSC_CALL(EPSSetFromOptions(eps));
  PetscScalar ritz = std::nan("");
  BILEVEL_PETSC_CALL(EPSMonitorSet(eps, keep_first_ritz, &ritz, nullptr));
  BILEVEL_PETSC_CALL_GUARDED(shell.pending(), EPSSolve(eps));
  PetscInt nconv = 0;
  BILEVEL_PETSC_CALL(EPSGetConverged(eps, &nconv));
  *converged = nconv > 0;
  if (!*converged) return ritz;  // NaN if SLEPc never got to a Ritz value: the callers' checks reject it
  PetscScalar lambda = 0, im = 0;
  BILEVEL_PETSC_CALL(EPSGetEigenvalue(eps, 0, &lambda, &im));
  return lambda;
}

}  // namespace

PetscReal estimate_lower_strong_convexity(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol) {
  bool converged = false;
  PetscScalar lambda = extreme_eigenvalue(problem, x, y, rtol, EPS_SMALLEST_REAL, 16, 300, &converged);
  if (!converged) lambda *= 0.5;  // a Ritz value above λ_min
  if (!(lambda > 0))
    throw Error("lower Hessian is not positive definite: smallest eigenvalue estimate " +
                std::to_string(lambda));
  return lambda;
}

PetscReal estimate_lower_lipschitz(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol) {
  bool converged = false;
  PetscScalar lambda = extreme_eigenvalue(problem, x, y, rtol, EPS_LARGEST_REAL, 8, 100, &converged);
  // Not converged to rtol: the largest Ritz value is still a usable estimate of L from below; pad it.
  if (!converged) lambda *= 1.1;
  if (!(lambda > 0))
    throw Error("lower Hessian is not positive definite: largest eigenvalue estimate " +
                std::to_string(lambda));
  return lambda;
}

namespace {
// λ_max(M H(x, y; batch)) by power steps with the problem's M as it is set up now (the caller built it at
// (x, y)); see estimate_preconditioned_lipschitz. Collective.
PetscReal preconditioned_power_steps(
    BilevelProblem& problem, Vec x, Vec y, PetscInt iterations, const Batch& batch) {
  petsc::VecHandle v = petsc::duplicate(y), hv = petsc::duplicate(y);
  {
    PetscInt lo = 0, hi = 0;
    BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
    petsc::WriteView w(v);
    for (PetscInt i = lo; i < hi; ++i) w[i - lo] = std::cos(1.0 + static_cast<PetscReal>(i));
  }
  PetscReal norm = 0, lambda = 0;
  BILEVEL_PETSC_CALL(VecNormalize(v, &norm));
  for (PetscInt k = 0; k < iterations; ++k) {
    problem.lower_hvp(x, y, batch, v, hv);         // H v
    problem.lower_precondition(hv, v);             // v <- M H v
    BILEVEL_PETSC_CALL(VecNormalize(v, &lambda));  // ||M H v|| for ||v|| = 1
  }
  if (!(lambda > 0) || !std::isfinite(lambda))
    throw Error("preconditioned lower Hessian M H has no positive dominant eigenvalue: estimate " +
                std::to_string(lambda));
  return 1.1 * lambda;
}
}  // namespace

PetscReal estimate_preconditioned_lipschitz(
    BilevelProblem& problem, Vec x, Vec y, PetscInt iterations, PreconditionerKind kind, const Batch& batch) {
  problem.lower_preconditioner_setup(x, y, kind);
  return preconditioned_power_steps(problem, x, y, iterations, batch);
}

PetscReal estimate_preconditioned_lipschitz_minibatch(BilevelProblem& problem,
                                                      Vec x,
                                                      Vec y,
                                                      PetscInt batch_size,
                                                      std::uint64_t seed,
                                                      PetscInt samples,
                                                      PreconditionerKind kind,
                                                      bool minibatch_only) {
  const PetscInt n = problem.dataset_sizes().lower;
  const bool full = batch_size <= 0 || batch_size >= n;
  PetscReal lipschitz =
      full || !minibatch_only ? estimate_preconditioned_lipschitz(problem, x, y, 20, kind) : 0;
  if (full) return lipschitz;
  // one M at (x, y) for every sample (built above unless minibatch_only)
  if (minibatch_only && samples > 0) problem.lower_preconditioner_setup(x, y, kind);
  BatchSampler sampler(seed, SamplerStream::Hessian);
  for (PetscInt s = 0; s < samples; ++s)
    lipschitz =
        std::max(lipschitz, preconditioned_power_steps(problem, x, y, 20, sampler.draw(n, batch_size)));
  return lipschitz;
}

bool full_lower_batch(BilevelProblem& problem, PetscInt batch_size) {
  return batch_size <= 0 || !has(problem.capabilities(), Capability::Stochastic) ||
         batch_size >= problem.dataset_sizes().lower;
}

bool draws_minibatches(BilevelProblem& problem, PetscInt lower_batch, PetscInt upper_batch) {
  if (!has(problem.capabilities(), Capability::Stochastic)) return false;
  const DatasetSizes n = problem.dataset_sizes();
  return (lower_batch > 0 && lower_batch < n.lower) || (upper_batch > 0 && upper_batch < n.upper);
}

bool preconditioned_steps_by_default(BilevelProblem& problem, PetscInt batch_size) {
  if (!has(problem.capabilities(), Capability::LowerPreconditioner)) return false;
  return full_lower_batch(problem, batch_size) || batch_size >= kMinPreconditionedBatch;
}

bool resolve_preconditioned_steps(BilevelProblem& problem, PetscInt batch_size, std::optional<bool> given) {
  return given.value_or(preconditioned_steps_by_default(problem, batch_size)) &&
         has(problem.capabilities(), Capability::LowerPreconditioner);
}

std::optional<PetscReal> renewed_preconditioned_lipschitz(BilevelProblem& problem,
                                                          Vec x,
                                                          Vec y,
                                                          PetscInt batch_size,
                                                          std::uint64_t seed,
                                                          std::int64_t iteration,
                                                          std::int64_t period) {
  if (iteration <= 0 || period <= 0 || iteration % period != 0) return std::nullopt;
  return estimate_preconditioned_lipschitz_minibatch(problem,
                                                     x,
                                                     y,
                                                     batch_size,
                                                     seed + static_cast<std::uint64_t>(iteration),
                                                     3,
                                                     PreconditionerKind::Cheap,
                                                     /*minibatch_only=*/true);
}

}  // namespace bilevel
