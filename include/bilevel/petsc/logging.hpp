#pragma once
/// \file PETSc log events for the library's phases, so -log_view breaks time down by them.
#include <petsclog.h>

namespace bilevel::petsc {

/// The events, registered once by initialize_package().
struct Events {
  PetscLogEvent load_data = 0;      ///< BilevelLoadData
  PetscLogEvent lower_solve = 0;    ///< BilevelInnerSolve
  PetscLogEvent hypergradient = 0;  ///< BilevelHyperGrad (linear system + JVP)
  PetscLogEvent outer_step = 0;     ///< BilevelOuterStep (upper-level step on the coordinator)
  PetscLogEvent oracle_grad = 0;    ///< BilevelOracleGrad (grad_f, grad_g)
  PetscLogEvent oracle_hvp = 0;     ///< BilevelOracleHVP
  PetscLogEvent oracle_jvp = 0;     ///< BilevelOracleJVP
  PetscLogEvent evaluate = 0;       ///< BilevelEvaluate (monitors, test metrics)
  PetscLogEvent precondition = 0;   ///< BilevelPrecond (setup and application of the problem's M ≈ H⁻¹)
  PetscLogEvent comm_gather = 0;    ///< BilevelCommGather (model and directions to the ranks; comm_counter)
  PetscLogEvent comm_reduce = 0;    ///< BilevelCommReduce (sums of per-rank results)
  PetscLogEvent comm_coordinator = 0;  ///< BilevelCommCoord (to and from the coordinator)
};
const Events& events();

/// Begin in the constructor, end in the destructor. Not collective.
class ScopedEvent {
 public:
  explicit ScopedEvent(PetscLogEvent e) : e_(e) { (void)PetscLogEventBegin(e_, 0, 0, 0, 0); }
  ScopedEvent(const ScopedEvent&) = delete;
  ScopedEvent& operator=(const ScopedEvent&) = delete;
  ~ScopedEvent() { (void)PetscLogEventEnd(e_, 0, 0, 0, 0); }

 private:
  PetscLogEvent e_;
};

}  // namespace bilevel::petsc
