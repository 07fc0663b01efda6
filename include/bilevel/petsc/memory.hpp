#pragma once
/// \file Resident memory of this process (Linux /proc, getrusage elsewhere) and the storage of a matrix,
/// so that programs can report peak memory against the data a rank holds (docs/scaling.md).
#include <petscmat.h>

#include <cstdint>

namespace bilevel::petsc {

/// Peak resident set size of this process in bytes since it started or since the last reset_peak_rss()
/// (VmHWM of /proc/self/status; getrusage's ru_maxrss where /proc is missing). Not collective.
std::int64_t peak_rss_bytes();

/// Current resident set size in bytes (VmRSS; 0 when unknown). Not collective.
std::int64_t current_rss_bytes();

/// Restarts the peak (VmHWM) at the current resident size by writing "5" to /proc/self/clear_refs; false
/// where the kernel does not offer it (then peak_rss_bytes() keeps counting from the start). Not collective.
bool reset_peak_rss();

/// The largest `value` over the ranks of comm. Collective.
std::int64_t max_over_ranks(MPI_Comm comm, std::int64_t value);

/// Bytes of the local storage of a matrix: an AIJ matrix's values, column indices and row offsets (nonzeros
/// used, diagonal and off-diagonal blocks), a dense matrix's local rows x columns; 0 for other types.
/// Not collective.
std::int64_t matrix_storage_bytes(Mat a);

/// Restores glibc's default allocator thresholds (M_MMAP_MAX 65536, M_TRIM_THRESHOLD 128 KiB): a static
/// initializer of CombBLAS inside libsuperlu_dist (linked by PETSc) calls mallopt(M_MMAP_MAX, 0) and
/// mallopt(M_TRIM_THRESHOLD, -1) when the library is loaded, so that no large block is ever returned to the
/// system: a freed 2 GB staging copy of a data matrix then stays resident for the rest of the run. Session
/// and ensure_initialized() call it; calling it again is harmless. Not collective.
void restore_allocator_defaults();

}  // namespace bilevel::petsc
