#pragma once
/// \file BilevelSolver: the object users hold, with Tao's life cycle (create, set problem,
/// set_from_options, solve, view).
#include <petscviewer.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/monitor.hpp"
#include "bilevel/core/registry.hpp"
#include "bilevel/core/tuned_settings.hpp"

namespace bilevel {

class UpperStepper;

/// Result of solve(): the numbers of the --summary JSON.
struct SolveReport {
  std::string problem, method;
  int ranks = 1;
  std::int64_t outer_iterations = 0;
  double wall_time_s = 0;
  PetscReal upper_objective = 0;  ///< f(x, y) at the end (mean validation loss for data problems)
  PetscReal hypergradient_norm = 0;
  std::optional<PetscReal> true_hypergradient_norm, optimal_upper_objective;
  std::optional<PetscReal> test_loss, test_accuracy;
  /// The exact metrics and the error bound of the last record that had them (IterationRecord; null where
  /// never computed).
  std::optional<PetscReal> value_function, exact_hypergradient_norm, hypergradient_relative_error,
      hypergradient_cosine, lower_distance, hypergradient_error_bound;
  OracleCounts counts;
  ConvergedReason reason = ConvergedReason::Iterating;
  std::uint64_t seed = 0;
  /// The accurate hypergradient norm that confirmed CONVERGED_GATOL (accurate_hypergradient_norm).
  std::optional<PetscReal> verified_hypergradient_norm;
  std::int64_t gatol_rejections = 0;  ///< estimates <= gatol that the accurate hypergradient contradicted
  int stop_signal = 0;                ///< the signal that cancelled the run (CANCELLED_SIGNAL), else 0
  std::int64_t checkpoints_written = 0;
  std::int64_t checkpoint_bytes = 0;                     ///< size of the last checkpoint written
  double checkpoint_seconds = 0;                         ///< time spent writing checkpoints (all of them)
  std::optional<std::int64_t> restarted_from_iteration;  ///< --restart: the checkpoint's iteration
  std::int64_t peak_rss_bytes = 0;       ///< peak resident memory of the process, max over ranks (so far)
  std::int64_t data_bytes_per_rank = 0;  ///< BilevelProblem::local_data_bytes(), max over ranks
  /// Share of the outer loop's time spent in the coordinator's decisions at iteration boundaries (rank 0's
  /// clock tests and the one reduction that shares them), measured on rank 0.
  double coordinator_fraction = 0;
  /// Bytes sent per outer iteration (the method's step and the boundary decision), max over ranks
  /// (petsc/comm_counter.hpp)
  double bytes_communicated_per_iteration = 0;
};

/// Settings of the outer loop. Options database keys in brackets.
struct SolverOptions {
  std::int64_t max_iterations = 100;  ///< [-bilevel_max_it] 64-bit: a budget beyond PetscInt is kept
  /// [-bilevel_max_time] seconds for the whole run, 0 = no limit; counted from mark_run_start() (program
  /// start: loading, the solve and the final phase) or else from the start of solve(). "slurm": the job's
  /// remaining time (core/run_clock.hpp).
  PetscReal max_time = 0;
  bool max_time_from_slurm = false;
  /// [-bilevel_final_reserve] fraction of max_time kept for the final phase (final lower solve, evaluation,
  /// outputs): the outer loop stops when max_time * (1 - final_reserve) is spent
  PetscReal final_reserve = 0.1;
  std::string checkpoint;  ///< [-bilevel_checkpoint] file (bilevel-solve --checkpoint); "" = none
  std::int64_t checkpoint_interval = 100;  ///< [-bilevel_checkpoint_interval] iterations between checkpoints
  PetscReal checkpoint_seconds = 0;  ///< [-bilevel_checkpoint_seconds] also after this many seconds (0: off)
  std::string restart;               ///< [-bilevel_restart] checkpoint to continue from (--restart)
  /// [-bilevel_gatol] stop when the hypergradient estimate norm is <= gatol and the accurate hypergradient
  /// at that x confirms it (BilevelSolver::solve, "the gatol test")
  PetscReal gatol = 0;
  std::uint64_t seed = 0;         ///< [-bilevel_seed] any value in [0, 2^64 − 1]
  PetscInt batch_size = 0;        ///< [-bilevel_batch_size] lower minibatch, 0 = full
  PetscInt upper_batch_size = 0;  ///< [-bilevel_upper_batch_size] upper minibatch, 0 = full
  PetscInt monitor_every = 1;     ///< [-bilevel_monitor_every] evaluate/monitor every k iterations
  bool monitor_test = false;      ///< [-bilevel_monitor_test] test metrics in each record
  /// [-bilevel_monitor_exact_every] the exact metrics of IterationRecord (accurate lower and linear solves,
  /// docs/metrics.md) in the records of every k-th iteration; 0: none, except on closed-form problems, where
  /// they are cheap and in every record
  PetscInt monitor_exact_every = 0;
  bool final_lower_solve =
      true;  ///< [-bilevel_final_lower_solve] solve the lower level accurately at the end
  PetscReal final_lower_rtol = 1e-6;  ///< [-bilevel_final_lower_rtol]
  bool test_derivatives = false;  ///< [-bilevel_test_derivatives] run the derivative checker before solving
};

/// Collective on the communicator given at construction, like every method below.
class BilevelSolver {
 public:
  explicit BilevelSolver(MPI_Comm comm);
  ~BilevelSolver();
  BilevelSolver(const BilevelSolver&) = delete;
  BilevelSolver& operator=(const BilevelSolver&) = delete;

  void set_problem(std::shared_ptr<BilevelProblem> problem);
  /// Like TaoSetType(): selects a registered method; unknown names throw InputError listing the names.
  void set_type(const std::string& type);
  const std::string& type() const { return type_; }
  /// Reads -bilevel_type, -bilevel_* outer-loop keys, the stepper's and the method's keys, with the current
  /// settings as defaults. Idempotent: a second call with the same database leaves the solver as the first
  /// did (one progress monitor at most, the same stepper settings).
  void set_from_options();
  void add_monitor(std::unique_ptr<Monitor> monitor);
  /// Like TaoMonitorSet: `function(record, ctx)` at the start point (iteration 0) and after every monitored
  /// iteration; `destroy(&ctx)` (may be null) when the monitor goes (monitor_cancel, the solver's
  /// destruction). Not collective.
  void monitor_set(MonitorFunction function, void* ctx, MonitorContextDestroy destroy);
  /// Like TaoMonitorCancel: removes every monitor (add_monitor's, monitor_set's, -bilevel_monitor's), calling
  /// their destroy functions. -bilevel_monitor_cancel does this in set_from_options, before it reads
  /// -bilevel_monitor. Collective.
  void monitor_cancel();

  /// Like TaoSetOptionsPrefix: every key this solver, its upper stepper, its method and the KSPs and EPS
  /// it creates read starts with -<prefix>bilevel_ (`-a_bilevel_type` for prefix "a_"), so two solvers in
  /// one program take different options. A prefix must not start with a dash. Not collective.
  void set_options_prefix(const std::string& prefix);
  /// Like TaoAppendOptionsPrefix: the prefix becomes prefix() + `prefix`. Not collective.
  void append_options_prefix(const std::string& prefix);
  const std::string& options_prefix() const { return prefix_; }
  /// The reason the last solve() stopped (ITERATING before the first). Not collective.
  ConvergedReason converged_reason() const { return last_reason_; }
  SolverOptions& options() { return options_; }
  /// A fact about the run's inputs stored in checkpoints and compared at restart ("data train" ->
  /// "ijcnn1.trn.bz2, 12345 bytes"): a checkpoint of other inputs is refused. Not collective.
  void add_checkpoint_fact(const std::string& key, const std::string& value) { facts_[key] = value; }
  /// x, y: initial guess in (create them with the problem's create_*_vec), solution out.
  ///
  /// Stopping tests, after every step in this order: the step's own negative reason (a numerical failure);
  /// DIVERGED_NAN for a non-finite x, y or estimate; the gatol test; the time budget; max_it before the next
  /// step. The gatol test does not trust the step's estimate alone (an inexact lower or linear solve can
  /// make it small far from a stationary point): an estimate <= gatol is a candidate, and the run stops with
  /// CONVERGED_GATOL only when accurate_hypergradient_norm at that x (closed form, or accurate lower solve
  /// and CG to relative 1e-8) is <= gatol too. A rejected candidate waits 1, 2, 4, ... iterations before the
  /// next check, so a persistently wrong estimate costs O(log k) checks. The checks' oracle calls are not
  /// counted in the report (they are the solver's, not the method's); their time is in the wall time.
  ///
  /// Operations (docs/operations.md): with -bilevel_checkpoint the state of the run (x, y, the stepper's and
  /// the method's state, counters, elapsed time; core/checkpoint.hpp) is written every checkpoint_interval
  /// iterations, every checkpoint_seconds, and after the last iteration (before the final phase); with
  /// -bilevel_restart the run continues from such a file, which must come from the same problem, inputs,
  /// method and options (those in restart_free_options() excepted). A stop signal (core/interrupt.hpp) seen
  /// by any rank ends the run after the current iteration on every rank with CANCELLED_SIGNAL (no final lower
  /// solve; checkpoint, trace and report written).
  ///
  /// At the end, as PETSc solvers do, the options -<prefix>bilevel_converged_reason [VIEWER] and
  /// -<prefix>bilevel_view [VIEWER] (e.g. ascii:FILE, ascii::ascii_info_detail; read by set_from_options,
  /// so a bad viewer is an error before the solve) print the reason and view().
  SolveReport solve(Vec x, Vec y);
  /// The -bilevel_ options (without prefix) that may differ between a checkpoint and its restart.
  static const std::vector<std::string>& restart_free_options();
  /// Method, settings and problem: what -bilevel_view prints. Viewer null = stdout of comm. With the format
  /// PETSC_VIEWER_ASCII_INFO_DETAIL pushed on the viewer, also the oracle counts of the last solve.
  void view(PetscViewer viewer = nullptr) const;
  Algorithm& algorithm();

 private:
  template <typename F>
  void for_each_monitor(F&& f);
  /// The end of solve(): -bilevel_converged_reason and -bilevel_view through the viewers that
  /// set_from_options opened. Collective.
  void view_from_options(const SolveReport& report);
  /// With PETSC_VIEWER_ASCII_INFO_DETAIL: the last solve's reason, iterations and oracle counts. Collective.
  void view_last_solve(PetscViewer viewer) const;
  MPI_Comm comm_;
  std::string prefix_;  // set_options_prefix's
  ConvergedReason last_reason_ = ConvergedReason::Iterating;
  std::optional<SolveReport> last_report_;  // for view() with ascii_info_detail
  // -bilevel_view and -bilevel_converged_reason, opened (so checked) by set_from_options, used at the end
  // of solve()
  std::optional<petsc::OptionsReader::Viewer> view_viewer_, reason_viewer_;
  std::shared_ptr<BilevelProblem> problem_;
  std::string type_;
  std::unique_ptr<Algorithm> algorithm_;
  std::unique_ptr<UpperStepper> upper_;             // created by set_problem from the problem's hints
  std::vector<std::unique_ptr<Monitor>> monitors_;  // add_monitor's
  std::unique_ptr<Monitor> progress_;               // -bilevel_monitor's, replaced by each set_from_options
  SolverOptions options_;
  bool from_options_ = false;
  bool defaults_from_hints_ = false;
  std::optional<TunedSettings> tuned_;        // the tuned settings of (problem, method) in use, for view
  std::map<std::string, std::string> facts_;  // add_checkpoint_fact's
};

}  // namespace bilevel
