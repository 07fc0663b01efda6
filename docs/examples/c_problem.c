/* A user-defined bilevel problem from C, through the C interface <bilevel/bilevel.h> (docs/library.md, "C").
 *
 *   lower:  g(x, y) = 1/2 yᵀ A y − xᵀ y,  A = diag(a), a_i = 1 + (i mod 4)   ⇒  y*(x) = A⁻¹ x
 *   upper:  f(x, y) = 1/2 ||y − 1||² + r/2 ||x||²,  r = 0.1                 ⇒  x*_i = a_i / (1 + r a_i²)
 *
 * Run:   mpirun -np 2 ./c_problem [-bilevel_type qnbo] [-bilevel_view] [-bilevel_converged_reason]
 * Exits 0 when max |x − x*| < 1e-3. */
#include <bilevel/bilevel.h>
#include <petscsys.h>

static const char help[] = "A user-defined bilevel problem through the C interface.\n";

#define DIM 40
#define REG 0.1

typedef struct {
  Vec       a;          /* the diagonal of A */
  PetscInt  monitored;  /* iterations seen by the monitor */
} UserCtx;

static PetscErrorCode LowerGradY(Vec x, Vec y, const BilevelBatch *batch, Vec gy, void *ctx) /* A y − x */
{
  UserCtx *user = (UserCtx *)ctx;
  (void)batch;
  PetscFunctionBeginUser;
  PetscCall(VecPointwiseMult(gy, user->a, y));
  PetscCall(VecAXPY(gy, -1.0, x));
  PetscFunctionReturn(0);
}

static PetscErrorCode LowerHvp(Vec x, Vec y, const BilevelBatch *batch, Vec w, Vec out, void *ctx) /* A w */
{
  UserCtx *user = (UserCtx *)ctx;
  (void)x, (void)y, (void)batch;
  PetscFunctionBeginUser;
  PetscCall(VecPointwiseMult(out, user->a, w));
  PetscFunctionReturn(0);
}

static PetscErrorCode LowerJvp(Vec x, Vec y, const BilevelBatch *batch, Vec w, Vec out, void *ctx) /* −w */
{
  (void)x, (void)y, (void)batch, (void)ctx;
  PetscFunctionBeginUser;
  PetscCall(VecCopy(w, out));
  PetscCall(VecScale(out, -1.0));
  PetscFunctionReturn(0);
}

static PetscErrorCode UpperGrad(Vec x, Vec y, const BilevelBatch *batch, Vec gx, Vec gy, void *ctx)
{
  (void)batch, (void)ctx;
  PetscFunctionBeginUser;
  if (gx) PetscCall(VecAXPBY(gx, REG, 0.0, x)); /* ∇_x f = r x */
  if (gy) {                                       /* ∇_y f = y − 1 */
    PetscCall(VecCopy(y, gy));
    PetscCall(VecShift(gy, -1.0));
  }
  PetscFunctionReturn(0);
}

static PetscErrorCode UpperValue(Vec x, Vec y, const BilevelBatch *batch, PetscReal *f, void *ctx)
{
  Vec       d;
  PetscReal ny, nx;
  (void)batch, (void)ctx;
  PetscFunctionBeginUser;
  PetscCall(VecDuplicate(y, &d));
  PetscCall(VecCopy(y, d));
  PetscCall(VecShift(d, -1.0));
  PetscCall(VecNorm(d, NORM_2, &ny));
  PetscCall(VecNorm(x, NORM_2, &nx));
  PetscCall(VecDestroy(&d));
  *f = 0.5 * ny * ny + 0.5 * REG * nx * nx;
  PetscFunctionReturn(0);
}

static PetscErrorCode Monitor(Bilevel bilevel, PetscInt it, PetscReal f, PetscReal hnorm, void *ctx)
{
  UserCtx *user = (UserCtx *)ctx;
  (void)bilevel, (void)f, (void)hnorm;
  PetscFunctionBeginUser;
  user->monitored = it;
  PetscFunctionReturn(0);
}

int main(int argc, char **argv)
{
  Bilevel                bilevel;
  BilevelCallbacks       cb = {0};
  BilevelConvergedReason reason;
  UserCtx                user = {NULL, 0};
  Vec                    x, y, xstar;
  PetscInt               i, lo, hi, its;
  PetscReal              err, f;
  const char            *type;

  PetscCall(PetscInitialize(&argc, &argv, NULL, help));
  PetscCall(VecCreateMPI(PETSC_COMM_WORLD, PETSC_DECIDE, DIM, &user.a));
  PetscCall(VecGetOwnershipRange(user.a, &lo, &hi));
  for (i = lo; i < hi; ++i) PetscCall(VecSetValue(user.a, i, 1.0 + (PetscReal)(i % 4), INSERT_VALUES));
  PetscCall(VecAssemblyBegin(user.a));
  PetscCall(VecAssemblyEnd(user.a));

  cb.upper_grad   = UpperGrad;
  cb.lower_grad_y = LowerGradY;
  cb.lower_hvp    = LowerHvp;
  cb.lower_jvp    = LowerJvp;
  cb.upper_value  = UpperValue; /* optional; lower_value and lower_grad_x stay NULL */

  PetscCall(BilevelCreate(PETSC_COMM_WORLD, &bilevel));
  PetscCall(BilevelSetProblemCallbacks(bilevel, DIM, DIM, &cb, &user));
  PetscCall(BilevelSetHints(bilevel, 4.0, 0.0, 300)); /* L = max a_i; default step; -bilevel_max_it 300 */
  PetscCall(BilevelMonitorSet(bilevel, Monitor, &user, NULL));
  PetscCall(BilevelSetFromOptions(bilevel));
  PetscCall(BilevelSolve(bilevel));
  PetscCall(BilevelGetConvergedReason(bilevel, &reason));
  PetscCall(BilevelGetIterationNumber(bilevel, &its));
  PetscCall(BilevelGetObjective(bilevel, &f));
  PetscCall(BilevelGetType(bilevel, &type));
  PetscCall(BilevelGetSolution(bilevel, &x, &y));

  PetscCall(VecDuplicate(x, &xstar));
  PetscCall(VecGetOwnershipRange(xstar, &lo, &hi));
  for (i = lo; i < hi; ++i) {
    const PetscReal a = 1.0 + (PetscReal)(i % 4);
    PetscCall(VecSetValue(xstar, i, a / (1.0 + REG * a * a), INSERT_VALUES));
  }
  PetscCall(VecAssemblyBegin(xstar));
  PetscCall(VecAssemblyEnd(xstar));
  PetscCall(VecAXPY(xstar, -1.0, x));
  PetscCall(VecNorm(xstar, NORM_INFINITY, &err));
  PetscCall(PetscPrintf(PETSC_COMM_WORLD, "c_problem: %s, reason %d after %d iterations (monitor saw %d), f = %.6f, max |x - x*| = %.3e\n",
                        type, (int)reason, (int)its, (int)user.monitored, (double)f, (double)err));

  PetscCall(VecDestroy(&xstar));
  PetscCall(BilevelDestroy(&bilevel));
  PetscCall(VecDestroy(&user.a));
  PetscCall(PetscFinalize());
  return (reason > 0 && err < 1e-3 && user.monitored == its) ? 0 : 3;
}
