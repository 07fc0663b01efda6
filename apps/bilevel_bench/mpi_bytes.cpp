// Bytes through MPI, counted by the PMPI profiling interface (MPI standard, chapter "Profiling Interface"):
// bilevel-bench defines the MPI functions below, which count and call PMPI_*; the program exports them
// (ENABLE_EXPORTS), so libbilevel's and PETSc's calls land here too. What is counted, per rank, for
// communicators of more than one rank: the buffer of each reduction (Allreduce, Reduce, Reduce_scatter,
// Scan), what a rank receives from the others in gathers (Allgather(v), Gather(v)) and broadcasts, and what
// it sends point to point (Send, Isend and persistent sends started by Start/Startall, as PetscSF uses).
// Nonblocking collectives are counted like their blocking forms.
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

bool shared(MPI_Comm comm) {
  int size = 1;
  if (comm == MPI_COMM_NULL) return false;
  PMPI_Comm_size(comm, &size);
  return size > 1;
}

std::int64_t gathered(const int* counts, MPI_Comm comm) {
  int size = 1, rank = 0;
  PMPI_Comm_size(comm, &size);
  PMPI_Comm_rank(comm, &rank);
  std::int64_t n = 0;
  for (int r = 0; r < size; ++r)
    if (r != rank) n += counts[r];
  return n;
}

void count_allreduce(const void* sendbuf, int count, MPI_Datatype t, MPI_Comm comm) {
  (void)sendbuf;
  if (shared(comm)) g_bytes += type_bytes(t, count);
}

void count_allgatherv(const int* recvcounts, MPI_Datatype t, MPI_Comm comm) {
  if (shared(comm)) g_bytes += type_bytes(t, gathered(recvcounts, comm));
}

void count_allgather(int recvcount, MPI_Datatype t, MPI_Comm comm) {
  if (!shared(comm)) return;
  int size = 1;
  PMPI_Comm_size(comm, &size);
  g_bytes += type_bytes(t, static_cast<std::int64_t>(recvcount) * (size - 1));
}

}  // namespace

extern "C" {

int MPI_Allreduce(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, MPI_Comm comm) {
  count_allreduce(s, c, t, comm);
  return PMPI_Allreduce(s, r, c, t, op, comm);
}
int MPI_Iallreduce(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, MPI_Comm comm, MPI_Request* q) {
  count_allreduce(s, c, t, comm);
  return PMPI_Iallreduce(s, r, c, t, op, comm, q);
}
int MPI_Reduce(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, int root, MPI_Comm comm) {
  count_allreduce(s, c, t, comm);
  return PMPI_Reduce(s, r, c, t, op, root, comm);
}
int MPI_Reduce_scatter_block(const void* s, void* r, int c, MPI_Datatype t, MPI_Op op, MPI_Comm comm) {
  if (shared(comm)) {
    int size = 1;
    PMPI_Comm_size(comm, &size);
    g_bytes += type_bytes(t, static_cast<std::int64_t>(c) * size);
  }
  return PMPI_Reduce_scatter_block(s, r, c, t, op, comm);
}
int MPI_Reduce_scatter(const void* s, void* r, const int* c, MPI_Datatype t, MPI_Op op, MPI_Comm comm) {
  if (shared(comm)) {
    int size = 1;
    PMPI_Comm_size(comm, &size);
    std::int64_t n = 0;
    for (int i = 0; i < size; ++i) n += c[i];
    g_bytes += type_bytes(t, n);
  }
  return PMPI_Reduce_scatter(s, r, c, t, op, comm);
}
int MPI_Allgather(const void* s, int sc, MPI_Datatype st, void* r, int rc, MPI_Datatype rt, MPI_Comm comm) {
  count_allgather(rc, rt, comm);
  return PMPI_Allgather(s, sc, st, r, rc, rt, comm);
}
int MPI_Iallgather(
    const void* s, int sc, MPI_Datatype st, void* r, int rc, MPI_Datatype rt, MPI_Comm comm, MPI_Request* q) {
  count_allgather(rc, rt, comm);
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
  count_allgatherv(rc, rt, comm);
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
  count_allgatherv(rc, rt, comm);
  return PMPI_Iallgatherv(s, sc, st, r, rc, displs, rt, comm, q);
}
int MPI_Bcast(void* b, int c, MPI_Datatype t, int root, MPI_Comm comm) {
  if (shared(comm)) {
    int rank = 0;
    PMPI_Comm_rank(comm, &rank);
    if (rank != root) g_bytes += type_bytes(t, c);
  }
  return PMPI_Bcast(b, c, t, root, comm);
}
int MPI_Send(const void* b, int c, MPI_Datatype t, int dest, int tag, MPI_Comm comm) {
  g_bytes += type_bytes(t, c);
  return PMPI_Send(b, c, t, dest, tag, comm);
}
int MPI_Isend(const void* b, int c, MPI_Datatype t, int dest, int tag, MPI_Comm comm, MPI_Request* q) {
  g_bytes += type_bytes(t, c);
  return PMPI_Isend(b, c, t, dest, tag, comm, q);
}
int MPI_Send_init(const void* b, int c, MPI_Datatype t, int dest, int tag, MPI_Comm comm, MPI_Request* q) {
  const int rc = PMPI_Send_init(b, c, t, dest, tag, comm, q);
  if (rc == MPI_SUCCESS) persistent()[*q] = type_bytes(t, c);
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
