/* The C interface of Bilevel, modelled on Tao's (docs/library.md, "C"): a Bilevel object with the life cycle
 *
 *   BilevelCreate -> BilevelSetOptionsPrefix -> BilevelSetProblemCallbacks -> BilevelSetFromOptions
 *   -> BilevelSolve -> BilevelGetConvergedReason / BilevelGetSolution / BilevelView -> BilevelDestroy
 *
 * Every function returns a PetscErrorCode, like PETSc's: call them with PetscCall(). An error inside the
 * library (a bad option, a failed solve, a C++ exception) becomes a PETSc error carrying the library's
 * message; no C++ exception leaves these functions. A callback that returns non-zero ends the solve with that
 * error. Usable from C (and from Fortran through ISO_C_BINDING: Bilevel is an opaque pointer, the callbacks
 * are C function pointers, the structs below are interoperable).
 *
 * The problem: min_x f(x, y*(x)) with y*(x) = argmin_y g(x, y) (docs/user-problem.md for the oracles).
 * Collective: every function on the communicator given to BilevelCreate, except the Get functions. */
#ifndef BILEVEL_BILEVEL_H
#define BILEVEL_BILEVEL_H

#include <petscvec.h>
#include <petscviewer.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The solver object. */
typedef struct _p_Bilevel* Bilevel;

/* Why BilevelSolve stopped (bilevel::ConvergedReason): > 0 converged, < 0 diverged. */
typedef enum {
  BILEVEL_ITERATING = 0,
  BILEVEL_CONVERGED_GATOL = 2,       /* hypergradient norm <= -bilevel_gatol, confirmed */
  BILEVEL_CONVERGED_MAX_TIME = 3,    /* -bilevel_max_time reached */
  BILEVEL_CONVERGED_MAX_IT = 4,      /* -bilevel_max_it reached */
  BILEVEL_DIVERGED_NAN = -1,         /* a NaN or Inf in an iterate or an estimate */
  BILEVEL_DIVERGED_INNER_SOLVE = -2, /* a lower-level or linear-system solve failed */
  BILEVEL_DIVERGED_USER = -3
} BilevelConvergedReason;

/* A minibatch: when full is PETSC_TRUE, every sample (n = 0, indices = NULL); else the n sorted global
 * sample indices, the same on every rank. An oracle returns the mean over the batch's samples. */
typedef struct {
  PetscBool full;
  PetscInt n;
  const PetscInt* indices;
} BilevelBatch;

/* The oracles, each called with the ctx given to BilevelSetProblemCallbacks; all collective. Required:
 * upper_grad, lower_grad_y, lower_hvp, lower_jvp. The others may be NULL: without upper_value the upper
 * objective is reported as NaN; lower_value and lower_grad_x enable the methods that need them (the error of
 * BilevelSolve names them). gx or gy of upper_grad may be NULL: then that part is not wanted. */
typedef struct {
  PetscErrorCode (*upper_grad)(
      Vec x, Vec y, const BilevelBatch* batch, Vec gx, Vec gy, void* ctx); /* grad_x f, grad_y f */
  PetscErrorCode (*lower_grad_y)(Vec x, Vec y, const BilevelBatch* batch, Vec gy, void* ctx); /* grad_y g */
  PetscErrorCode (*lower_hvp)(Vec x, Vec y, const BilevelBatch* batch, Vec w, Vec out, void* ctx); /* H w */
  PetscErrorCode (*lower_jvp)(Vec x, Vec y, const BilevelBatch* batch, Vec w, Vec out, void* ctx); /* J w */
  PetscErrorCode (*upper_value)(Vec x, Vec y, const BilevelBatch* batch, PetscReal* f, void* ctx); /* f */
  PetscErrorCode (*lower_value)(Vec x, Vec y, const BilevelBatch* batch, PetscReal* g, void* ctx); /* g */
  PetscErrorCode (*lower_grad_x)(Vec x, Vec y, const BilevelBatch* batch, Vec gx, void* ctx); /* grad_x g */
} BilevelCallbacks;

/* Creates a solver on comm; initialises SLEPc (and PETSc) when the program did not. */
PETSC_EXTERN PetscErrorCode BilevelCreate(MPI_Comm comm, Bilevel* bilevel);
/* Destroys it and sets *bilevel to NULL (NULL is allowed). */
PETSC_EXTERN PetscErrorCode BilevelDestroy(Bilevel* bilevel);
/* Options prefix: BilevelSetFromOptions then reads -<prefix>bilevel_* (e.g. -a_bilevel_type for "a_"). */
PETSC_EXTERN PetscErrorCode BilevelSetOptionsPrefix(Bilevel bilevel, const char prefix[]);
PETSC_EXTERN PetscErrorCode BilevelAppendOptionsPrefix(Bilevel bilevel, const char prefix[]);
/* The method (aidcg, qnbo, ...; -bilevel_type overrides it in BilevelSetFromOptions). */
PETSC_EXTERN PetscErrorCode BilevelSetType(Bilevel bilevel, const char type[]);
PETSC_EXTERN PetscErrorCode BilevelGetType(Bilevel bilevel, const char* type[]);
/* The problem: x has dim_upper entries, y dim_lower (PETSc decides the layouts). callbacks is copied. */
PETSC_EXTERN PetscErrorCode BilevelSetProblemCallbacks(
    Bilevel bilevel, PetscInt dim_upper, PetscInt dim_lower, const BilevelCallbacks* callbacks, void* ctx);
/* Samples behind g (lower) and f (upper, 0: deterministic): makes minibatch methods available. */
PETSC_EXTERN PetscErrorCode BilevelSetDatasetSizes(Bilevel bilevel, PetscInt lower, PetscInt upper);
/* Problem hints, each ignored when <= 0: the Lipschitz constant of grad_y g (else estimated), the upper
 * step size, the default of -bilevel_max_it. Call after BilevelSetProblemCallbacks. */
PETSC_EXTERN PetscErrorCode BilevelSetHints(Bilevel bilevel,
                                            PetscReal lower_lipschitz,
                                            PetscReal upper_step,
                                            PetscInt max_it);
PETSC_EXTERN PetscErrorCode BilevelSetFromOptions(Bilevel bilevel);
/* Solves from the current solution (zeros after BilevelSetProblemCallbacks; set its entries through the
 * Vecs of BilevelGetSolution to start elsewhere). */
PETSC_EXTERN PetscErrorCode BilevelSolve(Bilevel bilevel);
PETSC_EXTERN PetscErrorCode BilevelGetConvergedReason(Bilevel bilevel, BilevelConvergedReason* reason);
/* The iterates x and y, owned by the solver (do not destroy them). */
PETSC_EXTERN PetscErrorCode BilevelGetSolution(Bilevel bilevel, Vec* x, Vec* y);
/* Outer iterations of the last solve and its final upper objective f(x, y) (NaN without upper_value). */
PETSC_EXTERN PetscErrorCode BilevelGetIterationNumber(Bilevel bilevel, PetscInt* iterations);
PETSC_EXTERN PetscErrorCode BilevelGetObjective(Bilevel bilevel, PetscReal* upper_objective);
/* What -bilevel_view prints; viewer NULL: stdout of the solver's communicator. */
PETSC_EXTERN PetscErrorCode BilevelView(Bilevel bilevel, PetscViewer viewer);
/* Like TaoMonitorSet: monitor(bilevel, iteration, upper objective, hypergradient norm, ctx) at the start
 * point (iteration 0) and after monitored iterations; destroy(&ctx) (may be NULL) when the monitor goes. */
PETSC_EXTERN PetscErrorCode
BilevelMonitorSet(Bilevel bilevel,
                  PetscErrorCode (*monitor)(Bilevel, PetscInt, PetscReal, PetscReal, void*),
                  void* ctx,
                  PetscErrorCode (*destroy)(void**));
PETSC_EXTERN PetscErrorCode BilevelMonitorCancel(Bilevel bilevel);

#ifdef __cplusplus
}
#endif

#endif /* BILEVEL_BILEVEL_H */
