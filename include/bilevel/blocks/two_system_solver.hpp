#pragma once
/// \file Two linear systems with one lower Hessian (NBO, algorithms.md §2.2): H v_i = b_i, i = 0, 1,
/// H = ∇²_yy g(x, y; B). Every iteration applies H to the current vectors of both systems with ONE
/// BilevelProblem::lower_hvp_multi call, i.e. one pass over the data for two products.
#include <petscvec.h>

#include <array>
#include <functional>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// Collective on the problem's communicator (every method).
class TwoSystemSolver {
 public:
  /// Outcome of one solve.
  struct Report {
    PetscInt iterations = 0;  ///< gradient steps or CG iterations taken (the longer of the two systems)
    PetscInt passes = 0;      ///< lower_hvp_multi calls (passes over the data)
    /// Residual norms ||H v_i − b_i||: CG: the recursively updated residual at exit; gradient steps: the
    /// residual computed by the last step (at the iterate before that step's update).
    std::array<PetscReal, 2> residual{-1, -1};
    PetscReal step = 0;  ///< gradient steps: the step η used at the end (after adapt_step reductions)
  };

  /// Allocates the work vectors (layout of y). With `precondition`, cg() is preconditioned CG with the
  /// problem's M ≈ H⁻¹ (Capability::LowerPreconditioner), rebuilt at (x, y) on every cg() call.
  void setup(Vec y_layout, bool precondition = false);
  bool preconditioned() const { return precondition_; }

  /// The two systems H v_i = b_i: right-hand sides, iterates (updated in place), and which iterates start
  /// at zero (set to 0 on entry, so their first product is skipped).
  struct Systems {
    std::array<Vec, 2> b;
    std::array<Vec, 2> v;
    std::array<bool, 2> zero_start{true, true};
  };

  /// Per-step hooks of gradient() for variance-reduced products (NSBO-SAGA): `next_batch` gives the batch of
  /// each step's products (instead of `batch` or the sampler) and `correct(i, q)` may replace the product
  /// q = H v_i of system i in place (e.g. by a SAGA direction) before the step uses it.
  struct StepHooks {
    std::function<Batch()> next_batch;
    std::function<void(std::size_t, Vec)> correct;
  };

  /// `steps` gradient (Richardson) steps on both systems: v_i <- v_i − η (H v_i − b_i). With adapt_step, η is
  /// lowered to 1/ρ whenever a Rayleigh quotient ρ = v_iᵀHv_i / v_iᵀv_i of the current iterates exceeds 1/η
  /// (one extra reduction per step); Report::step is the final η. With a sampler and batch_size > 0 every
  /// step draws a fresh training batch of that size (the stochastic NSBO-SGD); otherwise `batch` is used for
  /// every product.
  Report gradient(BilevelProblem& problem,
                  Vec x,
                  Vec y,
                  const Batch& batch,
                  const Systems& systems,
                  PetscInt steps,
                  PetscReal eta,
                  bool adapt_step = false,
                  BatchSampler* sampler = nullptr,
                  PetscInt batch_size = 0,
                  const StepHooks* hooks = nullptr);

  /// Conjugate gradients on both systems in lockstep, at most max_it iterations; system i stops when
  /// ||r_i|| <= rtol ||b_i|| or when it meets non-positive curvature pᵀHp <= 0 (its iterate is kept).
  /// The two systems' dot products share one reduction per CG phase. Preconditioned (setup): z_i = M r_i,
  /// ρ_i = r_iᵀ z_i, p_i <- z_i + β p_i; the stopping test stays on the unpreconditioned ||r_i||.
  Report cg(BilevelProblem& problem,
            Vec x,
            Vec y,
            const Batch& batch,
            const Systems& systems,
            PetscInt max_it,
            PetscReal rtol);

 private:
  /// out_i = H in_i for the systems with active[i], in one lower_hvp_multi call.
  void products(BilevelProblem& problem,
                Vec x,
                Vec y,
                const Batch& batch,
                const std::array<Vec, 2>& in,
                const std::array<bool, 2>& active,
                Report& report);

  std::array<bool, 2> start(const Systems& systems);

  bool precondition_ = false;
  std::array<petsc::VecHandle, 2> r_, p_, q_, z_;
};

}  // namespace bilevel
