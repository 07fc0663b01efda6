#include "bilevel/petsc/callback.hpp"

#include <utility>

namespace bilevel::petsc {

void rethrow_pending(
    std::exception_ptr& pending, PetscErrorCode ierr, const char* call, const char* file, int line) {
  if (pending) {
    std::exception_ptr e = std::exchange(pending, nullptr);
    std::rethrow_exception(e);
  }
  if (ierr) throw Error(ierr, call, file, line);
}

}  // namespace bilevel::petsc
