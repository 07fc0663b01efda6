#pragma once
/// \file Exceptions of the library and the macro that turns PETSc error codes into them.
#include <petscsys.h>

#include <stdexcept>
#include <string>

#include "bilevel/petsc/compat.hpp"

namespace bilevel {

/// Base of every exception the library throws on purpose. what() is one line, suitable for users.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A user mistake: bad option value, malformed file, dimension mismatch. Thrown collectively
/// (every rank of the communicator throws the same message), so callers may print it once and exit.
class InputError : public Error {
 public:
  using Error::Error;
};

/// A condition detected on some ranks only, made collective by a ParallelSection: every rank throws it.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

/// An oracle or feature a problem does not provide.
class NotImplemented : public Error {
 public:
  using Error::Error;
};

namespace petsc {

/// Thrown when a PETSc call returns a non-zero PetscErrorCode; what() has file:line, the call and PETSc's
/// text.
class Error : public ::bilevel::Error {
 public:
  Error(PetscErrorCode code, const char* call, const char* file, int line);
  PetscErrorCode code() const noexcept { return code_; }

 private:
  PetscErrorCode code_;
};

}  // namespace petsc

/// Throws InputError with a message prefixed by "file:line: " of the caller (for internal invariants use
/// BILEVEL_ASSERT).
[[noreturn]] void throw_located(const char* file, int line, const std::string& message);

}  // namespace bilevel

/// Calls a PETSc function and throws bilevel::petsc::Error if it fails. Not collective by itself: PETSc
/// calls that are collective fail on every rank of their communicator.
#define BILEVEL_PETSC_CALL(...)                                                       \
  do {                                                                                \
    const PetscErrorCode bilevel_ierr_ = (__VA_ARGS__);                               \
    if (PetscUnlikely(bilevel_ierr_))                                                 \
      throw ::bilevel::petsc::Error(bilevel_ierr_, #__VA_ARGS__, __FILE__, __LINE__); \
  } while (0)

/// Internal invariant: throws bilevel::Error("file:line: invariant failed: cond") when cond is false.
#define BILEVEL_ASSERT(cond)                                                               \
  do {                                                                                     \
    if (!(cond)) ::bilevel::throw_located(__FILE__, __LINE__, "invariant failed: " #cond); \
  } while (0)
