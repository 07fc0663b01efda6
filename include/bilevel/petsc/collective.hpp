#pragma once
/// \file Turning rank-local failures into collective ones (PISM's ParallelSection).
#include <petscsys.h>  // before any <mpi.h>: PETSc defines OMPI_SKIP_MPICXX, so no MPI C++ bindings

#include <exception>
#include <string>

namespace bilevel {

/// Run rank-local work that may throw (parsing a shard, checking a file) and make the outcome collective:
///
///     ParallelSection section(comm);
///     try { parse_my_rows(); } catch (...) { section.failed(); }
///     section.check();   // collective: throws the first failing rank's message on every rank
///
/// check() is collective on comm. If the lowest failing rank threw an InputError, every rank throws an
/// InputError with its message; otherwise a CollectiveError.
class ParallelSection {
 public:
  explicit ParallelSection(MPI_Comm comm) : comm_(comm) {}
  /// Records the exception being handled (call inside a catch block). Not collective.
  void failed();
  /// Records a failure with a message. Not collective.
  void failed(const std::string& message, bool input_error = true);
  /// Collective: throws on every rank if any rank failed.
  void check();

 private:
  MPI_Comm comm_;
  bool failed_ = false;
  bool input_error_ = false;
  std::string message_;
};

/// Convenience: runs f() inside a ParallelSection and checks it. Collective on comm.
template <typename F>
void collective(MPI_Comm comm, F&& f) {
  ParallelSection section(comm);
  try {
    f();
  } catch (...) {
    section.failed();
  }
  section.check();
}

}  // namespace bilevel
