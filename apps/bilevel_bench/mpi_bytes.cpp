// A cross-check of the library's byte counters (petsc/comm_counter.hpp) through the PMPI profiling interface
// (MPI standard, chapter "Profiling Interface"): bilevel-bench defines the MPI functions below, which count
// and call PMPI_*; the program exports them (ENABLE_EXPORTS), so libbilevel's and PETSc's calls land here
// too, whether or not the library counted them. `bilevel-bench scale` reports the library's counter and
// warns when this count differs from it by more than 5% (tests/apps/bench_scale_smoke.sh asserts they
// agree on a small problem).
//
// The counting rule is the library's (bytes this rank sends, communicators of more than one rank only):
// an allreduce of n bytes 2 n (P − 1) / P; a reduce-scatter of n bytes n (P − 1) / P; a reduce n off the
// root; an allgather(v) the rank's own part times P − 1; a broadcast n on the root; point to point the
// bytes sent to another rank (Send, Isend, and persistent sends started by Start/Startall, as PetscSF
// uses). Nonblocking collectives count like their blocking forms. What the library does not count
// (PETSc's own scalar reductions inside KSP and VecNorm) is counted here, so this count is a little larger.
#include <mpi.h>

#include <cstdint>
#include <unordered_map>

// Only <mpi.h>: PETSc's headers (petsclog.h) redefine several MPI functions as logging macros.
namespace bilevel::bench {
std::int64_t mpi_bytes_counted();
}

namespace {

std::int64_t g_bytes = 0;
std::unordered_map<MPI_Request, std::int64_t>& persistent() {
  static std::unordered_map<MPI_Request, std::int64_t> m;
  return m;
}

std::int64_t type_bytes(MPI_Datatype t, std::int64_t count) {
  int size = 0;
  PMPI_Type_size(t, &size);
  return count * size;
}

int size_of(MPI_Comm comm) {
  int size = 1;
  if (comm != MPI_COMM_NULL) PMPI_Comm_size(comm, &size);
  return size;
}

int rank_of(MPI_Comm comm) {
  int rank = 0;
  PMPI_Comm_rank(comm, &rank);
  return rank;
}

void count_allreduce(int count, MPI_Datatype t, MPI_Comm comm) {
  const int p = size_of(comm);
  if (p > 1) g_bytes += 2 * type_bytes(t, count) * (p - 1) / p;
}

void count_reduce_scatter(std::int64_t total, MPI_Datatype t, MPI_Comm comm) {
  const int p = size_of(comm);
  if (p > 1) g_bytes += type_bytes(t, total) * (p - 1) / p;
}

void count_allgather(const void* s, int sc, MPI_Datatype st, int own, MPI_Datatype rt, MPI_Comm comm) {
  const int p = size_of(comm);
  if (p <= 1) return;
  g_bytes += (s == MPI_IN_PLACE ? type_bytes(rt, own) : type_bytes(st, sc)) * (p - 1);
}

void count_send(int count, MPI_Datatype t, int dest, MPI_Comm comm) {
  if (dest != MPI_PROC_NULL && dest != rank_of(comm)) g_bytes += type_bytes(t, count);
}

}  // namespace

extern "C" {

int MPI_Allreduce(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, MPI_Comm comm) {
  count_allreduce(c, t, comm);
  return PMPI_Allreduce(s, r, c, t, op, comm);
}
int MPI_Iallreduce(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, MPI_Comm comm, MPI_Request* q) {
  count_allreduce(c, t, comm);
  return PMPI_Iallreduce(s, r, c, t, op, comm, q);
}
int MPI_Reduce(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, int root, MPI_Comm comm) {
  if (size_of(comm) > 1 && rank_of(comm) != root) g_bytes += type_bytes(t, c);
  return PMPI_Reduce(s, r, c, t, op, root, comm);
}
int MPI_Reduce_scatter_block(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, MPI_Comm comm) {
  count_reduce_scatter(static_cast<std::int64_t>(c) * size_of(comm), t, comm);
  return PMPI_Reduce_scatter_block(s, r, c, t, op, comm);
}
int MPI_Reduce_scatter(const void* s, void* r, const int* c, MPI_Datatype t, MPI_Op op, MPI_Comm comm) {
  std::int64_t n = 0;
  for (int i = 0, p = size_of(comm); i < p; ++i) n += c[i];
  count_reduce_scatter(n, t, comm);
  return PMPI_Reduce_scatter(s, r, c, t, op, comm);
}
int MPI_Allgather(const void* s, int sc, MPI_Datatype st, void* r, int rc, MPI_Datatype rt, MPI_Comm comm) {
  count_allgather(s, sc, st, rc, rt, comm);
  return PMPI_Allgather(s, sc, st, r, rc, rt, comm);
}
int MPI_Iallgather(
    const void* s, int sc, MPI_Datatype st, void* r, int rc, MPI_Datatype rt, MPI_Comm comm, MPI_Request* q) {
  count_allgather(s, sc, st, rc, rt, comm);
  return PMPI_Iallgather(s, sc, st, r, rc, rt, comm, q);
}
int MPI_Allgatherv(const void* s,
                   int sc,
                   MPI_Datatype st,
                   void* r,
                   const int* rc,
                   const int* displs,
                   MPI_Datatype rt,
                   MPI_Comm comm) {
  if (size_of(comm) > 1) count_allgather(s, sc, st, rc[rank_of(comm)], rt, comm);
  return PMPI_Allgatherv(s, sc, st, r, rc, displs, rt, comm);
}
int MPI_Iallgatherv(const void* s,
                    int sc,
                    MPI_Datatype st,
                    void* r,
                    const int* rc,
                    const int* displs,
                    MPI_Datatype rt,
                    MPI_Comm comm,
                    MPI_Request* q) {
  if (size_of(comm) > 1) count_allgather(s, sc, st, rc[rank_of(comm)], rt, comm);
  return PMPI_Iallgatherv(s, sc, st, r, rc, displs, rt, comm, q);
}
int MPI_Bcast(void* b, int c, MPI_Datatype t, int root, MPI_Comm comm) {
  if (size_of(comm) > 1 && rank_of(comm) == root) g_bytes += type_bytes(t, c);
  return PMPI_Bcast(b, c, t, root, comm);
}
int MPI_Send(const void* b, int c, MPI_Datatype t, int dest, int tag, MPI_Comm comm) {
  count_send(c, t, dest, comm);
  return PMPI_Send(b, c, t, dest, tag, comm);
}
int MPI_Isend(const void* b, int c, MPI_Datatype t, int dest, int tag, MPI_Comm comm, MPI_Request* q) {
  count_send(c, t, dest, comm);
  return PMPI_Isend(b, c, t, dest, tag, comm, q);
}
int MPI_Send_init(const void* b, int c, MPI_Datatype t, int dest, int tag, MPI_Comm comm, MPI_Request* q) {
  const int rc = PMPI_Send_init(b, c, t, dest, tag, comm, q);
  if (rc == MPI_SUCCESS)
    persistent()[*q] = dest != MPI_PROC_NULL && dest != rank_of(comm) ? type_bytes(t, c) : 0;
  return rc;
}
int MPI_Start(MPI_Request* q) {
  const auto it = persistent().find(*q);
  if (it != persistent().end()) g_bytes += it->second;
  return PMPI_Start(q);
}
int MPI_Startall(int n, MPI_Request* q) {
  for (int i = 0; i < n; ++i) {
    const auto it = persistent().find(q[i]);
    if (it != persistent().end()) g_bytes += it->second;
  }
  return PMPI_Startall(n, q);
}
int MPI_Request_free(MPI_Request* q) {
  persistent().erase(*q);
  return PMPI_Request_free(q);
}

}  // extern "C"

std::int64_t bilevel::bench::mpi_bytes_counted() {
  return g_bytes;
}
