#pragma once
/// \file The exception boundary for functions PETSc calls back (MATSHELL ops, KSP monitors): exceptions
/// are parked in an exception_ptr and rethrown after the PETSc call returns (deal.II's pattern).
#include <petscsys.h>

#include <exception>

#include "bilevel/petsc/error.hpp"

namespace bilevel::petsc {

/// Runs f(); on exception parks it in `pending` and returns a PETSc error code. Not collective.
template <typename F>
PetscErrorCode guarded(std::exception_ptr& pending, F&& f) noexcept {
  try {
    f();
    return PETSC_SUCCESS;
  } catch (...) {
    pending = std::current_exception();
    return PETSC_ERR_LIB;
  }
}

/// After the PETSc call returns: rethrows what a callback parked, else throws petsc::Error for a non-zero
/// code. Not collective.
void rethrow_pending(
    std::exception_ptr& pending, PetscErrorCode ierr, const char* call, const char* file, int line);

}  // namespace bilevel::petsc

#define BILEVEL_PETSC_CALL_GUARDED(pending, ...) \
  ::bilevel::petsc::rethrow_pending((pending), (__VA_ARGS__), #__VA_ARGS__, __FILE__, __LINE__)
