#pragma once
/// \file Lower-level steps shared by the methods: gradient steps and truncated Newton steps on g(x, ·), and
/// the Lipschitz constant L of ∇_y g that sets their default step 1/L.
#include <petscvec.h>
#include <petscviewer.h>

#include <memory>

#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// L of ∇_y g(x, ·): the problem's hint (ProblemHints::lower_lipschitz) when it gives one, else the largest
/// eigenvalue of H(x, y) estimated by SLEPc (estimate_lower_lipschitz). Collective.
PetscReal resolve_lower_lipschitz(BilevelProblem& problem, Vec x, Vec y);

/// T steps of (stochastic) gradient descent on y: y <- y - eta ∇_y g(x, y; B_t), B_t a fresh batch of
/// `batch_size` training samples per step (0 = full batch); with `precondition`, y <- y − eta M ∇_y g with
/// the problem's M of its last lower_preconditioner_setup (the caller's). Work vectors allocated once.
/// Collective.
class GradientSteps {
 public:
  GradientSteps() = default;
  void setup(Vec y_layout);
  /// Runs `steps` steps; returns ||∇_y g|| of the last gradient evaluated (at the point before the last
  /// step), or -1 for no step. A non-finite ||∇_y g|| ends the steps and is returned.
  PetscReal run(BilevelProblem& problem,
                Vec x,
                Vec y,
                PetscInt steps,
                PetscReal eta,
                BatchSampler* sampler,
                PetscInt batch_size,
                bool precondition = false);

 private:
  petsc::VecHandle g_, mg_;
};

/// Inexact Newton steps on y: y <- y − d with d ≈ H(x, y)⁻¹ ∇_y g(x, y) from a truncated CG (HessianKsp,
/// prefix -bilevel_inner_, allocated once), all on the same batch. A cheap lower-level update for
/// ill-conditioned problems where gradient steps of size 1/L crawl. A failed CG is a
/// NumericalFailure(DIVERGED_INNER_SOLVE). Collective.
class NewtonSteps {
 public:
  NewtonSteps() = default;
  /// `cg_its` and rtol 1e-6 are the method's defaults of -bilevel_inner_ksp_max_it and
  /// -bilevel_inner_ksp_rtol (the user's values win).
  void setup(BilevelProblem& problem, Vec y_layout, PetscInt cg_its);
  /// Runs `steps` Newton steps; returns ||∇_y g|| at the point before the last step.
  PetscReal run(BilevelProblem& problem, Vec x, Vec y, PetscInt steps, const Batch& batch);
  /// CG iterations used by the last run.
  PetscInt last_iterations() const { return iterations_; }
  /// What the KSP really uses (HessianKsp::view); nothing before setup. Collective on the viewer.
  void view(PetscViewer viewer) const;

 private:
  std::unique_ptr<HessianKsp> ksp_;
  petsc::VecHandle g_, d_;
  PetscInt iterations_ = 0;
};

}  // namespace bilevel
