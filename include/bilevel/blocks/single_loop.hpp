#pragma once
/// \file The single-loop iteration of SOBA, MA-SOBA and SABA (Dagreou, Ablin, Vaiter & Moreau 2022;
/// algorithms.md §3.6): y, v and x move together, every direction computed at the old point (x_k, y_k, v_k).
///
///   ξ_k an inner (training) batch shared by the three lower oracles, ζ_k an outer (validation) batch:
///   D_y = ∇_y g(x, y; ξ),   D_v = H(x, y; ξ) v − ∇_y f(x, y; ζ),   D_x = ∇_x f(x, y; ζ) − J(x, y; ξ) v
///   y <- y − ρ_k D_y,   v <- v − ρ_k D_v,   x <- P(x − γ_k d_k) by the upper stepper,
/// with d_k = D_x (SOBA) or the moving average d_k = (1 − θ) d_{k−1} + θ D_x (MA-SOBA, Chen, Xu & Zhang
/// 2023). With SAGA (SABA) each of the five oracle outputs goes through a SagaTable: ξ and ζ are then fixed
/// minibatches ("slots") drawn uniformly, and every oracle o is replaced by o − m_i + m̄ (blocks/saga.hpp).
/// Our sign convention: v ≈ +H⁻¹∇_y f and the hypergradient is ∇_x f − J v (benchopt stores z = −v).
#include <petscvec.h>
#include <petscviewer.h>

#include <cstdint>
#include <string>

#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/saga.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// Settings of one SingleLoopStep.
struct SingleLoopSettings {
  ImplicitBatches batches;  ///< inner and outer minibatch sizes (0 = full)
  bool saga = false;        ///< SAGA tables on the five oracles (SABA)
  bool average = false;     ///< moving average of D_x (MA-SOBA)
  /// Largest SAGA memory (bytes, summed over ranks) setup accepts; beyond it an InputError names `option`.
  std::int64_t max_saga_bytes = 0;
  std::string option;  ///< the option that sets max_saga_bytes (for the error)
};

/// Collective on the problem's communicator.
class SingleLoopStep {
 public:
  /// Allocates v (0), the work vectors, the average d (0) and, with saga, the five tables (inner slots of
  /// batches.lower training samples, outer slots of batches.upper validation samples).
  void setup(BilevelProblem& problem, std::uint64_t seed, const SingleLoopSettings& settings);
  /// One iteration with steps ρ on y and v, θ of the average (ignored without average) and `x_scale`, a
  /// factor on the direction handed to the upper stepper (the decay of γ_k relative to the stepper's step).
  /// Returns ||D_x|| (the hypergradient estimate), ||D_y|| as lower residual and ||D_v|| as linear residual.
  StepResult run(AlgorithmContext& ctx, PetscReal rho, PetscReal theta, PetscReal x_scale);
  Vec v() const { return v_; }
  /// SAGA memory in bytes over all ranks (0 without saga), slots of the inner and outer tables and the
  /// slots filled so far (of the ∇_y g table and of the ∇f table). Not collective.
  std::int64_t saga_bytes() const { return bytes_; }
  PetscInt inner_slots() const { return inner_.slots(); }
  PetscInt outer_slots() const { return outer_.slots(); }
  PetscInt inner_filled() const { return settings_.saga ? gy_table_.filled() : 0; }
  PetscInt outer_filled() const { return settings_.saga ? fy_table_.filled() : 0; }
  /// Registers v, the average, the samplers and the SAGA tables. Not collective.
  void declare_state(StateRegistry& state, const std::string& prefix);
  /// One line: batches and the SAGA memory. Collective on the viewer.
  void view(PetscViewer viewer) const;

 private:
  SingleLoopSettings settings_;
  StepSamplers samplers_;
  SagaSlots inner_, outer_;
  SagaTable gy_table_, hv_table_, jv_table_, fy_table_, fx_table_;
  std::int64_t bytes_ = 0;
  petsc::VecHandle v_, gy_, hv_, fy_, fx_, jv_, d_;
};

}  // namespace bilevel
