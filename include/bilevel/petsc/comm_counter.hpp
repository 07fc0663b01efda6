#pragma once
/// \file Bytes the library sends, counted per phase, and the collectives that count them.
///
/// Every message the library itself starts goes through a counted call here or through a counted scatter
/// (`count_scatter`), so each rank knows what it has sent, by phase (model and directions to the ranks that
/// need them, sums of results, coordinator traffic). PETSc's own messages inside KSP and SLEPc (a few
/// scalars per iteration) are not counted; -log_view lists them.
///
/// Counting rule (bytes this rank sends, per operation, on P ranks; nothing at P = 1):
///   - a scatter: exactly the entries it sends to other ranks (a gather "to all" of a Vec whose local part
///     has n entries: n (P − 1) entries) times the entry size;
///   - an allreduce of n bytes: 2 n (P − 1) / P, rounded down (reduce-scatter + allgather: the volume per
///   rank
///     of the bandwidth-optimal algorithms MPI uses for large messages);
///   - a broadcast of n bytes: n on the root (its share of a pipelined broadcast), 0 elsewhere.
/// -log_view shows each phase as an event (BilevelCommGather, BilevelCommReduce, BilevelCommCoord) with
/// the counted bytes in its message-length column.
#include <petscsys.h>

#include <array>
#include <cstdint>

namespace bilevel::petsc {

/// What a message is for.
enum class CommPhase : int {
  Gather = 0,       ///< model entries and directions sent to the ranks whose rows need them
  Reduce = 1,       ///< model-sized and scalar sums of per-rank results
  Coordinator = 2,  ///< to and from the coordinator (rank 0): decisions and the upper-level step
};
inline constexpr int kCommPhases = 3;

/// "gather", "reduce", "coordinator". Not collective.
const char* comm_phase_name(CommPhase phase);

/// Bytes this rank has sent per phase since the program started (or the last reset). Not collective.
using CommBytes = std::array<std::int64_t, kCommPhases>;
CommBytes comm_bytes_sent();
/// Sum over the phases of comm_bytes_sent(). Not collective.
std::int64_t comm_bytes_sent_total();
/// Sets the counters to zero. Not collective.
void reset_comm_bytes();

/// Records `bytes` sent by this rank in `phase` (for callers that count their own messages). When
/// `petsc_log` is true the bytes also go to PETSc's message-length log (use it for collectives PETSc does
/// not size itself; PETSc already logs the point-to-point messages of its scatters). Not collective.
void count_sent(CommPhase phase, std::int64_t bytes, bool petsc_log = false);

/// Bytes an allreduce of `bytes` sends per rank on `size` ranks under the counting rule. Not collective.
std::int64_t allreduce_bytes(std::int64_t bytes, int size);

/// MPI_Allreduce counted under `phase` (in place when send == MPI_IN_PLACE), inside the phase's log
/// event. Collective on comm.
void allreduce(
    MPI_Comm comm, const void* send, void* recv, int count, MPI_Datatype type, MPI_Op op, CommPhase phase);

/// MPI_Bcast counted under `phase`. Collective on comm.
void broadcast(MPI_Comm comm, void* buf, int count, MPI_Datatype type, int root, CommPhase phase);

/// Opens the phase's log event for a scatter (or any other call) and counts `bytes` for it; ends the event
/// when destroyed. Not collective.
class CountedComm {
 public:
  CountedComm(CommPhase phase, std::int64_t bytes, bool petsc_log = false);
  CountedComm(const CountedComm&) = delete;
  CountedComm& operator=(const CountedComm&) = delete;
  ~CountedComm();

 private:
  PetscLogEvent event_;
};

}  // namespace bilevel::petsc
