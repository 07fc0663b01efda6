#include "bilevel/petsc/memory.hpp"

#include <malloc.h>
#include <sys/resource.h>

#include <cstring>
#include <fstream>
#include <string>

#include "bilevel/petsc/error.hpp"

namespace bilevel::petsc {
namespace {

/// The value in kB of `key` ("VmHWM:") in /proc/self/status, in bytes; -1 when absent.
std::int64_t status_bytes(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, n, key) == 0) return std::stoll(line.substr(n)) * 1024;  // "VmHWM:   123 kB"
  return -1;
}

}  // namespace

std::int64_t peak_rss_bytes() {
  const std::int64_t hwm = status_bytes("VmHWM:");
  if (hwm >= 0) return hwm;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;  // kilobytes on Linux
}

std::int64_t current_rss_bytes() {
  const std::int64_t rss = status_bytes("VmRSS:");
  return rss < 0 ? 0 : rss;
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.close();
  return !out.fail();
}

std::int64_t max_over_ranks(MPI_Comm comm, std::int64_t value) {
  std::int64_t out = value;
  BILEVEL_PETSC_CALL(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_MAX, comm));
  return out;
}

std::int64_t matrix_storage_bytes(Mat a) {
  if (!a) return 0;
  MatType type = nullptr;
  BILEVEL_PETSC_CALL(MatGetType(a, &type));
  PetscInt m = 0, n = 0;
  BILEVEL_PETSC_CALL(MatGetLocalSize(a, &m, &n));
  const std::string t = type ? type : "";
  if (t.find("dense") != std::string::npos) {
    PetscInt rows = 0, cols = 0;
    BILEVEL_PETSC_CALL(MatGetSize(a, &rows, &cols));
    (void)rows;
    // a sequential dense block holds all columns of its rows; a parallel one too (MATMPIDENSE)
    return static_cast<std::int64_t>(m) * cols * static_cast<std::int64_t>(sizeof(PetscScalar));
  }
  if (t.find("aij") != std::string::npos) {
    MatInfo info;
    BILEVEL_PETSC_CALL(MatGetInfo(a, MAT_LOCAL, &info));
    const auto nz = static_cast<std::int64_t>(info.nz_used);
    const int blocks = t.find("mpi") != std::string::npos ? 2 : 1;  // diagonal and off-diagonal offsets
    return nz * static_cast<std::int64_t>(sizeof(PetscScalar) + sizeof(PetscInt)) +
           blocks * (static_cast<std::int64_t>(m) + 1) * static_cast<std::int64_t>(sizeof(PetscInt));
  }
  return 0;
}

void restore_allocator_defaults() {
  // glibc's defaults (malloc/malloc.c: DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD). Setting them fixes the
  // mmap threshold at its default 128 KiB too (glibc stops raising it dynamically), so every large block is
  // its own mapping and goes back to the system when freed.
  mallopt(M_MMAP_MAX, 65536);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
}

}  // namespace bilevel::petsc
