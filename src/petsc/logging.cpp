#include "bilevel/petsc/logging.hpp"

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/session.hpp"

namespace bilevel::petsc {
namespace {

Events g_events;
bool g_registered = false;

/// Registered with PetscRegisterFinalize: the classid and events die with PETSc.
PetscErrorCode finalize_package() {
  g_events = Events{};
  g_registered = false;
  return 0;
}

}  // namespace

void initialize_package() {
  if (g_registered) return;
  ensure_initialized();
  PetscClassId classid = 0;
  BILEVEL_PETSC_CALL(PetscClassIdRegister("Bilevel", &classid));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelLoadData", classid, &g_events.load_data));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelInnerSolve", classid, &g_events.lower_solve));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelHyperGrad", classid, &g_events.hypergradient));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelOuterStep", classid, &g_events.outer_step));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelOracleGrad", classid, &g_events.oracle_grad));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelOracleHVP", classid, &g_events.oracle_hvp));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelOracleJVP", classid, &g_events.oracle_jvp));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelEvaluate", classid, &g_events.evaluate));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelPrecond", classid, &g_events.precondition));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelCommGather", classid, &g_events.comm_gather));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelCommReduce", classid, &g_events.comm_reduce));
  BILEVEL_PETSC_CALL(PetscLogEventRegister("BilevelCommCoord", classid, &g_events.comm_coordinator));
  BILEVEL_PETSC_CALL(PetscRegisterFinalize(finalize_package));
  g_registered = true;
}

const Events& events() {
  if (!g_registered) initialize_package();
  return g_events;
}

}  // namespace bilevel::petsc
