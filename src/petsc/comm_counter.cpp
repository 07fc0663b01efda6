#include "bilevel/petsc/comm_counter.hpp"

#include <petsclog.h>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel::petsc {
namespace {

CommBytes g_sent{};

PetscLogEvent event_of(CommPhase phase) {
  const Events& e = events();
  switch (phase) {
    case CommPhase::Gather:
      return e.comm_gather;
    case CommPhase::Reduce:
      return e.comm_reduce;
    case CommPhase::Coordinator:
      return e.comm_coordinator;
  }
  return e.comm_reduce;
}

int comm_size(MPI_Comm comm) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  return size;
}

std::int64_t type_bytes(int count, MPI_Datatype type) {
  int b = 0;
  MPI_Type_size(type, &b);
  return static_cast<std::int64_t>(count) * b;
}

}  // namespace

const char* comm_phase_name(CommPhase phase) {
  switch (phase) {
    case CommPhase::Gather:
      return "gather";
    case CommPhase::Reduce:
      return "reduce";
    case CommPhase::Coordinator:
      return "coordinator";
  }
  return "?";
}

CommBytes comm_bytes_sent() {
  return g_sent;
}

std::int64_t comm_bytes_sent_total() {
  std::int64_t t = 0;
  for (const std::int64_t b : g_sent) t += b;
  return t;
}

void reset_comm_bytes() {
  g_sent = CommBytes{};
}

void count_sent(CommPhase phase, std::int64_t bytes, bool petsc_log) {
  if (bytes <= 0) return;
  g_sent[static_cast<std::size_t>(phase)] += bytes;
#if defined(PETSC_USE_LOG)
  if (petsc_log) {
    petsc_send_ct += 1;
    petsc_send_len += static_cast<PetscLogDouble>(bytes);
  }
#else
  (void)petsc_log;
#endif
}

std::int64_t allreduce_bytes(std::int64_t bytes, int size) {
  if (size <= 1) return 0;
  return 2 * bytes * (size - 1) / size;  // reduce-scatter + allgather
}

CountedComm::CountedComm(CommPhase phase, std::int64_t bytes, bool petsc_log) : event_(event_of(phase)) {
  (void)PetscLogEventBegin(event_, 0, 0, 0, 0);
  count_sent(phase, bytes, petsc_log);
}

CountedComm::~CountedComm() {
  (void)PetscLogEventEnd(event_, 0, 0, 0, 0);
}

void allreduce(
    MPI_Comm comm, const void* send, void* recv, int count, MPI_Datatype type, MPI_Op op, CommPhase phase) {
  const int size = comm_size(comm);
  CountedComm counted(phase, allreduce_bytes(type_bytes(count, type), size), true);
  BILEVEL_PETSC_CALL(MPI_Allreduce(send, recv, count, type, op, comm));
}

void broadcast(MPI_Comm comm, void* buf, int count, MPI_Datatype type, int root, CommPhase phase) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const bool sends = rank == root && comm_size(comm) > 1;
  CountedComm counted(phase, sends ? type_bytes(count, type) : 0, true);
  BILEVEL_PETSC_CALL(MPI_Bcast(buf, count, type, root, comm));
}

}  // namespace bilevel::petsc
