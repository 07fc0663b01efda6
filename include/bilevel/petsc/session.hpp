#pragma once
/// \file RAII around SlepcInitialize/SlepcFinalize (which also initialise PETSc and MPI).
#include <slepcsys.h>

namespace bilevel::petsc {

/// Initialises SLEPc/PETSc/MPI in the constructor, finalises in the destructor. Collective on
/// MPI_COMM_WORLD. Also registers the library's log events and limits BLAS threads to one per rank when
/// several ranks share a node.
class Session {
 public:
  Session(int* argc, char*** argv, const char* help = nullptr);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();
};

/// One-time registration of the library's classid and log events; idempotent. Collective.
void initialize_package();

}  // namespace bilevel::petsc
