/// \file BilevelSolver's options: set_from_options (with the options prefix and the tuned settings) and the
/// options a restart may change.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "bilevel/core/solver.hpp"
#include "bilevel/core/tuned_settings.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

void BilevelSolver::set_from_options() {
  if (!problem_) throw Error("BilevelSolver::set_from_options: call set_problem first");
  const petsc::ScopedOptionsPrefix scoped_prefix(prefix_);  // KSPs/EPS made while reading take it too
  petsc::OptionsReader opts(
      comm_, prefix_ + "bilevel_", "Bilevel solver options (-" + prefix_ + "bilevel_*)");
  std::string names;
  for (const auto& n : algorithm_registry().names()) names += (names.empty() ? "" : "|") + n;
  const std::string type = opts.string(
      "type", type_.empty() ? algorithm_registry().default_name() : type_, "bilevel method (" + names + ")");
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
      "tuned_dir",
      "",
      "folder of tuned settings PROBLEM/METHOD.opts (default: share/bilevel/tuned of the installed "
      "library, else the source tree's cluster/tuned)");
  tuned_.reset();
  if (use_tuned) tuned_ = load_tuned_settings(comm_, problem_->name(), type_, tuned_dir);
  if (tuned_) opts.set_defaults(tuned_->values);
  o.max_iterations = opts.integer64("max_it", o.max_iterations, "maximum outer iterations", 0);
  {
    // a number of seconds, or "slurm": the job's remaining time (read when solve() starts)
    char def[64];
    std::snprintf(def, sizeof def, "%g", static_cast<double>(o.max_time));
    const std::string t = opts.string(
        "max_time",
        o.max_time_from_slurm ? "slurm" : def,
        "time budget in seconds for the whole run from program start, loading and final phase included (0: "
        "none; slurm: the job's remaining time)");
    o.max_time_from_slurm = t == "slurm";
    if (!o.max_time_from_slurm) {
      char* end = nullptr;
      const double v = std::strtod(t.c_str(), &end);
      if (t.empty() || *end != '\0' || !(v >= 0) || !std::isfinite(v))
        throw InputError("option -" + opts.prefix() + "max_time: '" + t +
                         "' is not a number of seconds >= 0 or 'slurm'");
      o.max_time = v;
    }
  }
  o.final_reserve = opts.real("final_reserve",
                              o.final_reserve,
                              "fraction of -bilevel_max_time kept for the final phase and the outputs",
                              0.0,
                              0.9);
  o.checkpoint =
      opts.string("checkpoint", o.checkpoint, "write checkpoints to this file (bilevel-solve --checkpoint)");
  o.checkpoint_interval =
      opts.integer64("checkpoint_interval", o.checkpoint_interval, "iterations between checkpoints", 1);
  o.checkpoint_seconds =
      opts.real("checkpoint_seconds",
                o.checkpoint_seconds,
                "also write a checkpoint when this many seconds passed since the last (0: off)",
                0.0);
  o.restart = opts.string("restart", o.restart, "continue from this checkpoint (bilevel-solve --restart)");
  o.gatol =
      opts.real("gatol",
                o.gatol,
                "stop when the hypergradient estimate norm <= gatol and an accurate hypergradient at that "
                "x confirms it (closed form, or accurate lower solve + CG; see docs/architecture.md)",
                0.0);
  o.seed = opts.unsigned64("seed", o.seed, "random seed");
  o.batch_size = opts.integer("batch_size", o.batch_size, "lower-level minibatch size (0: full batch)", 0);
  o.upper_batch_size =
      opts.integer("upper_batch_size", o.upper_batch_size, "upper-level minibatch size (0: full)", 0);
  o.monitor_every =
      opts.integer("monitor_every", o.monitor_every, "evaluate and monitor every k iterations", 1);
  o.monitor_test = opts.boolean("monitor_test", o.monitor_test, "test metrics in every monitor record");
  o.monitor_exact_every = opts.integer(
      "monitor_exact_every",
      o.monitor_exact_every,
      "exact metrics (accurate y*(x), grad F(x)) every k iterations, 0: off (closed-form problems: always)",
      0);
  o.final_lower_solve =
      opts.boolean("final_lower_solve", o.final_lower_solve, "solve the lower level accurately at the end");
  o.final_lower_rtol =
      opts.real("final_lower_rtol", o.final_lower_rtol, "relative tolerance of that solve", 0.0);
  o.test_derivatives =
      opts.boolean("test_derivatives", o.test_derivatives, "check every oracle by finite differences first");
  // used at the end of solve() (view_from_options); opened here, so a bad viewer fails before the solve
  view_viewer_ = opts.viewer("view",
                             "view the solver at the end of solve (ascii::ascii_info_detail: also the "
                             "last solve's oracle counts)");
  reason_viewer_ = opts.viewer("converged_reason", "print why the solve stopped, at its end");
  if (opts.boolean(
          "monitor_cancel", false, "remove every monitor, also those set in code (TaoMonitorCancel)"))
    monitor_cancel();
  // replaced, not appended: a second call keeps one progress monitor
  progress_.reset();
  if (auto v = opts.viewer("monitor", "one progress line per iteration (format ascii_csv: CSV rows)"))
    progress_ = std::make_unique<ProgressMonitor>(v->viewer, v->format, o.monitor_every);
  petsc::OptionsReader upper_opts =
      opts.sub("upper_", "Upper-level stepper (-" + prefix_ + "bilevel_upper_*)");
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

const std::vector<std::string>& BilevelSolver::restart_free_options() {
  static const std::vector<std::string> free = {"max_it",
                                                "max_time",
                                                "final_reserve",
                                                "checkpoint",
                                                "checkpoint_interval",
                                                "checkpoint_seconds",
                                                "restart",
                                                "monitor",
                                                "monitor_every",
                                                "monitor_test",
                                                "monitor_exact_every",
                                                "view",
                                                "final_lower_solve",
                                                "final_lower_rtol",
                                                "test_derivatives",
                                                "test_derivatives_point",
                                                "gatol",
                                                "tuned_dir",
                                                "converged_reason",
                                                "monitor_cancel"};
  return free;
}

}  // namespace bilevel
