#pragma once
// Pieces shared by the suites of bilevel-bench (main.cpp: hvp, methods; scale.cpp: scale): the clock, the
// STREAM triad and the HVP timing. Timings are printed and written to JSON; they are never test assertions.
#include <petsctime.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstddef>
#include <vector>

#include "bilevel/bilevel.hpp"

namespace bilevel::bench {

inline double now() {
  PetscLogDouble t = 0;
  (void)PetscTime(&t);
  return t;
}

/// STREAM triad a = b + s c on `n` doubles per rank, all ranks at once; best of `reps`. Returns GB/s
/// counting 3 x 8 bytes per element per rank (no write-allocate). Collective.
inline double triad_bandwidth(MPI_Comm comm, std::size_t n, int reps) {
  std::vector<double> a(n, 0.0), b(n, 1.0), c(n, 2.0);
  int size = 1;
  MPI_Comm_size(comm, &size);
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    MPI_Barrier(comm);
    const double t0 = now();
    const double s = 1.0 + 1e-9 * r;
    for (std::size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    double t = now() - t0, tmax = 0;
    MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, comm);
    best = std::min(best, tmax);
  }
  volatile double sink = a[n / 2];
  (void)sink;
  return 3.0 * 8.0 * static_cast<double>(n) * size / best / 1e9;
}

struct HvpResult {
  double seconds = 0;  ///< per HVP (best of the repetitions' means)
  double bytes = 0;    ///< data-matrix bytes read per HVP, all ranks
  double effective_gbs = 0;
};

/// Times `repeat` HVPs at a fixed point after a warm-up, in `rounds` rounds; keeps the fastest round.
/// Collective.
inline HvpResult time_hvp(BilevelProblem& p, double bytes_local, PetscInt repeat, int rounds = 5) {
  MPI_Comm comm = p.comm();
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), w = p.create_lower_vec(),
       out = p.create_lower_vec();
  p.initial_point(x, y);
  BILEVEL_PETSC_CALL(VecSet(w, 0.01));
  BILEVEL_PETSC_CALL(VecSet(y, 0.001));
  p.lower_hvp(x, y, Batch::all(), w, out);  // warm-up: caches curvature at y
  HvpResult r;
  r.seconds = 1e300;
  for (int round = 0; round < rounds; ++round) {
    MPI_Barrier(comm);
    const double t0 = now();
    for (PetscInt k = 0; k < repeat; ++k) p.lower_hvp(x, y, Batch::all(), w, out);
    double t = (now() - t0) / static_cast<double>(repeat), tmax = 0;
    MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, comm);
    r.seconds = std::min(r.seconds, tmax);
  }
  MPI_Allreduce(&bytes_local, &r.bytes, 1, MPI_DOUBLE, MPI_SUM, comm);
  r.effective_gbs = r.bytes / r.seconds / 1e9;
  return r;
}

/// The triad before and after `work` (the better of the two, so a noisy neighbour lowers neither side
/// alone). Collective.
template <typename Work>
double triad_around(MPI_Comm comm, Work&& work) {
  const double before = triad_bandwidth(comm, std::size_t{1} << 24, 10);
  work();
  const double after = triad_bandwidth(comm, std::size_t{1} << 24, 10);
  return std::max(before, after);
}

/// bilevel-bench scale (scale.cpp). Collective on PETSC_COMM_WORLD.
int run_scale(const boost::program_options::variables_map& vm);

}  // namespace bilevel::bench

namespace bilevel::bench {
/// Bytes this rank has sent through MPI so far, as mpi_bytes.cpp counts them by PMPI interposition (the
/// cross-check of the library's counters). Not collective.
std::int64_t mpi_bytes_counted();
}  // namespace bilevel::bench
