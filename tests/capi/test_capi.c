/* The C interface's error contract (include/bilevel/bilevel.h): every failure is a PETSc error code carrying
 * the library's message, never a C++ exception; a callback's error ends the solve with that code; prefixes
 * and the monitor's destroy function work as in Tao. Prints "test_capi: ok" on rank 0 and exits 0, else
 * prints "test_capi: FAILED: ..." and exits 1. */
#include <bilevel/bilevel.h>
#include <petscsys.h>
#include <string.h>

static char g_message[1024]; /* the last error message PETSc's handler saw */

static PetscErrorCode Record(MPI_Comm comm,
                             int line,
                             const char* fun,
                             const char* file,
                             PetscErrorCode n,
                             PetscErrorType p,
                             const char* mess,
                             void* ctx) {
  (void)comm, (void)line, (void)fun, (void)file, (void)p, (void)ctx;
  if (p == PETSC_ERROR_INITIAL && mess) strncpy(g_message, mess, sizeof g_message - 1);
  return n;
}

static PetscErrorCode Identity(Vec x, Vec y, const BilevelBatch* b, Vec w, Vec out, void* ctx) {
  (void)x, (void)y, (void)b, (void)ctx;
  return VecCopy(w, out);
}
static PetscErrorCode MinusIdentity(Vec x, Vec y, const BilevelBatch* b, Vec w, Vec out, void* ctx) {
  PetscFunctionBeginUser;
  (void)x, (void)y, (void)b, (void)ctx;
  PetscCall(VecCopy(w, out));
  PetscCall(VecScale(out, -1.0));
  PetscFunctionReturn(0);
}
static PetscErrorCode GradY(Vec x, Vec y, const BilevelBatch* b, Vec gy, void* ctx) /* g = 1/2|y|² − xᵀy */
{
  (void)b, (void)ctx;
  return VecWAXPY(gy, -1.0, x, y);
}
static PetscErrorCode UpperGrad(
    Vec x, Vec y, const BilevelBatch* b, Vec gx, Vec gy, void* ctx) /* f = 1/2|y − 1|² */
{
  PetscFunctionBeginUser;
  (void)x, (void)b, (void)ctx;
  if (gx) PetscCall(VecSet(gx, 0.0));
  if (gy) {
    PetscCall(VecCopy(y, gy));
    PetscCall(VecShift(gy, -1.0));
  }
  PetscFunctionReturn(0);
}
static int g_grad_calls = 0;
static PetscErrorCode FailingGradY(Vec x, Vec y, const BilevelBatch* b, Vec gy, void* ctx) {
  (void)x, (void)y, (void)b, (void)gy, (void)ctx;
  if (++g_grad_calls == 3) SETERRQ(PETSC_COMM_SELF, PETSC_ERR_USER, "planted failure in lower_grad_y");
  return VecWAXPY(gy, -1.0, x, y);
}
static int g_destroyed = 0;
static PetscErrorCode Monitor(Bilevel b, PetscInt it, PetscReal f, PetscReal h, void* ctx) {
  (void)b, (void)f, (void)h;
  *(PetscInt*)ctx = it;
  return 0;
}
static PetscErrorCode DestroyCtx(void** ctx) {
  (void)ctx;
  ++g_destroyed;
  return 0;
}

#define EXPECT(cond, what)                                            \
  do {                                                                \
    if (!(cond)) {                                                    \
      PetscPrintf(PETSC_COMM_WORLD, "test_capi: FAILED: %s\n", what); \
      failures++;                                                     \
    }                                                                 \
  } while (0)

int main(int argc, char** argv) {
  Bilevel b = NULL;
  BilevelCallbacks cb = {0};
  BilevelConvergedReason reason = BILEVEL_ITERATING;
  PetscErrorCode ierr;
  PetscInt seen = 0, its = 0;
  PetscReal f = 0;
  const char* type;
  int failures = 0;

  PetscCall(PetscInitialize(&argc, &argv, NULL, NULL));
  PetscCall(PetscPushErrorHandler(Record, NULL));

  /* a missing required callback: an error naming it, at BilevelSetProblemCallbacks */
  PetscCall(BilevelCreate(PETSC_COMM_WORLD, &b));
  cb.upper_grad = UpperGrad;
  cb.lower_grad_y = GradY;
  cb.lower_hvp = Identity;
  ierr = BilevelSetProblemCallbacks(b, 5, 5, &cb, NULL);
  EXPECT(ierr != 0 && strstr(g_message, "lower_jvp"), "a missing lower_jvp is an error naming it");

  /* an unknown method: the registry's message, listing the methods */
  cb.lower_jvp = MinusIdentity;
  PetscCall(BilevelSetProblemCallbacks(b, 5, 5, &cb, NULL));
  ierr = BilevelSetType(b, "nosuchmethod");
  EXPECT(ierr != 0 && strstr(g_message, "nosuchmethod") && strstr(g_message, "aidcg"),
         "an unknown type lists the methods");

  /* a prefix and PETSc's boolean spellings: -c_bilevel_type qnbo, -c_bilevel_final_lower_solve FALSE */
  PetscCall(PetscOptionsSetValue(NULL, "-c_bilevel_type", "qnbo"));
  PetscCall(PetscOptionsSetValue(NULL, "-c_bilevel_max_it", "7"));
  PetscCall(PetscOptionsSetValue(NULL, "-c_bilevel_final_lower_solve", "FALSE"));
  PetscCall(PetscOptionsSetValue(NULL, "-c_bilevel_monitor_test", "Yes"));
  PetscCall(BilevelSetOptionsPrefix(b, "c_"));
  PetscCall(BilevelSetHints(b, 1.0, 0.0, 0));
  PetscCall(BilevelMonitorSet(b, Monitor, &seen, DestroyCtx));
  PetscCall(BilevelSetFromOptions(b));
  PetscCall(BilevelGetType(b, &type));
  EXPECT(strcmp(type, "qnbo") == 0, "-c_bilevel_type qnbo is read through the prefix");
  PetscCall(BilevelSolve(b));
  PetscCall(BilevelGetConvergedReason(b, &reason));
  PetscCall(BilevelGetIterationNumber(b, &its));
  PetscCall(BilevelGetObjective(b, &f));
  EXPECT(reason == BILEVEL_CONVERGED_MAX_IT && its == 7, "-c_bilevel_max_it 7 stops at 7 iterations");
  EXPECT(seen == 7, "the monitor saw the 7th iteration");
  EXPECT(PetscIsNanReal(f), "no upper_value: the objective is NaN, and the solve did not fail");
  PetscCall(BilevelMonitorCancel(b));
  EXPECT(g_destroyed == 1, "BilevelMonitorCancel called the context's destroy function once");

  /* a method that needs an oracle the problem lacks: named before the solve, with the methods that do not */
  PetscCall(BilevelSetType(b, "bome"));
  PetscCall(PetscOptionsClearValue(NULL, "-c_bilevel_type"));
  PetscCall(BilevelSetFromOptions(b));
  ierr = BilevelSolve(b);
  EXPECT(ierr != 0 && strstr(g_message, "lower_grad_x") && strstr(g_message, "aidcg"),
         "bome without lower_grad_x: an error naming the oracle and the methods that do not need it");
  PetscCall(BilevelDestroy(&b));
  EXPECT(b == NULL, "BilevelDestroy sets the handle to NULL");

  /* a callback's error ends the solve with its code and message */
  PetscCall(BilevelCreate(PETSC_COMM_WORLD, &b));
  cb.lower_grad_y = FailingGradY;
  PetscCall(BilevelSetProblemCallbacks(b, 5, 5, &cb, NULL));
  PetscCall(BilevelSetType(b, "aidcg"));
  PetscCall(BilevelSetFromOptions(b));
  g_message[0] = 0;
  ierr = BilevelSolve(b);
  EXPECT(ierr == PETSC_ERR_USER && strstr(g_message, "planted failure"),
         "a callback's error is the solve's error");
  PetscCall(BilevelDestroy(&b));

  PetscCall(PetscPopErrorHandler());
  if (!failures) PetscCall(PetscPrintf(PETSC_COMM_WORLD, "test_capi: ok\n"));
  PetscCall(PetscFinalize());
  return failures ? 1 : 0;
}
