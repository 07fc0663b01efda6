#include "bilevel/core/solver.hpp"

#include <petsctime.h>

#include <cmath>

#include "bilevel/core/accurate_hypergradient.hpp"
#include "bilevel/core/derivative_check.hpp"
#include "bilevel/core/lower_solve.hpp"
#include "bilevel/core/tuned_settings.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/session.hpp"

namespace bilevel {
namespace {

double now() {
  PetscLogDouble t = 0;
  (void)PetscTime(&t);
  return t;
}

/// Missing capabilities of `have` among `need`, as names.
std::string missing(Capability need, Capability have) {
  return to_string(static_cast<Capability>(static_cast<unsigned>(need) & ~static_cast<unsigned>(have)));
}

/// Whether the time budget is spent, decided on rank 0 and broadcast: the ranks' clocks differ, and ranks
/// that disagreed would leave the outer loop at different iterations and deadlock. Collective.
bool time_budget_spent(MPI_Comm comm, double elapsed, double budget) {
  int spent = elapsed >= budget ? 1 : 0;
  MPI_Bcast(&spent, 1, MPI_INT, 0, comm);
  return spent != 0;
}

}  // namespace

BilevelSolver::BilevelSolver(MPI_Comm comm) : comm_(comm) { petsc::initialize_package(); }
BilevelSolver::~BilevelSolver() = default;

void BilevelSolver::set_problem(std::shared_ptr<BilevelProblem> problem) {
  problem_ = std::move(problem);
  upper_ = problem_ ? std::make_unique<UpperStepper>(problem_->hints()) : nullptr;
  defaults_from_hints_ = false;
  from_options_ = false;
}

void BilevelSolver::set_type(const std::string& type) {
  algorithm_ = algorithm_registry().create(type);
  type_ = type;
  from_options_ = false;
}

Algorithm& BilevelSolver::algorithm() {
  if (!algorithm_) set_type(type_.empty() ? algorithm_registry().default_name() : type_);
  return *algorithm_;
}

void BilevelSolver::add_monitor(std::unique_ptr<Monitor> monitor) { monitors_.push_back(std::move(monitor)); }

void BilevelSolver::monitor_set(MonitorFunction function, void* ctx, MonitorContextDestroy destroy) {
  if (!function) throw Error("BilevelSolver::monitor_set: the monitor function is null");
  monitors_.push_back(std::make_unique<CallbackMonitor>(function, ctx, destroy));
}

void BilevelSolver::monitor_cancel() {
  monitors_.clear();
  progress_.reset();
}

void BilevelSolver::set_options_prefix(const std::string& prefix) {
  if (!prefix.empty() && prefix.front() == '-')
    throw InputError("BilevelSolver::set_options_prefix: prefix '" + prefix + "' must not start with a dash");
  prefix_ = prefix;
  from_options_ = false;
}

void BilevelSolver::append_options_prefix(const std::string& prefix) {
  set_options_prefix(prefix_ + prefix);
}

template <typename F>
void BilevelSolver::for_each_monitor(F&& f) {
  for (auto& m : monitors_) f(*m);
  if (progress_) f(*progress_);
}

void BilevelSolver::set_from_options() {
  if (!problem_) throw Error("BilevelSolver::set_from_options: call set_problem first");
  const petsc::ScopedOptionsPrefix scoped_prefix(prefix_);  // KSPs/EPS made while reading take it too
  petsc::OptionsReader opts(comm_, prefix_ + "bilevel_", "Bilevel solver options (-" + prefix_ + "bilevel_*)");
  std::string names;
  for (const auto& n : algorithm_registry().names()) names += (names.empty() ? "" : "|") + n;
  const std::string type =
      opts.string("type", type_.empty() ? algorithm_registry().default_name() : type_, "bilevel method (" + names + ")");
  if (type != type_ || !algorithm_) set_type(type);
  SolverOptions& o = options_;
  const ProblemHints hints = problem_->hints();
  if (!defaults_from_hints_) {
    if (hints.max_iterations) o.max_iterations = *hints.max_iterations;
    if (hints.max_time) o.max_time = *hints.max_time;
  }
  defaults_from_hints_ = true;
  // The settings tuned for this (problem, method) pair, if the library ships a file of them, become the
  // defaults of every reader below (each sub-reader takes the keys under its prefix); the user's options win.
  const bool use_tuned = opts.boolean("tuned", true, "apply the settings tuned for this problem and method");
  const std::string tuned_dir = opts.string(
      "tuned_dir", "", "folder of tuned settings PROBLEM/METHOD.opts (default: share/bilevel/tuned of the installed "
                       "library, else the source tree's cluster/tuned)");
  tuned_.reset();
  if (use_tuned) tuned_ = load_tuned_settings(comm_, problem_->name(), type_, tuned_dir);
  if (tuned_) opts.set_defaults(tuned_->values);
  o.max_iterations = opts.integer64("max_it", o.max_iterations, "maximum outer iterations", 0);
  o.max_time = opts.real("max_time", o.max_time, "time budget in seconds (0: none)", 0.0);
  o.gatol = opts.real("gatol", o.gatol,
                      "stop when the hypergradient estimate norm <= gatol and an accurate hypergradient at that "
                      "x confirms it (closed form, or accurate lower solve + CG; see docs/architecture.md)",
                      0.0);
  o.seed = opts.unsigned64("seed", o.seed, "random seed");
  o.batch_size = opts.integer("batch_size", o.batch_size, "lower-level minibatch size (0: full batch)", 0);
  o.upper_batch_size =
      opts.integer("upper_batch_size", o.upper_batch_size, "upper-level minibatch size (0: full)", 0);
  o.monitor_every = opts.integer("monitor_every", o.monitor_every, "evaluate and monitor every k iterations", 1);
  o.monitor_test = opts.boolean("monitor_test", o.monitor_test, "test metrics in every monitor record");
  o.final_lower_solve =
      opts.boolean("final_lower_solve", o.final_lower_solve, "solve the lower level accurately at the end");
  o.final_lower_rtol = opts.real("final_lower_rtol", o.final_lower_rtol, "relative tolerance of that solve", 0.0);
  o.test_derivatives =
      opts.boolean("test_derivatives", o.test_derivatives, "check every oracle by finite differences first");
  // used at the end of solve() (view_from_options); opened here, so a bad viewer fails before the solve
  view_viewer_ = opts.viewer("view", "view the solver at the end of solve (ascii::ascii_info_detail: also the "
                                     "last solve's oracle counts)");
  reason_viewer_ = opts.viewer("converged_reason", "print why the solve stopped, at its end");
  if (opts.boolean("monitor_cancel", false, "remove every monitor, also those set in code (TaoMonitorCancel)"))
    monitor_cancel();
  // replaced, not appended: a second call keeps one progress monitor
  progress_.reset();
  if (auto v = opts.viewer("monitor", "one progress line per iteration (format ascii_csv: CSV rows)"))
    progress_ = std::make_unique<ProgressMonitor>(v->viewer, v->format, o.monitor_every);
  petsc::OptionsReader upper_opts = opts.sub("upper_", "Upper-level stepper (-" + prefix_ + "bilevel_upper_*)");
  upper_->set_from_options(upper_opts);
  petsc::OptionsReader method_opts =
      opts.sub(type_ + "_", "Method " + type_ + " (-" + prefix_ + "bilevel_" + type_ + "_*)");
  algorithm_->set_from_options(method_opts);
  if (tuned_)  // a key no reader asked for would otherwise be ignored silently
    for (const auto& [k, v] : tuned_->values)
      if (opts.keys_read().count("-" + prefix_ + "bilevel_" + k) == 0)
        throw InputError(tuned_->file + ": -bilevel_" + k +
                         " is not an option of the solver, the upper stepper or method " + type_);
  from_options_ = true;
}

void BilevelSolver::view(PetscViewer viewer) const {
  if (!viewer) viewer = PETSC_VIEWER_STDOUT_(comm_);
  const std::string prefix = prefix_.empty() ? "" : " (" + prefix_ + ")";
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, "BilevelSolver%s: method %s on problem %s\n", prefix.c_str(),
                                            type_.c_str(), problem_ ? problem_->name().c_str() : "(none)"));
  BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
      viewer, "max_it %lld, max_time %g s, gatol %g, seed %llu, batch %d (upper %d)\n",
      static_cast<long long>(options_.max_iterations), options_.max_time, options_.gatol,
      static_cast<unsigned long long>(options_.seed), static_cast<int>(options_.batch_size),
      static_cast<int>(options_.upper_batch_size)));
  if (upper_) {
    const auto& u = upper_->options();
    const std::string type(to_string(u.type));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, "upper stepper %s, step %g, decay %g, box [%g, %g]\n",
                                              type.c_str(), u.step, u.decay, u.lower_bound, u.upper_bound));
  }
  if (tuned_)
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, "defaults tuned for problem %s (%s):%s\n",
                                              problem_->name().c_str(), tuned_->file.c_str(),
                                              tuned_->as_options().c_str()));
  if (algorithm_) algorithm_->view(viewer);
  view_last_solve(viewer);
  BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
}

SolveReport BilevelSolver::solve(Vec x, Vec y) {
  if (!problem_) throw Error("BilevelSolver::solve: call set_problem first");
  const petsc::ScopedOptionsPrefix scoped_prefix(prefix_);  // the KSPs and EPS the method makes take it
  if (!from_options_) set_from_options();
  BilevelProblem& problem = *problem_;
  const Capability need = algorithm_->requirements(), have = problem.capabilities();
  if ((static_cast<unsigned>(need) & ~static_cast<unsigned>(have)) != 0)
    throw InputError("method " + type_ + " needs oracles that problem " + problem.name() +
                     " does not provide: " + missing(need, have) + " (methods that do not need them: " +
                     algorithm_registry().names_requiring_at_most(have) + ")");
  if (options_.batch_size > 0 && !has(have, Capability::Stochastic))
    throw InputError("option -bilevel_batch_size: problem " + problem.name() + " has no samples to batch");

  int ranks = 1;
  MPI_Comm_size(comm_, &ranks);
  SolveReport report;
  report.problem = problem.name();
  report.method = type_;
  report.ranks = ranks;
  report.seed = options_.seed;

  if (options_.test_derivatives) {
    // -bilevel_test_derivatives: every oracle against central differences, at a random point near the start
    // (or at the start with -bilevel_test_derivatives_point current)
    const DerivativeReport check = check_derivatives(problem, x, y, DerivativeCheckOptions::from_options(comm_));
    check.print(comm_);
    if (!check.passed()) {
      std::string wrong;
      for (const auto& o : check.flagged_oracles()) wrong += (wrong.empty() ? "" : ", ") + o;
      throw Error("derivative check failed for problem " + problem.name() + ": " + wrong +
                  " (largest relative error " + std::to_string(check.max_error()) + ")");
    }
  }

  upper_->setup(x);
  upper_->project(x);
  AlgorithmContext ctx{problem, comm_, x, y, *upper_, options_.seed};
  ctx.batch_size = options_.batch_size;
  ctx.upper_batch_size = options_.upper_batch_size;
  algorithm_->setup(ctx);
  problem.reset_counts();

  for_each_monitor([&](Monitor& m) { m.on_start(problem.name(), type_, ranks); });
  const double t0 = now();
  double eval_time = 0;
  IterationRecord record;
  record.max_iterations = options_.max_iterations;
  record.max_time = options_.max_time;
  const bool closed_form = has(have, Capability::ClosedForm);
  const bool test_set = has(have, Capability::TestSet);
  petsc::VecHandle work = problem.create_upper_vec();

  // Evaluation for monitors: not counted as oracle work, not counted in the records' wall time.
  auto evaluate = [&](bool with_test) {
    petsc::ScopedEvent ev(petsc::events().evaluate);
    const double e0 = now();
    const OracleCounts saved = problem.counts();
    // an optional oracle: without it the objective is null (NaN), never a failure after the run
    record.upper_objective = has(have, Capability::UpperValue) ? problem.upper_value(x, y, Batch::all()) : NAN;
    if (closed_form) {
      problem.exact_hypergradient(x, work);
      PetscReal n = 0;
      BILEVEL_PETSC_CALL(VecNorm(work, NORM_2, &n));
      record.true_hypergradient_norm = n;
    }
    if (with_test && test_set) {
      const TestMetrics t = problem.evaluate_test(x, y);
      record.test_loss = t.loss;
      record.test_accuracy = t.accuracy;
    }
    problem.set_counts(saved);
    eval_time += now() - e0;
  };

  // The gatol test (see solve() in solver.hpp): a candidate is confirmed by the accurate hypergradient;
  // after a rejection the next check waits `gatol_wait` iterations, doubled each time.
  constexpr PetscReal kVerifyRtol = 1e-8;
  std::int64_t next_gatol_check = 0, gatol_wait = 1;
  auto gatol_confirmed = [&](std::int64_t iteration) {
    if (iteration < next_gatol_check) return false;
    const OracleCounts saved = problem.counts();
    const std::optional<PetscReal> accurate = accurate_hypergradient_norm(problem, x, y, kVerifyRtol);
    problem.set_counts(saved);
    if (accurate && *accurate <= options_.gatol) {
      report.verified_hypergradient_norm = *accurate;
      return true;
    }
    ++report.gatol_rejections;
    next_gatol_check = iteration + gatol_wait;
    gatol_wait *= 2;
    BILEVEL_PETSC_CALL(PetscInfo(nullptr,
                                 "gatol candidate at iteration %lld rejected: accurate hypergradient norm %g (next "
                                 "check at iteration %lld)\n",
                                 static_cast<long long>(iteration), accurate ? static_cast<double>(*accurate) : NAN,
                                 static_cast<long long>(next_gatol_check)));
    return false;
  };

  ConvergedReason reason = ConvergedReason::Iterating;
  std::int64_t k = 0;
  StepResult last;
  while (reason == ConvergedReason::Iterating) {
    if (k >= options_.max_iterations) {
      reason = ConvergedReason::ConvergedMaxIterations;
      break;
    }
    ctx.iteration = k;
    last = algorithm_->step(ctx);
    ++k;
    PetscReal xn = 0, yn = 0;
    BILEVEL_PETSC_CALL(VecNorm(x, NORM_2, &xn));
    BILEVEL_PETSC_CALL(VecNorm(y, NORM_2, &yn));
    if (last.reason != ConvergedReason::Iterating) reason = last.reason;
    else if (!std::isfinite(xn) || !std::isfinite(yn) || !std::isfinite(last.hypergradient_norm))
      reason = ConvergedReason::DivergedNaN;
    else if (options_.gatol > 0 && last.hypergradient_norm <= options_.gatol && gatol_confirmed(k))
      reason = ConvergedReason::ConvergedGradientTolerance;
    else if (options_.max_time > 0 && time_budget_spent(comm_, now() - t0, options_.max_time))
      reason = ConvergedReason::ConvergedTime;
    const bool last_iteration = reason != ConvergedReason::Iterating || k >= options_.max_iterations;
    if ((!monitors_.empty() || progress_) && (k % options_.monitor_every == 0 || last_iteration) &&
        reason != ConvergedReason::DivergedNaN) {
      evaluate(options_.monitor_test);
      record.iteration = k;
      record.wall_time = now() - t0 - eval_time;
      record.hypergradient_norm = last.hypergradient_norm;
      record.lower_residual = last.lower_residual;
      record.linear_residual = last.linear_residual;
      record.counts = problem.counts();
      for_each_monitor([&](Monitor& m) { m.on_iteration(record); });
    }
  }

  const OracleCounts counts = problem.counts();
  if (reason > ConvergedReason::Iterating && options_.final_lower_solve)
    // the problem's own accurate solver, else the solver's Newton-PCG
    if (!problem.solve_lower(x, y, options_.final_lower_rtol))
      solve_lower_accurately(problem, x, y, options_.final_lower_rtol);
  report.counts = counts;
  report.outer_iterations = k;
  report.reason = reason;
  report.hypergradient_norm = last.hypergradient_norm;
  if (reason != ConvergedReason::DivergedNaN) {
    evaluate(test_set);
    report.upper_objective = record.upper_objective;
    report.true_hypergradient_norm = record.true_hypergradient_norm;
    report.test_loss = record.test_loss;
    report.test_accuracy = record.test_accuracy;
    if (closed_form) report.optimal_upper_objective = problem.optimal_upper_objective();
  } else {
    report.upper_objective = NAN;
  }
  report.wall_time_s = now() - t0;
  record.iteration = k;
  record.wall_time = report.wall_time_s;
  record.counts = counts;
  for_each_monitor([&](Monitor& m) { m.on_finish(record); });
  view_from_options(report);
  return report;
}

}  // namespace bilevel
