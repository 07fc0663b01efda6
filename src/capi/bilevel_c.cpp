// The C interface (include/bilevel/bilevel.h) on BilevelSolver and CallbackProblem. Every function runs its
// body inside c_call(), which turns any C++ exception into a PETSc error with the library's message.
#include <cmath>
#include <exception>
#include <memory>
#include <string>

#include "bilevel/bilevel.h"
#include "bilevel/core/solver.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/problems/callback.hpp"

struct _p_Bilevel {
  MPI_Comm comm = MPI_COMM_NULL;
  std::unique_ptr<bilevel::BilevelSolver> solver;
  std::shared_ptr<bilevel::CallbackProblem> problem;
  bilevel::petsc::VecHandle x, y;
  BilevelCallbacks callbacks{};
  void* ctx = nullptr;
  std::string type;  // for BilevelGetType
  bilevel::SolveReport report;
};

namespace {

/// A non-zero code returned by a user's callback: PETSc has the error already (PetscCall chains), so it is
/// passed on as it is.
struct CallbackFailed : std::exception {
  PetscErrorCode code;
  explicit CallbackFailed(PetscErrorCode c) : code(c) {}
  const char* what() const noexcept override { return "a Bilevel callback returned an error"; }
};

void check(PetscErrorCode code) {
  if (code) throw CallbackFailed(code);
}

/// Runs body; an exception becomes a PETSc error raised on comm with its message. Collective as body.
template <typename F>
PetscErrorCode c_call(MPI_Comm comm, const char* function, F&& body) {
  if (comm == MPI_COMM_NULL) comm = PETSC_COMM_SELF;
  try {
    body();
    return 0;
  } catch (const CallbackFailed& e) {
    return PetscError(comm, __LINE__, function, __FILE__, e.code, PETSC_ERROR_REPEAT, " ");
  } catch (const bilevel::petsc::Error& e) {
    return PetscError(comm,
                      __LINE__,
                      function,
                      __FILE__,
                      e.code() ? e.code() : PETSC_ERR_LIB,
                      PETSC_ERROR_INITIAL,
                      "%s",
                      e.what());
  } catch (const bilevel::InputError& e) {
    return PetscError(
        comm, __LINE__, function, __FILE__, PETSC_ERR_USER_INPUT, PETSC_ERROR_INITIAL, "%s", e.what());
  } catch (const std::exception& e) {
    return PetscError(comm, __LINE__, function, __FILE__, PETSC_ERR_LIB, PETSC_ERROR_INITIAL, "%s", e.what());
  } catch (...) {
    return PetscError(
        comm, __LINE__, function, __FILE__, PETSC_ERR_LIB, PETSC_ERROR_INITIAL, "unknown exception");
  }
}

#define BILEVEL_C_CHECK_OBJECT(b)        \
  if (!(b))                              \
  return PetscError(PETSC_COMM_SELF,     \
                    __LINE__,            \
                    PETSC_FUNCTION_NAME, \
                    __FILE__,            \
                    PETSC_ERR_ARG_NULL,  \
                    PETSC_ERROR_INITIAL, \
                    "Bilevel object is NULL (call BilevelCreate first)")

BilevelBatch to_c(const bilevel::Batch& b) {
  BilevelBatch c;
  c.full = b.full ? PETSC_TRUE : PETSC_FALSE;
  c.n = b.full ? 0 : static_cast<PetscInt>(b.indices.size());
  c.indices = b.full ? nullptr : b.indices.data();
  return c;
}

void require_problem(const _p_Bilevel* b, const char* function) {
  if (!b->problem)
    throw bilevel::InputError(std::string(function) + ": call BilevelSetProblemCallbacks first");
}

/// BilevelMonitorSet's monitor, as a bilevel::MonitorFunction context.
struct CMonitor {
  Bilevel bilevel;
  PetscErrorCode (*monitor)(Bilevel, PetscInt, PetscReal, PetscReal, void*);
  void* ctx;
  PetscErrorCode (*destroy)(void**);
};

PetscErrorCode call_monitor(const bilevel::IterationRecord& r, void* p) {
  auto* m = static_cast<CMonitor*>(p);
  return m->monitor(
      m->bilevel, static_cast<PetscInt>(r.iteration), r.upper_objective, r.hypergradient_norm, m->ctx);
}

PetscErrorCode destroy_monitor(void** p) {
  auto* m = static_cast<CMonitor*>(*p);
  PetscErrorCode ierr = 0;
  if (m && m->destroy) ierr = m->destroy(&m->ctx);
  delete m;
  *p = nullptr;
  return ierr;
}

}  // namespace

extern "C" {

PetscErrorCode BilevelCreate(MPI_Comm comm, Bilevel* out) {
  if (!out)
    return PetscError(PETSC_COMM_SELF,
                      __LINE__,
                      PETSC_FUNCTION_NAME,
                      __FILE__,
                      PETSC_ERR_ARG_NULL,
                      PETSC_ERROR_INITIAL,
                      "BilevelCreate: the output pointer is NULL");
  *out = nullptr;
  return c_call(MPI_COMM_NULL, PETSC_FUNCTION_NAME, [&] {
    auto b = std::make_unique<_p_Bilevel>();
    b->comm = comm;
    b->solver = std::make_unique<bilevel::BilevelSolver>(comm);  // starts SLEPc/PETSc if needed
    *out = b.release();
  });
}

PetscErrorCode BilevelDestroy(Bilevel* b) {
  if (!b || !*b) return 0;
  const MPI_Comm comm = (*b)->comm;
  return c_call(comm, PETSC_FUNCTION_NAME, [&] {
    delete *b;
    *b = nullptr;
  });
}

PetscErrorCode BilevelSetOptionsPrefix(Bilevel b, const char prefix[]) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] { b->solver->set_options_prefix(prefix ? prefix : ""); });
}

PetscErrorCode BilevelAppendOptionsPrefix(Bilevel b, const char prefix[]) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(
      b->comm, PETSC_FUNCTION_NAME, [&] { b->solver->append_options_prefix(prefix ? prefix : ""); });
}

PetscErrorCode BilevelSetType(Bilevel b, const char type[]) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] { b->solver->set_type(type ? type : ""); });
}

PetscErrorCode BilevelGetType(Bilevel b, const char* type[]) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    b->type = b->solver->type();
    *type = b->type.c_str();
  });
}

PetscErrorCode BilevelSetProblemCallbacks(
    Bilevel b, PetscInt dim_upper, PetscInt dim_lower, const BilevelCallbacks* callbacks, void* ctx) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    if (!callbacks) throw bilevel::InputError("BilevelSetProblemCallbacks: callbacks is NULL");
    b->callbacks = *callbacks;
    b->ctx = ctx;
    const BilevelCallbacks& c = b->callbacks;
    bilevel::ProblemCallbacks cb;
    // Each oracle forwards to the C function; a missing required one stays empty, and CallbackProblem's
    // constructor names it.
    if (c.upper_grad)
      cb.upper_grad = [f = c.upper_grad, ctx](Vec x, Vec y, const bilevel::Batch& batch, Vec gx, Vec gy) {
        const BilevelBatch cbatch = to_c(batch);
        check(f(x, y, &cbatch, gx, gy, ctx));
      };
    if (c.lower_grad_y)
      cb.lower_grad_y = [f = c.lower_grad_y, ctx](Vec x, Vec y, const bilevel::Batch& batch, Vec gy) {
        const BilevelBatch cbatch = to_c(batch);
        check(f(x, y, &cbatch, gy, ctx));
      };
    if (c.lower_hvp)
      cb.lower_hvp = [f = c.lower_hvp, ctx](Vec x, Vec y, const bilevel::Batch& batch, Vec w, Vec out) {
        const BilevelBatch cbatch = to_c(batch);
        check(f(x, y, &cbatch, w, out, ctx));
      };
    if (c.lower_jvp)
      cb.lower_jvp = [f = c.lower_jvp, ctx](Vec x, Vec y, const bilevel::Batch& batch, Vec w, Vec out) {
        const BilevelBatch cbatch = to_c(batch);
        check(f(x, y, &cbatch, w, out, ctx));
      };
    if (c.upper_value)
      cb.upper_value = [f = c.upper_value, ctx](Vec x, Vec y, const bilevel::Batch& batch) {
        const BilevelBatch cbatch = to_c(batch);
        PetscReal v = 0;
        check(f(x, y, &cbatch, &v, ctx));
        return v;
      };
    if (c.lower_value)
      cb.lower_value = [f = c.lower_value, ctx](Vec x, Vec y, const bilevel::Batch& batch) {
        const BilevelBatch cbatch = to_c(batch);
        PetscReal v = 0;
        check(f(x, y, &cbatch, &v, ctx));
        return v;
      };
    if (c.lower_grad_x)
      cb.lower_grad_x = [f = c.lower_grad_x, ctx](Vec x, Vec y, const bilevel::Batch& batch, Vec gx) {
        const BilevelBatch cbatch = to_c(batch);
        check(f(x, y, &cbatch, gx, ctx));
      };
    b->problem = std::make_shared<bilevel::CallbackProblem>(b->comm, dim_upper, dim_lower, cb, "user");
    b->solver->set_problem(b->problem);
    b->x = b->problem->create_upper_vec();
    b->y = b->problem->create_lower_vec();
    b->problem->initial_point(b->x, b->y);
  });
}

PetscErrorCode BilevelSetDatasetSizes(Bilevel b, PetscInt lower, PetscInt upper) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    require_problem(b, "BilevelSetDatasetSizes");
    b->problem->set_dataset_sizes({lower, upper});
  });
}

PetscErrorCode BilevelSetHints(Bilevel b, PetscReal lower_lipschitz, PetscReal upper_step, PetscInt max_it) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    require_problem(b, "BilevelSetHints");
    bilevel::ProblemHints h = b->problem->hints();
    if (lower_lipschitz > 0) h.lower_lipschitz = lower_lipschitz;
    if (upper_step > 0) h.upper_step = upper_step;
    if (max_it > 0) h.max_iterations = max_it;
    b->problem->set_hints(h);
    b->solver->set_problem(b->problem);  // the stepper and the defaults follow the hints
  });
}

PetscErrorCode BilevelSetFromOptions(Bilevel b) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    require_problem(b, "BilevelSetFromOptions");
    b->solver->set_from_options();
  });
}

PetscErrorCode BilevelSolve(Bilevel b) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    require_problem(b, "BilevelSolve");
    b->report = b->solver->solve(b->x, b->y);
  });
}

PetscErrorCode BilevelGetConvergedReason(Bilevel b, BilevelConvergedReason* reason) {
  BILEVEL_C_CHECK_OBJECT(b);
  *reason = static_cast<BilevelConvergedReason>(static_cast<int>(b->solver->converged_reason()));
  return 0;
}

PetscErrorCode BilevelGetSolution(Bilevel b, Vec* x, Vec* y) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    require_problem(b, "BilevelGetSolution");
    if (x) *x = b->x;
    if (y) *y = b->y;
  });
}

PetscErrorCode BilevelGetIterationNumber(Bilevel b, PetscInt* iterations) {
  BILEVEL_C_CHECK_OBJECT(b);
  *iterations = static_cast<PetscInt>(b->report.outer_iterations);
  return 0;
}

PetscErrorCode BilevelGetObjective(Bilevel b, PetscReal* upper_objective) {
  BILEVEL_C_CHECK_OBJECT(b);
  *upper_objective =
      b->report.reason == bilevel::ConvergedReason::Iterating ? NAN : b->report.upper_objective;
  return 0;
}

PetscErrorCode BilevelView(Bilevel b, PetscViewer viewer) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] { b->solver->view(viewer); });
}

PetscErrorCode BilevelMonitorSet(Bilevel b,
                                 PetscErrorCode (*monitor)(Bilevel, PetscInt, PetscReal, PetscReal, void*),
                                 void* ctx,
                                 PetscErrorCode (*destroy)(void**)) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] {
    if (!monitor) throw bilevel::InputError("BilevelMonitorSet: the monitor function is NULL");
    b->solver->monitor_set(call_monitor, new CMonitor{b, monitor, ctx, destroy}, destroy_monitor);
  });
}

PetscErrorCode BilevelMonitorCancel(Bilevel b) {
  BILEVEL_C_CHECK_OBJECT(b);
  return c_call(b->comm, PETSC_FUNCTION_NAME, [&] { b->solver->monitor_cancel(); });
}

}  // extern "C"
