#include "bilevel/core/solver.hpp"

#include <petsctime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "bilevel/core/accurate_hypergradient.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/derivative_check.hpp"
#include "bilevel/core/exact_metrics.hpp"
#include "bilevel/core/interrupt.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/lower_solve.hpp"
#include "bilevel/core/run_clock.hpp"
#include "bilevel/core/tuned_settings.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/comm_counter.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/memory.hpp"
#include "bilevel/petsc/session.hpp"

namespace bilevel {
namespace {

double now() {
  return monotonic_seconds();
}

/// Missing capabilities of `have` among `need`, as names.
std::string missing(Capability need, Capability have) {
  return to_string(static_cast<Capability>(static_cast<unsigned>(need) & ~static_cast<unsigned>(have)));
}

/// The decisions taken at an iteration boundary, the same on every rank: a stop signal on any rank (its
/// number), and rank 0's clock for the time budget and the checkpoint timer (the ranks' clocks differ, and
/// ranks that disagreed would leave the loop at different iterations and deadlock). One reduction.
/// Collective.
struct BoundaryDecision {
  int signal = 0;
  bool budget_spent = false;
  bool checkpoint_due = false;
};

BoundaryDecision agree_at_boundary(MPI_Comm comm, bool budget_spent, bool checkpoint_due) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  int mine[3] = {
      stop_signal_received(), rank == 0 && budget_spent ? 1 : 0, rank == 0 && checkpoint_due ? 1 : 0};
  int all[3] = {0, 0, 0};
  petsc::allreduce(comm, mine, all, 3, MPI_INT, MPI_MAX, petsc::CommPhase::Coordinator);
  return {all[0], all[1] != 0, all[2] != 0};
}

/// The -bilevel_ options in the database whose values a checkpoint records (every key some reader of this
/// process read, present in the database, restart_free_options() excepted), "-bilevel_seed" -> "3".
std::map<std::string, std::string> recorded_options(const std::string& prefix) {
  std::map<std::string, std::string> out;
  const auto& free = BilevelSolver::restart_free_options();
  for (const std::string& key : petsc::known_option_names()) {
    if (key.rfind("-" + prefix, 0) != 0) continue;
    const std::string name = key.substr(1 + prefix.size());
    if (std::find(free.begin(), free.end(), name) != free.end()) continue;
    PetscBool set = PETSC_FALSE;
    char value[1024] = "";
    BILEVEL_PETSC_CALL(PetscOptionsGetString(nullptr, nullptr, key.c_str(), value, sizeof value, &set));
    if (set) out[key] = value;
  }
  return out;
}

}  // namespace

BilevelSolver::BilevelSolver(MPI_Comm comm) : comm_(comm) {
  petsc::initialize_package();
}
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

void BilevelSolver::add_monitor(std::unique_ptr<Monitor> monitor) {
  monitors_.push_back(std::move(monitor));
}

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

void BilevelSolver::view(PetscViewer viewer) const {
  if (!viewer) viewer = PETSC_VIEWER_STDOUT_(comm_);
  const std::string prefix = prefix_.empty() ? "" : " (" + prefix_ + ")";
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                            "BilevelSolver%s: method %s on problem %s\n",
                                            prefix.c_str(),
                                            type_.c_str(),
                                            problem_ ? problem_->name().c_str() : "(none)"));
  BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
  BILEVEL_PETSC_CALL(
      PetscViewerASCIIPrintf(viewer,
                             "max_it %lld, max_time %g s, gatol %g, seed %llu, batch %d (upper %d)\n",
                             static_cast<long long>(options_.max_iterations),
                             options_.max_time,
                             options_.gatol,
                             static_cast<unsigned long long>(options_.seed),
                             static_cast<int>(options_.batch_size),
                             static_cast<int>(options_.upper_batch_size)));
  if (upper_) {
    const auto& u = upper_->options();
    const std::string type(to_string(u.type));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "upper stepper %s, step %g, decay %g%s, box [%g, %g]\n",
                                              type.c_str(),
                                              u.step,
                                              upper_->decay(),
                                              u.decay < 0 ? " (auto)" : "",
                                              u.lower_bound,
                                              u.upper_bound));
  }
  if (tuned_)
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "defaults tuned for problem %s (%s):%s\n",
                                              problem_->name().c_str(),
                                              tuned_->file.c_str(),
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
    const DerivativeReport check =
        check_derivatives(problem, x, y, DerivativeCheckOptions::from_options(comm_));
    check.print(comm_);
    if (!check.passed()) {
      std::string wrong;
      for (const auto& o : check.flagged_oracles()) wrong += (wrong.empty() ? "" : ", ") + o;
      throw Error("derivative check failed for problem " + problem.name() + ": " + wrong +
                  " (largest relative error " + std::to_string(check.max_error()) + ")");
    }
  }

  // Hypergradients from minibatches (either level) are noisy: the upper step's default decay follows.
  upper_->setup(x, draws_minibatches(problem, options_.batch_size, options_.upper_batch_size));
  upper_->project(x);
  AlgorithmContext ctx{problem, comm_, x, y, *upper_, options_.seed};
  ctx.batch_size = options_.batch_size;
  ctx.upper_batch_size = options_.upper_batch_size;
  algorithm_->setup(ctx);
  problem.reset_counts();

  // The clock: the whole run's budget counts from program start when the program marked it.
  const double t0 = now();
  const double origin = run_start().value_or(t0);
  double budget = options_.max_time;
  if (options_.max_time_from_slurm) {
    const std::optional<double> left = slurm_remaining_seconds(comm_);
    if (!left)
      throw InputError(
          "option -bilevel_max_time slurm: no Slurm job time limit found (SLURM_JOB_ID unset, or "
          "squeue reports none)");
    budget = *left + (t0 - origin);  // counted from the origin like a number of seconds
  }
  const double loop_deadline = origin + budget * (1 - options_.final_reserve);

  // Everything a run carries from one iteration to the next, declared once (core/checkpoint.hpp).
  std::int64_t k = 0;
  double elapsed_before = 0;  // solve time of the runs this one continues
  double elapsed_saved = 0;   // solve time up to the checkpoint's iteration, all runs
  OracleCounts run_counts;
  StepResult last;
  last.hypergradient_norm = NAN;
  std::int64_t next_gatol_check = 0, gatol_wait = 1;
  StateRegistry state;
  state.add("solver.x", x);
  state.add("solver.y", y);
  state.add("solver.iteration", k);
  state.add("solver.elapsed", elapsed_saved);
  state.add("solver.counts.grad_f", run_counts.grad_f);
  state.add("solver.counts.grad_g", run_counts.grad_g);
  state.add("solver.counts.hvp", run_counts.hvp);
  state.add("solver.counts.jvp", run_counts.jvp);
  state.add("solver.counts.samples", run_counts.samples);
  state.add("solver.counts.value_f", run_counts.value_f);
  state.add("solver.counts.value_g", run_counts.value_g);
  state.add("solver.hypergradient_norm", last.hypergradient_norm);
  state.add("solver.lower_residual", last.lower_residual);
  state.add("solver.linear_residual", last.linear_residual);
  state.add("solver.gatol_next_check", next_gatol_check);
  state.add("solver.gatol_wait", gatol_wait);
  state.add("solver.gatol_rejections", report.gatol_rejections);
  upper_->declare_state(state);
  algorithm_->declare_state(state);
  problem.declare_state(state);
  CheckpointFacts facts;
  {
    PetscInt nx = 0, ny = 0;
    BILEVEL_PETSC_CALL(VecGetSize(x, &nx));
    BILEVEL_PETSC_CALL(VecGetSize(y, &ny));
    const DatasetSizes sizes = problem.dataset_sizes();
    facts["problem"] = problem.name();
    facts["method"] = type_;
    facts["dimensions"] = "x " + std::to_string(nx) + ", y " + std::to_string(ny) + ", samples " +
                          std::to_string(sizes.lower) + " lower, " + std::to_string(sizes.upper) + " upper";
    for (const auto& [key, value] : facts_) facts[key] = value;
    for (const auto& [key, value] : recorded_options(prefix_ + "bilevel_")) facts["option " + key] = value;
  }

  if (!options_.restart.empty()) {
    const CheckpointFacts saved = read_checkpoint_facts(comm_, options_.restart);
    // what differs, in one line: the first fact that does not match, the problem and the method first
    std::vector<std::pair<std::string, std::string>> ordered;
    for (const char* first : {"problem", "method"}) ordered.emplace_back(first, facts.at(first));
    for (const auto& [key, value] : facts)
      if (key != "problem" && key != "method") ordered.emplace_back(key, value);
    for (const auto& [key, value] : ordered) {
      const auto it = saved.find(key);
      const std::string theirs = it == saved.end() ? "(not set)" : it->second;
      if (theirs != value)
        throw InputError("checkpoint " + options_.restart + " does not match this run: " + key + " is '" +
                         theirs + "' there and '" + value + "' here");
    }
    for (const auto& [key, value] : saved)
      if (key.rfind("option ", 0) == 0 && facts.count(key) == 0)
        throw InputError("checkpoint " + options_.restart + " does not match this run: " + key + " is '" +
                         value + "' there and not set here");
    read_checkpoint(comm_, options_.restart, state);
    problem.set_counts(run_counts);
    elapsed_before = elapsed_saved;
    report.restarted_from_iteration = k;
  }

  const bool closed_form = has(have, Capability::ClosedForm);
  const bool test_set = has(have, Capability::TestSet);
  const bool monitoring = !monitors_.empty() || progress_;
  if (report.restarted_from_iteration) for_each_monitor([&](Monitor& m) { m.on_resume(k); });
  for_each_monitor([&](Monitor& m) { m.on_start(problem.name(), type_, ranks); });
  double eval_time = 0;
  IterationRecord record;
  record.max_iterations = options_.max_iterations;
  record.max_time = budget;
  petsc::VecHandle work = problem.create_upper_vec();

  // Evaluation for monitors: not counted as oracle work, not counted in the records' wall time.
  auto evaluate = [&](bool with_test) {
    petsc::ScopedEvent ev(petsc::events().evaluate);
    const double e0 = now();
    const OracleCounts saved = problem.counts();
    // an optional oracle: without it the objective is null (NaN), never a failure after the run
    record.upper_objective =
        has(have, Capability::UpperValue) ? problem.upper_value(x, y, Batch::all()) : NAN;
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
  // The exact metrics and the error bound (core/exact_metrics.hpp), timed like the evaluation; the summary
  // keeps the last value of each.
  std::optional<ExactMetrics> exact;
  if (monitoring) exact.emplace(problem, options_.monitor_exact_every);
  auto measure = [&]() {
    const double e0 = now();
    exact->fill(record, k, x, y, last);
    for (auto [from, to] : {std::pair{&record.value_function, &report.value_function},
                            {&record.exact_hypergradient_norm, &report.exact_hypergradient_norm},
                            {&record.hypergradient_relative_error, &report.hypergradient_relative_error},
                            {&record.hypergradient_cosine, &report.hypergradient_cosine},
                            {&record.lower_distance, &report.lower_distance},
                            {&record.hypergradient_error_bound, &report.hypergradient_error_bound}})
      if (*from) *to = *from;
    eval_time += now() - e0;
  };
  auto emit_record = [&]() {
    record.iteration = k;
    record.wall_time = elapsed_before + (now() - t0 - eval_time);
    record.hypergradient_norm = last.hypergradient_norm;
    record.lower_residual = last.lower_residual;
    record.linear_residual = last.linear_residual;
    record.counts = problem.counts();
    for_each_monitor([&](Monitor& m) { m.on_iteration(record); });
  };

  // The gatol test (see solve() in solver.hpp): a candidate is confirmed by the accurate hypergradient;
  // after a rejection the next check waits `gatol_wait` iterations, doubled each time.
  constexpr PetscReal kVerifyRtol = 1e-8;
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
    BILEVEL_PETSC_CALL(
        PetscInfo(nullptr,
                  "gatol candidate at iteration %lld rejected: accurate hypergradient norm %g (next "
                  "check at iteration %lld)\n",
                  static_cast<long long>(iteration),
                  accurate ? static_cast<double>(*accurate) : NAN,
                  static_cast<long long>(next_gatol_check)));
    return false;
  };

  // Checkpoints: the state after iteration k (written before the final phase changes y).
  std::int64_t checkpointed_at = report.restarted_from_iteration.value_or(-1);
  double last_checkpoint_time = t0;
  auto write_state = [&]() {
    run_counts = problem.counts();
    elapsed_saved = elapsed_before + (now() - t0 - eval_time);
    const CheckpointWriteStats w = write_checkpoint(comm_, options_.checkpoint, state, facts);
    eval_time += w.seconds;  // like evaluations, outside the records' wall time
    ++report.checkpoints_written;
    report.checkpoint_bytes = w.bytes;
    report.checkpoint_seconds += w.seconds;
    checkpointed_at = k;
    last_checkpoint_time = now();
  };

  // The start point is the trace's row 0 (a restart continues the trace after its last row).
  if (monitoring && !report.restarted_from_iteration) {
    evaluate(options_.monitor_test);
    measure();
    emit_record();
  }

  ConvergedReason reason = ConvergedReason::Iterating;
  std::int64_t step_bytes = 0, loop_start_k = k;  // bytes this rank sent in steps and boundaries
  // The loop stops when the next iteration, as long as the last one, would end past its deadline.
  double iteration_start = now(), last_iteration_seconds = 0;
  // The coordinator's share: time in boundary decisions over the loop's time (steps + boundaries).
  double coordinator_seconds = 0, loop_seconds = 0;
  auto boundary = [&]() {
    const double t = now();
    const bool due =
        !options_.checkpoint.empty() &&
        ((k > 0 && k % options_.checkpoint_interval == 0) ||
         (options_.checkpoint_seconds > 0 && t - last_checkpoint_time >= options_.checkpoint_seconds));
    return agree_at_boundary(comm_, budget > 0 && t + last_iteration_seconds >= loop_deadline, due);
  };
  BoundaryDecision decision = boundary();
  if (decision.signal) reason = ConvergedReason::CancelledSignal;
  while (reason == ConvergedReason::Iterating) {
    if (k >= options_.max_iterations) {
      reason = ConvergedReason::ConvergedMaxIterations;
      break;
    }
    if (decision.budget_spent) {
      reason = ConvergedReason::ConvergedTime;
      break;
    }
    ctx.iteration = k;
    iteration_start = now();
    if (exact) exact->before_step(x);
    const std::int64_t bytes_before = petsc::comm_bytes_sent_total();
    try {
      last = algorithm_->step(ctx);
    } catch (const NumericalFailure& e) {  // thrown on every rank at once (collective decisions only)
      last.reason = e.reason();
      BILEVEL_PETSC_CALL(PetscFPrintf(
          comm_, PETSC_STDERR, "bilevel: iteration %lld: %s\n", static_cast<long long>(k), e.what()));
    }
    ++k;
    last_iteration_seconds = now() - iteration_start;
    PetscReal xn = 0, yn = 0;
    BILEVEL_PETSC_CALL(VecNorm(x, NORM_2, &xn));
    BILEVEL_PETSC_CALL(VecNorm(y, NORM_2, &yn));
    const double b0 = now();
    decision = boundary();
    coordinator_seconds += now() - b0;
    step_bytes += petsc::comm_bytes_sent_total() - bytes_before;  // the step and its boundary decision
    loop_seconds += now() - iteration_start;
    if (last.reason != ConvergedReason::Iterating)
      reason = last.reason;
    else if (!std::isfinite(xn) || !std::isfinite(yn) || !std::isfinite(last.hypergradient_norm))
      reason = ConvergedReason::DivergedNaN;
    else if (decision.signal)
      reason = ConvergedReason::CancelledSignal;
    else if (options_.gatol > 0 && last.hypergradient_norm <= options_.gatol && gatol_confirmed(k))
      reason = ConvergedReason::ConvergedGradientTolerance;
    else if (decision.budget_spent)
      reason = ConvergedReason::ConvergedTime;
    const bool last_iteration = reason != ConvergedReason::Iterating || k >= options_.max_iterations;
    if (monitoring && (k % options_.monitor_every == 0 || last_iteration) &&
        reason != ConvergedReason::DivergedNaN) {
      evaluate(options_.monitor_test);
      measure();
      emit_record();
    }
    if (decision.checkpoint_due && reason == ConvergedReason::Iterating) write_state();
  }
  report.stop_signal = decision.signal;
  // The last iteration's state, unless it is not worth continuing from (a numerical failure keeps the
  // previous checkpoint).
  const bool healthy = reason > ConvergedReason::Iterating || reason == ConvergedReason::CancelledSignal;
  if (!options_.checkpoint.empty() && healthy && checkpointed_at != k) write_state();

  const OracleCounts counts = problem.counts();
  if (reason > ConvergedReason::Iterating && options_.final_lower_solve) {
    // the problem's own accurate solver, else the solver's Newton-PCG; within the budget, leaving a share of
    // the reserve for the evaluation and the outputs
    struct PhaseDeadline {  // cleared however the phase ends
      explicit PhaseDeadline(std::optional<double> d) { set_phase_deadline(d); }
      ~PhaseDeadline() { set_phase_deadline(std::nullopt); }
    } deadline(budget > 0 ? std::optional<double>(origin + budget * (1 - options_.final_reserve / 4))
                          : std::nullopt);
    if (!problem.solve_lower(x, y, options_.final_lower_rtol))
      solve_lower_accurately(problem, x, y, options_.final_lower_rtol);
  }
  report.counts = counts;
  report.outer_iterations = k;
  {
    double mine =
               k > loop_start_k ? static_cast<double>(step_bytes) / static_cast<double>(k - loop_start_k) : 0,
           most = 0;
    BILEVEL_PETSC_CALL(MPI_Allreduce(&mine, &most, 1, MPI_DOUBLE, MPI_MAX, comm_));
    report.bytes_communicated_per_iteration = most;
  }
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
  report.wall_time_s = elapsed_before + (now() - t0);
  {  // after the wall time: memory (max over ranks) and rank 0's coordinator share, in one reduction
    int rank = 0;
    MPI_Comm_rank(comm_, &rank);
    const double fraction = rank == 0 && loop_seconds > 0 ? coordinator_seconds / loop_seconds : 0;
    double mine[3] = {static_cast<double>(petsc::peak_rss_bytes()),
                      static_cast<double>(problem.local_data_bytes()),
                      fraction},
           all[3] = {0, 0, 0};
    BILEVEL_PETSC_CALL(MPI_Allreduce(mine, all, 3, MPI_DOUBLE, MPI_MAX, comm_));
    report.peak_rss_bytes = static_cast<std::int64_t>(all[0]);
    report.data_bytes_per_rank = static_cast<std::int64_t>(all[1]);
    report.coordinator_fraction = all[2];
  }
  record.iteration = k;
  record.wall_time = report.wall_time_s;
  record.counts = counts;
  for_each_monitor([&](Monitor& m) { m.on_finish(record); });
  view_from_options(report);
  return report;
}

}  // namespace bilevel
