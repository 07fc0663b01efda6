#pragma once
/// \file The lower Hessian H = ∇²_yy g(x, y) at a point as a MATSHELL, so KSP, SLEPc and LMVM consume it.
#include <petscksp.h>
#include <petscmat.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// A MATSHELL whose MatMult is problem.lower_hvp(x, y, batch, ·). Exceptions thrown by the problem inside
/// KSP/EPS are parked and rethrown by the caller (BILEVEL_PETSC_CALL_GUARDED with pending()).
/// Collective on the problem's communicator.
class HessianShell {
 public:
  HessianShell(BilevelProblem& problem, Vec y_layout);
  /// Sets the point (x, y) and the batch the products use; the Vecs and the batch's indices must stay
  /// alive while the operator is used. Not collective, unless a preconditioner is attached and the batch is
  /// full: then it also rebuilds the problem's M at (x, y), which is collective. On a minibatch the attached
  /// PC applies the identity (plain CG): M approximates the full Hessian's inverse, not H_B's.
  void set_point(Vec x, Vec y, const Batch& batch);
  /// Makes `ksp`'s PC a PCSHELL applying the problem's M ≈ H⁻¹ (Capability::LowerPreconditioner), rebuilt
  /// by every later full-batch set_point (the identity on minibatches), and makes KSP test the
  /// unpreconditioned residual ||b − H v|| (so tolerances mean the same with and without M). Call before
  /// KSPSetFromOptions, so -<prefix>pc_type still overrides it. Returns false (and sets PCNONE) when the
  /// problem has no preconditioner. Not collective.
  bool attach_preconditioner(KSP ksp);
  Mat mat() const { return mat_; }
  std::exception_ptr& pending() { return ctx_->pending; }

  struct Context {
    BilevelProblem* problem = nullptr;
    Vec x = nullptr, y = nullptr;
    Batch batch;
    std::vector<PetscInt> indices;  // owned copy of a minibatch
    std::exception_ptr pending;
    bool precondition = false;  // a PC is attached: full-batch set_points rebuild the problem's M
    bool apply_m = false;       // the PC applies M (full batch) or the identity (minibatch)
  };

 private:
  std::unique_ptr<Context> ctx_;  // stable address, declared before the Mat that points to it
  petsc::MatHandle mat_;
};

/// A KSP CG on `shell`'s operator, configured the PETSc way: the caller's defaults (relative tolerance,
/// iteration budget, absolute tolerance 1e-300, warm start) go in first, then the problem's M as the PC
/// (HessianShell::attach_preconditioner), then KSPSetFromOptions under `prefix`, so the user's
/// -<prefix>ksp_* and -<prefix>pc_type always win over the defaults. Collective.
petsc::KspHandle make_hessian_ksp(
    HessianShell& shell, const std::string& prefix, PetscReal rtol, PetscInt max_it, bool warm_start = false);

/// Largest eigenvalue of H(x, y) (full batch), estimated with SLEPc's Krylov-Schur (prefix
/// -bilevel_eig_), used to set step sizes 1/L. Collective.
PetscReal estimate_lower_lipschitz(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol = 1e-3);

/// Smallest eigenvalue μ of H(x, y) (full batch) by SLEPc's Krylov-Schur (prefix -bilevel_eig_, up to 300
/// restarts), for the hypergradient error bound and for step sizes from the condition number. Ritz values
/// approach λ_min from above, so an unconverged estimate is halved. Throws Error when the estimate is not
/// positive (H not positive definite). Collective.
PetscReal estimate_lower_strong_convexity(BilevelProblem& problem, Vec x, Vec y, PetscReal rtol = 1e-4);

/// Largest eigenvalue of M H(x, y; batch) (M the problem's preconditioner built at (x, y) on the full
/// batch, Capability::LowerPreconditioner), by `iterations` steps of the power method from a fixed start
/// (v_i = cos(1 + i), i the global index, so the estimate does not depend on the rank count), padded by 10%
/// because the power method approaches it from below. M H is similar to the SPD Lᵀ H L, so the eigenvalue
/// is real and positive. Costs `iterations` HVPs on `batch`. `kind` selects the M (PreconditionerKind).
/// Collective.
PetscReal estimate_preconditioned_lipschitz(BilevelProblem& problem,
                                            Vec x,
                                            Vec y,
                                            PetscInt iterations = 20,
                                            PreconditionerKind kind = PreconditionerKind::Accurate,
                                            const Batch& batch = Batch::all());

/// The step bound of stochastic steps in M: the largest of estimate_preconditioned_lipschitz on the full
/// batch and on `samples` minibatches of `batch_size` drawn from a sampler of its own (seed, Hessian stream).
/// A minibatch Hessian can have a larger λ_max(M H_B) than the full one (a rare feature's rows, scaled by
/// n/b, against M's full-batch diagonal), and steps 1/λ_max(M H) then diverge with minibatches. With
/// batch_size 0 or >= n: the full-batch estimate; else, after the first call (`minibatch_only`), the
/// minibatches alone (their λ_max exceeds the full batch's in expectation). Costs 20 HVPs per batch and one
/// set-up of M at (x, y), which stays set up on return. Collective.
PetscReal estimate_preconditioned_lipschitz_minibatch(BilevelProblem& problem,
                                                      Vec x,
                                                      Vec y,
                                                      PetscInt batch_size,
                                                      std::uint64_t seed,
                                                      PetscInt samples = 3,
                                                      PreconditionerKind kind = PreconditionerKind::Cheap,
                                                      bool minibatch_only = false);

/// Whether a lower batch of `batch_size` rows is the whole lower data set: batch_size <= 0, at least the
/// lower set's size, or a problem without minibatches (no Capability::Stochastic). Not collective.
bool full_lower_batch(BilevelProblem& problem, PetscInt batch_size);

/// Whether a run with these lower and upper batch sizes draws minibatches at either level (the noise that
/// the decaying-step defaults average): a problem with Capability::Stochastic and a batch, at either level,
/// that is positive and smaller than that level's data set. Not collective.
bool draws_minibatches(BilevelProblem& problem, PetscInt lower_batch, PetscInt upper_batch);

/// Smallest minibatch on which constant-step SGD in the problem's M is a method's default. A step
/// 1/λ_max(M H_B) estimated on a few batches is exceeded by the rare batch whose rows carry most of a
/// feature's curvature (M is the full data's diagonal); with constant steps such batches recur and the
/// iterates blow up: on ijcnn1 with batches of 64 stocbio, itd and pzobo in M diverged in 2, 1 and 2 of 3
/// seeds, with 128 and 256 none did (docs/benchmarks.md, "Preconditioned solves on minibatches").
inline constexpr PetscInt kMinPreconditionedBatch = 128;

/// The default of -bilevel_<method>_precondition for methods whose lower steps are constant-step SGD in M
/// (stocbio, itd, pzobo): the problem has M, and the lower batch is full (batch_size <= 0 or >= the lower
/// data set) or holds at least kMinPreconditionedBatch rows. Not collective.
bool preconditioned_steps_by_default(BilevelProblem& problem, PetscInt batch_size);

/// Whether such a method steps in M: the -bilevel_<method>_precondition given (user or tuned), else (nullopt,
/// auto) preconditioned_steps_by_default; false whenever the problem has no M. Not collective.
bool resolve_preconditioned_steps(BilevelProblem& problem, PetscInt batch_size, std::optional<bool> given);

/// The renewal of such a bound while x moves the lower curvature (steps 1/λ_max(M H_B) of stocbio, ttsa, itd
/// and pzobo): at outer iteration k > 0 with k % period == 0, estimate_preconditioned_lipschitz_minibatch on
/// three fresh minibatches (seed + k, the cheap M; the full batch when batch_size is 0), else nullopt. A
/// restart at iteration k draws the same batches. When it renews, the problem's M is left set up at (x, y).
/// Collective.
std::optional<PetscReal> renewed_preconditioned_lipschitz(BilevelProblem& problem,
                                                          Vec x,
                                                          Vec y,
                                                          PetscInt batch_size,
                                                          std::uint64_t seed,
                                                          std::int64_t iteration,
                                                          std::int64_t period = 10);

}  // namespace bilevel
