// bilevel-bench scale: a seeded synthetic sparse logistic-regression problem (or given files), and what it
// costs at the ranks the program runs on: loading, peak memory per rank against the rank's data, the HVP
// against the STREAM triad, the time and bytes sent of an outer iteration (aidcg, one regulariser per
// feature) and the coordinator's share of it. docs/scaling.md reports and models the numbers.
//
// The generator: row i (0-based, global) draws its `nnz-per-row` distinct columns uniformly and values
// k/1000 with k uniform in [-999, 999] \ {0} from a counter-based generator seeded by (seed, i), so the file
// is the same at every rank count. A planted model w* has a nonzero on 1 feature in 10 (N(0, 2.6²) values,
// again a function of (seed, j) only), and the label is +1 with probability σ(a_iᵀ w*). Each rank writes
// its block of rows to a part file; the parts are copied into one LIBSVM file at offsets from an exclusive
// prefix sum of their sizes. The validation file (rows/20 rows, at least 100) continues the row counter.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "bilevel/petsc/comm_counter.hpp"
#include "bilevel/petsc/memory.hpp"
#include "bilevel/problems/logreg.hpp"

namespace po = boost::program_options;

namespace bilevel::bench {
namespace {

/// splitmix64 (Steele, Lea, Flood 2014): a counter-based stream, state advanced by the golden gamma.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
};

std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
  SplitMix s{a * 0xD1B54A32D192ED03ULL ^ b};
  return s.next();
}

/// w*_j of the planted model: nonzero on 1 feature in 10.
double planted(std::uint64_t seed, std::int64_t j) {
  SplitMix s{mix(seed ^ 0x5EED5EED5EED5EEDULL, static_cast<std::uint64_t>(j))};
  if (s.next() % 10 != 0) return 0.0;
  const double u1 = std::max(s.uniform(), 1e-300), u2 = s.uniform();
  return 2.6 * std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);  // Box-Muller
}

struct Shape {
  std::int64_t rows = 0, cols = 0, nnz = 0;
  std::uint64_t seed = 1;
};

char* put_int(char* p, std::int64_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n > 0) *p++ = tmp[--n];
  return p;
}

/// Appends global row `i` as a LIBSVM line to `out`.
void write_row(const Shape& g, std::int64_t i, std::vector<std::int64_t>& cols, std::string& out) {
  SplitMix s{mix(g.seed, static_cast<std::uint64_t>(i))};
  cols.clear();
  while (static_cast<std::int64_t>(cols.size()) < g.nnz) {  // distinct columns, sorted
    const auto c = static_cast<std::int64_t>(s.next() % static_cast<std::uint64_t>(g.cols));
    const auto it = std::lower_bound(cols.begin(), cols.end(), c);
    if (it == cols.end() || *it != c) cols.insert(it, c);
  }
  char line[64 * 1024];
  char* p = line + 3;  // the label goes first, once the margin is known
  double z = 0;
  for (const std::int64_t c : cols) {
    std::int64_t k = 0;
    while (k == 0) k = static_cast<std::int64_t>(s.next() % 1999) - 999;
    z += planted(g.seed, c) * static_cast<double>(k) / 1000.0;
    if (p - line > static_cast<std::ptrdiff_t>(sizeof line) - 40) throw InputError("--nnz-per-row too large");
    *p++ = ' ';
    p = put_int(p, c + 1);  // 1-based indices
    *p++ = ':';
    if (k < 0) *p++ = '-';
    const std::int64_t a = std::abs(k);
    *p++ = '0';
    *p++ = '.';
    *p++ = static_cast<char>('0' + a / 100);
    *p++ = static_cast<char>('0' + a / 10 % 10);
    *p++ = static_cast<char>('0' + a % 10);
  }
  *p++ = '\n';
  const bool positive = s.uniform() < 1 / (1 + std::exp(-z));
  line[0] = positive ? '+' : '-';
  line[1] = '1';
  line[2] = ' ';
  out.append(line, 2);
  out.append(line + 3, static_cast<std::size_t>(p - line - 3));
}

void fail_if(MPI_Comm comm, bool bad, const std::string& message) {
  int b = bad ? 1 : 0, any = 0;
  MPI_Allreduce(&b, &any, 1, MPI_INT, MPI_MAX, comm);
  if (any) throw InputError(message);
}

/// Writes global rows [first, first + count) to `path`, every rank its block. Collective.
void generate(
    MPI_Comm comm, const Shape& g, std::int64_t first, std::int64_t count, const std::string& path) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const std::int64_t lo = first + count * rank / size, hi = first + count * (rank + 1) / size;
  const std::string part = path + ".part" + std::to_string(rank);
  std::int64_t bytes = 0;
  bool bad = false;
  {
    std::FILE* f = std::fopen(part.c_str(), "wb");
    bad = f == nullptr;
    if (f) {
      std::string buf;
      std::vector<std::int64_t> cols;
      for (std::int64_t i = lo; i < hi; ++i) {
        write_row(g, i, cols, buf);
        if (buf.size() > (std::size_t{8} << 20)) {
          bad = bad || std::fwrite(buf.data(), 1, buf.size(), f) != buf.size();
          bytes += static_cast<std::int64_t>(buf.size());
          buf.clear();
        }
      }
      bad = bad || std::fwrite(buf.data(), 1, buf.size(), f) != buf.size();
      bytes += static_cast<std::int64_t>(buf.size());
      bad = std::fclose(f) != 0 || bad;
    }
  }
  fail_if(comm, bad, "cannot write " + part + " (option --data-dir)");
  if (size == 1) {  // the part is the file
    bad = std::rename(part.c_str(), path.c_str()) != 0;
    fail_if(comm, bad, "cannot write " + path + " (option --data-dir)");
    return;
  }
  std::int64_t offset = 0;
  MPI_Exscan(&bytes, &offset, 1, MPI_INT64_T, MPI_SUM, comm);
  if (rank == 0) offset = 0;
  if (rank == 0) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    bad = fd < 0;
    if (fd >= 0) ::close(fd);
  }
  fail_if(comm, bad, "cannot write " + path + " (option --data-dir)");
  const int in = ::open(part.c_str(), O_RDONLY), out = ::open(path.c_str(), O_WRONLY);
  bad = in < 0 || out < 0;
  std::vector<char> chunk(std::size_t{4} << 20);
  for (std::int64_t done = 0; !bad && done < bytes;) {
    const ssize_t n = ::read(in, chunk.data(), chunk.size());
    if (n <= 0) {
      bad = true;
      break;
    }
    for (ssize_t w = 0; w < n && !bad;) {
      const ssize_t m = ::pwrite(out, chunk.data() + w, static_cast<std::size_t>(n - w), offset + done + w);
      if (m <= 0) bad = true;
      w += m;
    }
    done += n;
  }
  if (in >= 0) ::close(in);
  if (out >= 0) ::close(out);
  ::unlink(part.c_str());
  fail_if(comm, bad, "cannot assemble " + path + " (option --data-dir)");
}

/// Records the wall time and the bytes sent, by the library's counter and by the PMPI cross-check, at the
/// first and the last monitor record of a solve.
class Stopwatch : public Monitor {
 public:
  void on_iteration(const IterationRecord& r) override {
    if (!started_) {
      started_ = true;
      first_ = r;
      library_first_ = petsc::comm_bytes_sent_total();
      pmpi_first_ = mpi_bytes_counted();
    }
    last_ = r;
    library_last_ = petsc::comm_bytes_sent_total();
    pmpi_last_ = mpi_bytes_counted();
  }
  double seconds_per_iteration() const {
    const auto k = last_.iteration - first_.iteration;
    return k > 0 ? (last_.wall_time - first_.wall_time) / static_cast<double>(k) : NAN;
  }
  /// This rank's bytes per iteration between the records: the library's count and the PMPI count.
  double library_bytes_per_iteration() const { return per_iteration(library_last_ - library_first_); }
  double pmpi_bytes_per_iteration() const { return per_iteration(pmpi_last_ - pmpi_first_); }

 private:
  double per_iteration(std::int64_t bytes) const {
    const auto k = last_.iteration - first_.iteration;
    return k > 0 ? static_cast<double>(bytes) / static_cast<double>(k) : NAN;
  }
  bool started_ = false;
  IterationRecord first_, last_;
  std::int64_t library_first_ = 0, library_last_ = 0, pmpi_first_ = 0, pmpi_last_ = 0;
};

double sum_double(MPI_Comm comm, double v) {
  double out = v;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_SUM, comm);
  return out;
}

void default_option(const std::string& key, const std::string& value) {
  PetscBool set = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscOptionsHasName(nullptr, nullptr, key.c_str(), &set));
  if (!set) BILEVEL_PETSC_CALL(PetscOptionsSetValue(nullptr, key.c_str(), value.c_str()));
}

double max_double(MPI_Comm comm, double v) {
  double out = v;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, comm);
  return out;
}

std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

}  // namespace

int run_scale(const po::variables_map& vm) {
  MPI_Comm comm = PETSC_COMM_WORLD;
  int ranks = 1, rank = 0;
  MPI_Comm_size(comm, &ranks);
  MPI_Comm_rank(comm, &rank);
  Shape g;
  g.rows = vm["rows"].as<long>();
  g.cols = vm["cols"].as<long>();
  g.nnz = vm["nnz-per-row"].as<long>();
  g.seed = static_cast<std::uint64_t>(vm["seed"].as<long>());
  const long iterations = vm["iterations"].as<long>();
  if (g.rows < 1) throw InputError("bad value for --rows: expected a positive integer");
  if (g.cols < 1) throw InputError("bad value for --cols: expected a positive integer");
  if (g.nnz < 1 || g.nnz > g.cols || g.nnz > 4000)
    throw InputError("bad value for --nnz-per-row: expected an integer in [1, min(--cols, 4000)]");
  if (iterations < 1) throw InputError("bad value for --iterations: expected a positive integer");

  std::string train, validation;
  bool generated = false;
  double generate_seconds = NAN;
  if (vm.count("train")) {
    train = vm["train"].as<std::string>();
    validation = vm.count("validation") ? vm["validation"].as<std::string>() : train;
  } else {
    const std::string dir = vm["data-dir"].as<std::string>();
    const std::string stem = dir + "/scale-" + std::to_string(g.rows) + "x" + std::to_string(g.cols) + "x" +
                             std::to_string(g.nnz) + "-seed" + std::to_string(g.seed);
    train = stem + ".train.svm";
    validation = stem + ".valid.svm";
    const double t0 = now();
    generate(comm, g, 0, g.rows, train);
    generate(comm, g, g.rows, std::max<std::int64_t>(100, g.rows / 20), validation);
    MPI_Barrier(comm);
    generate_seconds = now() - t0;
    generated = true;
    BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                   "scale: generated %s (%lld x %lld, %lld per row, seed %llu) in %.1f s\n",
                                   train.c_str(),
                                   static_cast<long long>(g.rows),
                                   static_cast<long long>(g.cols),
                                   static_cast<long long>(g.nnz),
                                   static_cast<unsigned long long>(g.seed),
                                   generate_seconds));
  }

  // Memory: the peak restarts here, so the generator's buffers do not count.
  MPI_Barrier(comm);
  const bool reset = petsc::reset_peak_rss();
  const std::int64_t rss_before = petsc::max_over_ranks(comm, petsc::current_rss_bytes());

  MPI_Barrier(comm);
  double t0 = now();
  std::shared_ptr<LogregProblem> problem =
      LogregProblem::from_files(comm, train, validation, "", LogregOptions::from_options(comm));
  const double load_seconds = max_double(comm, now() - t0);
  const std::int64_t data_bytes = petsc::max_over_ranks(comm, problem->local_data_bytes());
  const std::int64_t peak_after_load = petsc::max_over_ranks(comm, petsc::peak_rss_bytes());
  BILEVEL_PETSC_CALL(
      PetscPrintf(comm,
                  "scale: loaded on %d rank%s in %.2f s; data %.1f MiB per rank, peak %.1f MiB "
                  "(%.1f MiB before loading)\n",
                  ranks,
                  ranks == 1 ? "" : "s",
                  load_seconds,
                  data_bytes / 1048576.0,
                  peak_after_load / 1048576.0,
                  rss_before / 1048576.0));

  HvpResult hvp;
  const double triad = triad_around(comm, [&] {
    // fewer HVPs per round than the hvp suite unless --repeat says: one HVP reads the whole matrix
    const PetscInt repeat = vm["repeat"].defaulted() ? 5 : vm["repeat"].as<long>();
    hvp = time_hvp(*problem, static_cast<double>(problem->hvp_pass_bytes()), repeat, 3);
  });
  const double hvp_fraction = hvp.effective_gbs / triad;
  BILEVEL_PETSC_CALL(
      PetscPrintf(comm,
                  "scale: HVP %.1f ms, %.2f GB/s of the matrix; triad %.2f GB/s; fraction %.3f\n",
                  hvp.seconds * 1e3,
                  hvp.effective_gbs,
                  triad,
                  hvp_fraction));

  // The triad's buffers (3 x 128 MiB per rank) are not the library's memory: the peak restarts again.
  MPI_Barrier(comm);
  petsc::reset_peak_rss();

  default_option("-bilevel_type", "aidcg");
  default_option("-bilevel_max_it", std::to_string(iterations));
  default_option("-bilevel_monitor_every", std::to_string(iterations));
  default_option("-bilevel_final_lower_solve", "false");
  BilevelSolver solver(comm);
  solver.set_problem(problem);
  auto watch = std::make_unique<Stopwatch>();
  Stopwatch* stopwatch = watch.get();
  solver.add_monitor(std::move(watch));
  solver.set_from_options();
  auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
  problem->initial_point(x, y);
  const SolveReport report = solver.solve(x, y);
  const double iteration_seconds = stopwatch->seconds_per_iteration();
  // The value is the library's own count (the solver's bytes_communicated_per_iteration, max over ranks);
  // the PMPI count over the same records, summed over the ranks, checks that it misses nothing large.
  const double bytes_per_iteration = report.bytes_communicated_per_iteration;
  const double check_library = sum_double(comm, stopwatch->library_bytes_per_iteration()),
               check_pmpi = sum_double(comm, stopwatch->pmpi_bytes_per_iteration());
  const double check_difference =
      check_library > 0 ? std::abs(check_pmpi - check_library) / check_library : (check_pmpi > 0 ? 1.0 : 0.0);
  // the larger of the two measured stretches: loading, and the solve (with the problem resident)
  const std::int64_t peak = std::max(peak_after_load, petsc::max_over_ranks(comm, petsc::peak_rss_bytes()));
  BILEVEL_PETSC_CALL(
      PetscPrintf(comm,
                  "scale: %s, %lld iterations: %.3f s per iteration, %.3f MB sent per rank and "
                  "iteration, coordinator %.4f of the loop; peak %.1f MiB per rank\n",
                  solver.type().c_str(),
                  static_cast<long long>(report.outer_iterations),
                  iteration_seconds,
                  bytes_per_iteration / 1e6,
                  report.coordinator_fraction,
                  peak / 1048576.0));
  BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                 "scale: bytes per iteration, all ranks: library %.0f, PMPI cross-check %.0f "
                                 "(difference %.2f%%)\n",
                                 check_library,
                                 check_pmpi,
                                 100 * check_difference));
  if (check_difference > 0.05)
    BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                   "scale: WARNING: the library's byte count and the PMPI count differ by "
                                   "%.1f%% (more than 5%%): some traffic is not counted by the library\n",
                                   100 * check_difference));

  auto per_iteration = [&](std::int64_t count) {
    return report.outer_iterations > 0
               ? static_cast<double>(count) / static_cast<double>(report.outer_iterations)
               : NAN;
  };
  if (vm.count("summary")) {
    std::ostringstream s;
    s << "{\n  \"suite\": \"scale\",\n  \"ranks\": " << ranks << ",\n  \"train\": \""
      << (generated ? "generated" : train) << "\",\n  \"rows\": " << g.rows << ",\n  \"cols\": " << g.cols
      << ",\n  \"nnz_per_row\": " << g.nnz << ",\n  \"seed\": " << g.seed
      << ",\n  \"generate_seconds\": " << number(generate_seconds)
      << ",\n  \"load_seconds\": " << number(load_seconds) << ",\n  \"load_format\": \"libsvm\""
      << ",\n  \"peak_rss_bytes\": " << peak << ",\n  \"peak_rss_after_load_bytes\": " << peak_after_load
      << ",\n  \"rss_before_load_bytes\": " << rss_before
      << ",\n  \"peak_reset_after_generation\": " << (reset ? "true" : "false")
      << ",\n  \"data_bytes_per_rank\": " << data_bytes << ",\n  \"hvp_seconds\": " << number(hvp.seconds)
      << ",\n  \"hvp_bandwidth_gbs\": " << number(hvp.effective_gbs)
      << ",\n  \"triad_bandwidth_gbs\": " << number(triad)
      << ",\n  \"hvp_fraction_of_triad\": " << number(hvp_fraction) << ",\n  \"method\": \"" << solver.type()
      << "\",\n  \"outer_iterations\": " << report.outer_iterations
      << ",\n  \"iteration_seconds\": " << number(iteration_seconds)
      << ",\n  \"bytes_communicated_per_iteration\": " << number(bytes_per_iteration)
      << ",\n  \"bytes_check_library_all_ranks\": " << number(check_library)
      << ",\n  \"bytes_check_pmpi_all_ranks\": " << number(check_pmpi)
      << ",\n  \"bytes_check_difference\": " << number(check_difference)
      << ",\n  \"hvp_per_iteration\": " << number(per_iteration(report.counts.hvp))
      << ",\n  \"grad_g_per_iteration\": " << number(per_iteration(report.counts.grad_g))
      << ",\n  \"grad_f_per_iteration\": " << number(per_iteration(report.counts.grad_f))
      << ",\n  \"jvp_per_iteration\": " << number(per_iteration(report.counts.jvp))
      << ",\n  \"coordinator_fraction\": " << number(report.coordinator_fraction) << ",\n  \"version\": \""
      << version() << "\"\n}\n";
    write_file_atomically(comm, vm["summary"].as<std::string>(), s.str(), "--summary");
  }
  if (generated && !vm.count("keep-data") && rank == 0) {
    std::remove(train.c_str());
    std::remove(validation.c_str());
  }
  return 0;
}

}  // namespace bilevel::bench
