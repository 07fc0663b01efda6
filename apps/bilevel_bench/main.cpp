// bilevel-bench: benchmark suites.
//   bilevel-bench hvp --problem logreg|hyperclean [--train FILE] [--summary FILE] [--repeat N]
//     times the lower Hessian-vector product (the real oracle: gather of the model, fused pass over the
//     local rows, reduction) and reports it as effective memory bandwidth (bytes of the data matrix read
//     per second) next to a STREAM-triad bandwidth measured in the same run on the same ranks.
//   bilevel-bench scale [--rows R --cols C --nnz-per-row K --seed S | --train FILE [--validation FILE]]
//     [--iterations N] [--data-dir DIR] [--keep-data] [--summary FILE]
//     generates a synthetic sparse logistic problem (or reads files) and measures loading, peak memory per
//     rank against its data, the HVP against the triad, an outer iteration's time and bytes sent (the
//     library's count, PMPI as a cross-check), and the coordinator's share (scale.cpp, docs/scaling.md).
//   bilevel-bench methods --out DIR [--seeds N] [--max-time S] [--problems a,b] [--methods a,b] [--no-report]
//     runs every registered method (or --methods) on quadratic, spectral_logsumexp (LancBiO's synthetic
//     problem), logreg (ijcnn1, benchopt's stochastic protocol: minibatches of 64) and hyperclean
//     (Fashion-MNIST, LancBiO's deterministic protocol: 5,000 training rows) for N seeds with a time budget
//     per run; a short calibration run per (problem, method) sets how often the run is monitored (about 50
//     records per run); writes DIR/<problem>/<method>-seed<k>.csv (trace) and .json (summary),
//     DIR/runs.csv, DIR/failures.txt, then calls report_methods.py on DIR (plots and time-to-target tables;
//     docs/benchmarks.md explains them).
// Timings are printed and written to JSON; they are never test assertions.
#include <petsctime.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <vector>

#include "bench_common.hpp"
#include "bilevel/bilevel.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "bilevel/problems/logreg.hpp"

namespace po = boost::program_options;

namespace {

using bilevel::bench::HvpResult;
using bilevel::bench::now;
using bilevel::bench::time_hvp;
using bilevel::bench::triad_bandwidth;

int run_hvp(const po::variables_map& vm) {
  MPI_Comm comm = PETSC_COMM_WORLD;
  int ranks = 1;
  MPI_Comm_size(comm, &ranks);
  const std::string problem = vm["problem"].as<std::string>();
  const std::string train = vm.count("train") ? vm["train"].as<std::string>() : "";
  const PetscInt repeat = vm["repeat"].as<long>();
  std::shared_ptr<bilevel::BilevelProblem> p;
  double bytes_local = 0;
  if (problem == "logreg") {
    if (train.empty()) throw bilevel::InputError("bilevel-bench hvp --problem logreg needs --train FILE");
    auto lr = bilevel::LogregProblem::from_files(
        comm, train, train, "", bilevel::LogregOptions::from_options(comm));
    bytes_local = static_cast<double>(lr->hvp_pass_bytes());
    p = std::move(lr);
  } else if (problem == "hyperclean") {
    bilevel::HypercleanOptions o = bilevel::HypercleanOptions::from_options(comm);
    auto hc = train.empty() ? bilevel::HypercleanProblem::fashion_mnist(comm, o)
                            : bilevel::HypercleanProblem::from_files(comm, train, "", "", o);
    // Dense: the softmax HVP reads the matrix twice (Z = A V, then Aᵀ R); sparse: count the AIJ bytes the
    // same way.
    int size = 1;
    MPI_Comm_size(comm, &size);
    const double rows = static_cast<double>(hc->dataset_sizes().lower) / size;
    bytes_local = 2.0 * rows * static_cast<double>(hc->n_features()) * 8.0;
    if (hc->format() == bilevel::DataFormat::Sparse)
      BILEVEL_PETSC_CALL(PetscPrintf(comm, "note: sparse hyperclean bytes counted as dense (upper bound)\n"));
    p = std::move(hc);
  } else {
    throw bilevel::InputError("bad value '" + problem + "' for --problem: expected logreg or hyperclean");
  }
  const double triad = triad_bandwidth(comm, std::size_t{1} << 24, 10);
  const HvpResult h = time_hvp(*p, bytes_local, repeat);
  const double triad_after = triad_bandwidth(comm, std::size_t{1} << 24, 10);
  const double triad_best = std::max(triad, triad_after);
  const double fraction = h.effective_gbs / triad_best;
  BILEVEL_PETSC_CALL(
      PetscPrintf(comm,
                  "hvp %s on %d rank%s: %.3f ms per HVP, %.1f MB of data per HVP, effective %.2f GB/s; "
                  "triad %.2f GB/s; fraction %.3f\n",
                  problem.c_str(),
                  ranks,
                  ranks == 1 ? "" : "s",
                  h.seconds * 1e3,
                  h.bytes / 1e6,
                  h.effective_gbs,
                  triad_best,
                  fraction));
  if (vm.count("summary")) {
    std::ostringstream s;
    s << "{\n  \"suite\": \"hvp\",\n  \"problem\": \"" << problem << "\",\n  \"ranks\": " << ranks
      << ",\n  \"hvp_seconds\": " << h.seconds << ",\n  \"bytes_per_hvp\": " << h.bytes
      << ",\n  \"effective_bandwidth_gbs\": " << h.effective_gbs
      << ",\n  \"triad_bandwidth_gbs\": " << triad_best << ",\n  \"fraction\": " << fraction
      << ",\n  \"version\": \"" << bilevel::version() << "\"\n}\n";
    bilevel::write_file_atomically(comm, vm["summary"].as<std::string>(), s.str());
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// methods suite

/// "a,b,,c" -> {a, b, c}.
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream s(text);
  for (std::string item; std::getline(s, item, ',');)
    if (!item.empty()) items.push_back(item);
  return items;
}

void set_option(const std::string& key, const std::string& value) {
  BILEVEL_PETSC_CALL(PetscOptionsSetValue(nullptr, key.c_str(), value.empty() ? nullptr : value.c_str()));
}

bool option_given(const std::string& key) {
  PetscBool set = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscOptionsHasName(nullptr, nullptr, key.c_str(), &set));
  return set;
}

/// Sets key unless the command line gave it.
void default_option(const std::string& key, const std::string& value) {
  if (!option_given(key)) set_option(key, value);
}

std::string format_number(double v) {
  if (!std::isfinite(v)) return "";
  char b[64];
  std::snprintf(b, sizeof b, "%.10g", v);
  return b;
}

/// Per-run time budget in seconds when --max-time is not given (sized so that the default suite, 4
/// problems x 14 methods x 3 seeds, takes about 40 minutes at 2 ranks on a loaded machine).
double default_budget(const std::string& problem) {
  if (problem == "hyperclean") return 14.0;
  if (problem == "logreg") return 13.0;
  if (problem == "spectral_logsumexp") return 10.0;
  return 6.0;
}

/// Records wanted per run: the calibration run's rate sets -bilevel_monitor_every to about budget / this.
constexpr double kRecordsPerRun = 50;

/// Options database entries the suite sets for the runs of one problem (unless the command line gave them)
/// and removes when the problem is done, so that they do not reach the next problem.
class ScopedRunOptions {
 public:
  ScopedRunOptions() = default;
  ScopedRunOptions(const ScopedRunOptions&) = delete;
  ScopedRunOptions& operator=(const ScopedRunOptions&) = delete;
  ~ScopedRunOptions() {
    for (const auto& key : owned_) PetscOptionsClearValue(nullptr, key.c_str());
  }
  /// Sets key = value unless the command line gave key.
  void set_default(const std::string& key, const std::string& value) {
    if (option_given(key)) return;
    set_option(key, value);
    owned_.push_back(key);
  }
  /// Sets key = value for this problem's runs, replacing what an earlier run of it set.
  void set(const std::string& key, const std::string& value) {
    set_option(key, value);
    if (std::find(owned_.begin(), owned_.end(), key) == owned_.end()) owned_.push_back(key);
  }

 private:
  std::vector<std::string> owned_;
};

/// The options of one suite problem's runs. logreg: benchopt's stochastic protocol on ijcnn1 (algorithms.md
/// 5.5.2), lower and upper minibatches of 64 for every method that samples. The others: deterministic
/// protocols (LancBiO's, algorithms.md 5.2 and 5.6): minibatches as large as the data sets, i.e. full
/// batches for every method, also for those whose own default samples (a size >= n is the full batch);
/// quadratic and spectral_logsumexp have no samples. The suite asks for no exact metrics
/// (-bilevel_monitor_exact_every): closed-form problems (quadratic) have them in every record anyway;
/// elsewhere a record's accurate solves and its error bound's SLEPc estimate of μ cost more than the run
/// (spectral_logsumexp at κ = 1e5: minutes per record, missing the 1e-8 tolerance; logreg: up to a minute
/// per record for lancbio), so the plots use f(x_k, y_k).
std::vector<std::pair<std::string, std::string>> protocol_options(const bilevel::BilevelProblem& problem) {
  if (problem.name() == "logreg") return {{"-bilevel_batch_size", "64"}, {"-bilevel_upper_batch_size", "64"}};
  const auto n = problem.dataset_sizes();
  if (n.lower <= 0) return {};
  return {{"-bilevel_batch_size", std::to_string(n.lower)},
          {"-bilevel_upper_batch_size", std::to_string(std::max<PetscInt>(1, n.upper))}};
}

/// What the suite needs from the command line.
struct SuiteSettings {
  std::string out;
  long seeds = 3;
  std::optional<double> max_time;
  std::vector<std::string> problems, methods;
  bilevel::ProblemInputs logreg_inputs;
  bool report = true;
};

/// One line of runs.csv.
struct RunRow {
  std::string problem, method;
  long seed = 0;
  std::string status = "error";  // ok | diverged | error
  std::string reason = "ERROR";
  std::int64_t iterations = 0;
  std::int64_t monitor_every = 1;
  double wall_time_s = NAN, upper_objective = NAN;
  std::optional<double> test_accuracy;
  bilevel::OracleCounts counts;

  std::string key() const { return problem + "," + method + "," + std::to_string(seed); }
  std::string csv() const {
    std::ostringstream s;
    s << key() << "," << status << "," << reason << "," << iterations << "," << format_number(wall_time_s)
      << "," << format_number(upper_objective) << "," << (test_accuracy ? format_number(*test_accuracy) : "")
      << "," << counts.grad_f << "," << counts.grad_g << "," << counts.hvp << "," << counts.jvp << ","
      << (counts.grad_f + counts.grad_g + counts.hvp + counts.jvp) << "," << counts.samples << ","
      << counts.value_f << "," << counts.value_g << "," << monitor_every << "\n";
    return s.str();
  }
};

const char* kRunsHeader =
    "problem,method,seed,status,converged_reason,outer_iterations,wall_time_s,upper_objective,test_accuracy,"
    "grad_f,grad_g,hvp,jvp,oracle_calls,samples,value_f,value_g,monitor_every\n";

/// runs.csv and failures.txt of the output folder, kept across invocations: a run replaces the line of the
/// same (problem, method, seed), so problems can be run one at a time into one folder. Only rank 0 reads
/// the old files; write() is collective.
class SuiteLedger {
 public:
  SuiteLedger(MPI_Comm comm, std::string dir) : comm_(comm), dir_(std::move(dir)) {
    int rank = 0;
    MPI_Comm_rank(comm_, &rank);
    if (rank != 0) return;
    std::ifstream runs(dir_ + "/runs.csv");
    std::string line;
    for (bool header = true; std::getline(runs, line); header = false) {
      if (header || line.empty()) continue;
      const auto key_end = nth_comma(line, 3);
      if (key_end != std::string::npos) upsert(runs_, line.substr(0, key_end), line + "\n");
    }
    std::ifstream failures(dir_ + "/failures.txt");
    while (std::getline(failures, line)) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) upsert(failures_, line.substr(0, colon), line + "\n");
    }
  }

  /// Records a finished run and its failure message (empty: none). Not collective.
  void record(const RunRow& row, const std::string& failure) {
    upsert(runs_, row.key(), row.csv());
    const std::string fkey = row.problem + " " + row.method + " seed " + std::to_string(row.seed);
    std::erase_if(failures_, [&](const auto& e) { return e.first == fkey; });
    if (!failure.empty()) upsert(failures_, fkey, fkey + ": " + failure + "\n");
  }
  /// Records a failure that is not a run (a problem that could not be built). Not collective.
  void record_failure(const std::string& key, const std::string& message) {
    upsert(failures_, key, key + ": " + message + "\n");
  }
  /// Rewrites both files atomically. Collective.
  void write() const {
    std::string runs = kRunsHeader, failures;
    for (const auto& e : runs_) runs += e.second;
    for (const auto& e : failures_) failures += e.second;
    bilevel::write_file_atomically(comm_, dir_ + "/runs.csv", runs, "--out");
    bilevel::write_file_atomically(comm_, dir_ + "/failures.txt", failures, "--out");
  }

 private:
  using Lines = std::vector<std::pair<std::string, std::string>>;
  static void upsert(Lines& lines, const std::string& key, const std::string& text) {
    for (auto& e : lines)
      if (e.first == key) {
        e.second = text;
        return;
      }
    lines.emplace_back(key, text);
  }
  static std::size_t nth_comma(const std::string& s, int n) {
    std::size_t pos = 0;
    for (int i = 0; i < n; ++i) {
      pos = s.find(',', i == 0 ? 0 : pos + 1);
      if (pos == std::string::npos) return pos;
    }
    return pos;
  }
  MPI_Comm comm_;
  std::string dir_;
  Lines runs_, failures_;
};

/// Rank 0 creates the folder (and its parents); failure is an InputError on every rank. Collective.
void make_directory(MPI_Comm comm, const std::string& path) {
  int rank = 0, ok = 1;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    ok = ec ? 0 : 1;
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  if (!ok) throw bilevel::InputError("cannot create folder " + path + " (option --out)");
}

/// Rank 0 removes the outputs of an earlier run with the same name, so a failed run leaves none. Collective.
void remove_outputs(MPI_Comm comm, const std::string& stem) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) {
    std::remove((stem + ".csv").c_str());
    std::remove((stem + ".json").c_str());
  }
  MPI_Barrier(comm);
}

/// Builds a suite problem from its defaults: quadratic with κ = 1e3 (dy 2000, dx 100), logreg on the
/// ijcnn1 files, hyperclean on the Debian Fashion-MNIST files with LancBiO's deterministic sizes (5,000
/// training rows, 5,000 validation rows, p = 0.5; algorithms.md 5.6), finite_sum_quadratic and
/// spectral_logsumexp with the papers' sizes (their own defaults). -bilevel_<problem>_* on the command line
/// override the suite's choices. Collective.
std::shared_ptr<bilevel::BilevelProblem> make_suite_problem(MPI_Comm comm,
                                                            const std::string& name,
                                                            const SuiteSettings& settings) {
  bilevel::ProblemInputs inputs;
  if (name == "quadratic") {
    default_option("-bilevel_quadratic_condition", "1e3");
    default_option("-bilevel_quadratic_dim_lower", "2000");
    default_option("-bilevel_quadratic_dim_upper", "100");
  } else if (name == "logreg") {
    inputs = settings.logreg_inputs;
  } else if (name == "hyperclean") {
    inputs.dataset = "fashion-mnist";
    default_option("-bilevel_hyperclean_n_train", "5000");
    default_option("-bilevel_hyperclean_n_val", "5000");
  }
  return bilevel::make_problem(comm, name, inputs);
}

/// One run of `method` on the (reused) problem: fresh x, y from initial_point, trace and summary into
/// dir/<method>-seed<seed>.{csv,json}. A failure (exception thrown collectively, e.g. a missing oracle)
/// or divergence (negative converged reason) is returned as `failure`. Collective.
/// Keeps (iteration, wall time without monitoring) of every record: the calibration run's rate.
class RateMonitor : public bilevel::Monitor {
 public:
  explicit RateMonitor(std::vector<std::pair<std::int64_t, double>>& points) : points_(points) {}
  void on_iteration(const bilevel::IterationRecord& r) override {
    points_.emplace_back(r.iteration, r.wall_time);
  }

 private:
  std::vector<std::pair<std::int64_t, double>>& points_;
};

/// -bilevel_monitor_every for the runs of `method` on `problem`: a calibration run (seed 0, a fifth of the
/// budget and at most 3 s, a record every iteration, no test metrics, no outputs) measures
/// its iterations per second (setup included), and the runs get about kRecordsPerRun records or more. 1 when
/// the calibration fails or is too short (the run itself reports a failure). Collective.
std::int64_t calibrate_monitor_every(MPI_Comm comm,
                                     const std::shared_ptr<bilevel::BilevelProblem>& problem,
                                     const std::string& method,
                                     double budget,
                                     ScopedRunOptions& options) {
  std::vector<std::pair<std::int64_t, double>> points;
  options.set("-bilevel_type", method);
  options.set("-bilevel_seed", "0");
  options.set("-bilevel_max_time", format_number(std::min(3.0, budget / 5)));
  options.set("-bilevel_monitor_every", "1");
  options.set("-bilevel_monitor_test", "false");
  try {
    problem->reset_counts();
    bilevel::BilevelSolver solver(comm);
    solver.set_problem(problem);
    solver.add_monitor(std::make_unique<RateMonitor>(points));
    solver.set_from_options();
    bilevel::petsc::VecHandle x = problem->create_upper_vec(), y = problem->create_lower_vec();
    problem->initial_point(x, y);
    solver.solve(x, y);
  } catch (const bilevel::Error&) {
    // the run reports it
  }
  problem->reset_counts();
  if (points.size() < 3) return 1;
  // Iterations per second of solver time over the whole calibration, the first iteration (with the method's
  // setup: SLEPc estimates, factorizations) included: a few cheap iterations at the end of a short
  // calibration would otherwise promise far more iterations than the run makes.
  const auto& last = points.back();
  if (!(last.second > 0) || last.first < 1) return 1;
  const double rate = static_cast<double>(last.first) / last.second;
  // The run's loop ends at 90% of the budget (-bilevel_final_reserve); half of that for the load of a
  // shared machine and the records' own cost.
  const double expected = 0.5 * rate * 0.9 * budget;
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(expected / kRecordsPerRun));
}

/// calibrate_monitor_every with rank 0's answer on every rank: each rank's clock gives its own rate, and
/// ranks that disagreed on the record schedule would deadlock in the records' collectives. Collective.
std::int64_t agreed_monitor_every(MPI_Comm comm,
                                  const std::shared_ptr<bilevel::BilevelProblem>& problem,
                                  const std::string& method,
                                  double budget,
                                  ScopedRunOptions& options) {
  long long every = calibrate_monitor_every(comm, problem, method, budget, options);
  MPI_Bcast(&every, 1, MPI_LONG_LONG, 0, comm);
  return static_cast<std::int64_t>(every);
}

RunRow run_method(MPI_Comm comm,
                  const std::shared_ptr<bilevel::BilevelProblem>& problem,
                  const std::string& method,
                  long seed,
                  double budget,
                  std::int64_t monitor_every,
                  const std::string& dir,
                  ScopedRunOptions& options,
                  std::string& failure) {
  RunRow row;
  row.problem = problem->name();
  row.method = method;
  row.seed = seed;
  row.monitor_every = monitor_every;
  failure.clear();
  const std::string stem = dir + "/" + method + "-seed" + std::to_string(seed);
  remove_outputs(comm, stem);
  options.set("-bilevel_type", method);
  options.set("-bilevel_seed", std::to_string(seed));
  options.set("-bilevel_max_time", format_number(budget));
  options.set("-bilevel_monitor_every", std::to_string(monitor_every));
  options.set("-bilevel_monitor_test",
              has(problem->capabilities(), bilevel::Capability::TestSet) ? "true" : "false");
  try {
    problem->reset_counts();
    bilevel::BilevelSolver solver(comm);
    solver.set_problem(problem);
    solver.add_monitor(std::make_unique<bilevel::CsvTraceMonitor>(comm, stem + ".csv"));
    solver.set_from_options();
    bilevel::petsc::VecHandle x = problem->create_upper_vec(), y = problem->create_lower_vec();
    problem->initial_point(x, y);
    const bilevel::SolveReport report = solver.solve(x, y);
    const auto extras = report.reason > bilevel::ConvergedReason::Iterating
                            ? problem->summary_extras(x, y)
                            : std::vector<std::pair<std::string, PetscReal>>{};
    bilevel::write_file_atomically(comm, stem + ".json", bilevel::summary_json(report, extras), "--out");
    row.reason = std::string(bilevel::to_string(report.reason));
    row.iterations = report.outer_iterations;
    row.wall_time_s = report.wall_time_s;
    row.upper_objective = report.upper_objective;
    if (report.test_accuracy) row.test_accuracy = *report.test_accuracy;
    row.counts = report.counts;
    row.status = report.reason < bilevel::ConvergedReason::Iterating ? "diverged" : "ok";
    if (row.status == "diverged")
      failure =
          "diverged (" + row.reason + ") after " + std::to_string(report.outer_iterations) + " iterations";
  } catch (const bilevel::Error& e) {
    failure = std::string("error: ") + e.what();
    problem->reset_counts();
  }
  return row;
}

/// Shell word for POSIX sh.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// report_methods.py: the installed copy (share/bilevel/ next to this program's bin/), else the source
/// tree's.
std::string report_script() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::filesystem::path installed = self.parent_path() / BILEVEL_BENCH_REPORT_RELATIVE;
    if (std::filesystem::exists(installed, ec)) return installed.lexically_normal().string();
  }
  return BILEVEL_BENCH_REPORT_SOURCE;
}

/// Rank 0 runs `/usr/bin/python3 report_methods.py DIR` when both exist; returns its exit code (or -1 when
/// skipped). Collective.
int run_report(MPI_Comm comm, const std::string& dir) {
  int rank = 0, rc = -1;
  MPI_Comm_rank(comm, &rank);
  const std::string python = "/usr/bin/python3", script = report_script();
  if (rank == 0) {
    if (std::filesystem::exists(python) && std::filesystem::exists(script)) {
      const std::string command = python + " " + shell_quote(script) + " " + shell_quote(dir);
      std::printf("bilevel-bench: %s\n", command.c_str());
      std::fflush(stdout);
      rc = std::system(command.c_str());
    } else {
      std::printf(
          "bilevel-bench: no %s or no %s: run the report script by hand\n", python.c_str(), script.c_str());
    }
    std::fflush(stdout);
  }
  MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
  return rc;
}

int run_methods(const SuiteSettings& settings) {
  MPI_Comm comm = PETSC_COMM_WORLD;
  if (settings.out.empty()) throw bilevel::InputError("bilevel-bench methods needs --out DIR");
  if (settings.seeds < 1) throw bilevel::InputError("bad value for --seeds: expected a positive integer");
  if (settings.max_time && !(*settings.max_time > 0))
    throw bilevel::InputError("bad value for --max-time: expected a positive number of seconds");
  const std::vector<std::string> known_problems{
      "quadratic", "logreg", "hyperclean", "finite_sum_quadratic", "spectral_logsumexp"};
  for (const auto& p : settings.problems)
    if (std::find(known_problems.begin(), known_problems.end(), p) == known_problems.end())
      throw bilevel::InputError("bad value '" + p +
                                "' for --problems: expected quadratic, logreg, hyperclean, "
                                "finite_sum_quadratic, spectral_logsumexp");
  const std::vector<std::string> registered = bilevel::algorithm_registry().names();
  std::vector<std::string> methods = settings.methods.empty() ? registered : settings.methods;
  for (const auto& m : methods)
    if (!bilevel::algorithm_registry().contains(m)) {
      std::string list;
      for (const auto& n : registered) list += (list.empty() ? "" : ", ") + n;
      throw bilevel::InputError("unknown method '" + m + "' for --methods: registered are " + list);
    }
  // The suite owns the run length: the time budget, not an iteration cap, ends a run; traces and summaries
  // describe the same last iterate (no final accurate lower solve) unless the command line says otherwise.
  default_option("-bilevel_max_it", "100000000");
  default_option("-bilevel_final_lower_solve", "false");
  // The record schedule: the command line's, else calibrated per (problem, method); read once, since the
  // suite sets it per run.
  auto given_int = [](const char* key) -> std::optional<PetscInt> {
    PetscInt v = 0;
    PetscBool set = PETSC_FALSE;
    BILEVEL_PETSC_CALL(PetscOptionsGetInt(nullptr, nullptr, key, &v, &set));
    return set ? std::optional<PetscInt>(v) : std::nullopt;
  };
  const std::optional<PetscInt> user_every = given_int("-bilevel_monitor_every");

  make_directory(comm, settings.out);
  SuiteLedger ledger(comm, settings.out);
  ledger.write();
  int ranks = 1;
  MPI_Comm_size(comm, &ranks);
  double planned = 0;
  for (const auto& p : settings.problems)
    planned +=
        settings.max_time.value_or(default_budget(p)) * static_cast<double>(methods.size() * settings.seeds);
  const std::size_t total =
      settings.problems.size() * methods.size() * static_cast<std::size_t>(settings.seeds);
  BILEVEL_PETSC_CALL(
      PetscPrintf(comm,
                  "methods suite: %zu problem(s) x %zu method(s) x %ld seed(s) = %zu runs on %d rank%s, "
                  "budgets sum to %.0f min\n",
                  settings.problems.size(),
                  methods.size(),
                  settings.seeds,
                  total,
                  ranks,
                  ranks == 1 ? "" : "s",
                  planned / 60.0));
  std::size_t done = 0;
  for (const auto& name : settings.problems) {
    const double budget = settings.max_time.value_or(default_budget(name));
    std::shared_ptr<bilevel::BilevelProblem> problem;
    const double t0 = now();
    try {
      problem = make_suite_problem(comm, name, settings);
    } catch (const bilevel::Error& e) {
      BILEVEL_PETSC_CALL(PetscPrintf(comm, "  problem %s skipped: %s\n", name.c_str(), e.what()));
      ledger.record_failure("problem " + name, std::string("not built: ") + e.what());
      ledger.write();
      done += methods.size() * static_cast<std::size_t>(settings.seeds);
      continue;
    }
    BILEVEL_PETSC_CALL(
        PetscPrintf(comm, "problem %s built in %.1f s; %.0f s per run\n", name.c_str(), now() - t0, budget));
    const std::string dir = settings.out + "/" + name;
    make_directory(comm, dir);
    ScopedRunOptions options;  // cleared when the problem is done
    for (const auto& [key, value] : protocol_options(*problem)) options.set_default(key, value);
    for (const auto& method : methods) {
      const std::int64_t every = user_every ? std::max<PetscInt>(1, *user_every)
                                            : agreed_monitor_every(comm, problem, method, budget, options);
      for (long seed = 0; seed < settings.seeds; ++seed) {
        std::string failure;
        const RunRow row = run_method(comm, problem, method, seed, budget, every, dir, options, failure);
        ledger.record(row, failure);
        ledger.write();
        ++done;
        std::string line = row.reason + ", " + std::to_string(row.iterations) + " it (record every " +
                           std::to_string(row.monitor_every) + "), " +
                           format_number(std::round(row.wall_time_s * 100) / 100) + " s, F " +
                           format_number(row.upper_objective);
        if (row.test_accuracy) line += ", test acc " + format_number(*row.test_accuracy);
        if (!failure.empty()) line = failure;
        BILEVEL_PETSC_CALL(PetscPrintf(comm,
                                       "  [%zu/%zu] %s %s seed %ld: %s\n",
                                       done,
                                       total,
                                       name.c_str(),
                                       method.c_str(),
                                       seed,
                                       line.c_str()));
      }
    }
  }
  BILEVEL_PETSC_CALL(
      PetscPrintf(comm, "methods suite: outputs in %s (runs.csv, failures.txt)\n", settings.out.c_str()));
  if (settings.report) {
    const int rc = run_report(comm, settings.out);
    if (rc > 0)
      BILEVEL_PETSC_CALL(PetscPrintf(comm, "bilevel-bench: the report script failed (exit %d)\n", rc));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description cli("bilevel-bench options");
  cli.add_options()("help", "print this help")(
      "problem", po::value<std::string>()->default_value("logreg"), "logreg | hyperclean")(
      "train", po::value<std::string>(), "training data file")(
      "validation", po::value<std::string>(), "validation data file")(
      "test", po::value<std::string>(), "test data file")("summary", po::value<std::string>(), "JSON output")(
      "repeat", po::value<long>()->default_value(50), "HVPs per timing round")(
      "out", po::value<std::string>(), "output folder (methods suite)")(
      "seeds", po::value<long>()->default_value(3), "seeds 0..N-1 per method (methods suite)")(
      "max-time",
      po::value<double>(),
      "seconds per run (methods suite; default quadratic 5, spectral_logsumexp and logreg 12, hyperclean "
      "18)")("problems",
             po::value<std::string>()->default_value("quadratic,spectral_logsumexp,logreg,hyperclean"),
             "comma-separated problems (methods suite; also finite_sum_quadratic, spectral_logsumexp)")(
      "methods",
      po::value<std::string>(),
      "comma-separated methods (methods suite; default every registered one)")(
      "no-report", "do not run report_methods.py at the end (methods suite)")(
      "rows", po::value<long>()->default_value(400000), "rows of the generated problem (scale)")(
      "cols", po::value<long>()->default_value(20000), "features of the generated problem (scale)")(
      "nnz-per-row", po::value<long>()->default_value(40), "nonzeros per generated row (scale)")(
      "seed", po::value<long>()->default_value(1), "seed of the generated problem (scale)")(
      "iterations", po::value<long>()->default_value(3), "outer iterations timed (scale)")(
      "data-dir", po::value<std::string>()->default_value("."), "folder for the generated files (scale)")(
      "keep-data", "keep the generated files (scale)");
  std::vector<std::string> long_args, petsc_args;
  bilevel::split_arguments(argc,
                           argv,
                           {"problem",
                            "train",
                            "validation",
                            "test",
                            "summary",
                            "repeat",
                            "out",
                            "seeds",
                            "max-time",
                            "problems",
                            "methods",
                            "rows",
                            "cols",
                            "nnz-per-row",
                            "seed",
                            "iterations",
                            "data-dir"},
                           {"help", "no-report", "keep-data"},
                           long_args,
                           petsc_args);
  std::string suite, parse_error;
  if (!petsc_args.empty() && petsc_args.front().rfind("-", 0) != 0) {
    suite = petsc_args.front();
    petsc_args.erase(petsc_args.begin());
  }
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(long_args)
                  .options(cli)
                  .style(po::command_line_style::unix_style ^ po::command_line_style::allow_short)
                  .run(),
              vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    parse_error = e.what();
  }
  std::vector<char*> pargv{argv[0]};
  for (auto& a : petsc_args) pargv.push_back(a.data());
  pargv.push_back(nullptr);
  int pargc = static_cast<int>(pargv.size()) - 1;
  char** pargv_ptr = pargv.data();
  bilevel::petsc::Session session(&pargc, &pargv_ptr, nullptr);
  return bilevel::guarded_main("bilevel-bench", [&]() -> int {
    if (!parse_error.empty()) throw bilevel::InputError(parse_error);
    if (vm.count("help") || suite.empty()) {
      std::ostringstream s;
      s << "usage: bilevel-bench hvp|methods|scale [options]\n" << cli;
      BILEVEL_PETSC_CALL(PetscPrintf(PETSC_COMM_WORLD, "%s", s.str().c_str()));
      return suite.empty() && !vm.count("help") ? 1 : 0;
    }
    if (suite == "hvp") return run_hvp(vm);
    if (suite == "scale") return bilevel::bench::run_scale(vm);
    if (suite == "methods") {
      SuiteSettings settings;
      if (vm.count("out")) settings.out = vm["out"].as<std::string>();
      settings.seeds = vm["seeds"].as<long>();
      if (vm.count("max-time")) settings.max_time = vm["max-time"].as<double>();
      settings.problems = split_list(vm["problems"].as<std::string>());
      if (vm.count("methods")) settings.methods = split_list(vm["methods"].as<std::string>());
      // ijcnn1 as the bilevel literature uses it: train split (lower level), test split (upper level); the
      // test metrics are measured on the test split too (algorithms.md 5.5.2).
      auto path = [&](const char* key, const std::string& def) {
        return vm.count(key) ? vm[key].as<std::string>() : def;
      };
      settings.logreg_inputs.train = path("train", "../shared/data/ijcnn1.trn.bz2");
      settings.logreg_inputs.validation = path("validation", "../shared/data/ijcnn1.tst.bz2");
      settings.logreg_inputs.test = path("test", settings.logreg_inputs.validation);
      settings.report = !vm.count("no-report");
      return run_methods(settings);
    }
    throw bilevel::InputError("unknown suite '" + suite + "': expected hvp, methods or scale");
  });
}
