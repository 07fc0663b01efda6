#pragma once
/// \file Per-iteration records and the monitors that consume them (progress line, CSV trace).
#include <petscsys.h>
#include <petscviewer.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// What the solver knows after an outer iteration.
struct IterationRecord {
  std::int64_t iteration = 0;  ///< 1-based count of completed outer iterations
  std::int64_t max_iterations = 0;
  double wall_time = 0;                               ///< seconds since solve() started
  double max_time = 0;                                ///< -bilevel_max_time (0 = none)
  PetscReal upper_objective = 0;                      ///< f(x, y) on the full validation set
  PetscReal hypergradient_norm = 0;                   ///< of the estimate used by the step
  std::optional<PetscReal> true_hypergradient_norm;   ///< closed-form problems
  std::optional<PetscReal> test_loss, test_accuracy;  ///< when requested
  PetscReal lower_residual = -1, linear_residual = -1;
  /// Exact metrics (docs/metrics.md), every -bilevel_monitor_exact_every iterations: F(x) = f(x, y*(x)),
  /// ||∇F(x)||, ||h − ∇F(x)|| / ||∇F(x)||, cos(h, ∇F(x)) and ||y − y*(x)||, at the x where the step took its
  /// hypergradient estimate h (the x before the step) and the y it used. Empty where not computed.
  std::optional<PetscReal> value_function, exact_hypergradient_norm, hypergradient_relative_error,
      hypergradient_cosine, lower_distance;
  /// A-posteriori bound on ||h − ∇F(x)|| (core/hypergradient_bound.hpp), where the problem's constants
  /// and the method's (y, v) give one.
  std::optional<PetscReal> hypergradient_error_bound;
  OracleCounts counts;
};

/// Observer of iterations. Collective on the solver's communicator (every rank calls it).
class Monitor {
 public:
  virtual ~Monitor() = default;
  /// A restarted run continues after `iteration` (called before on_start).
  virtual void on_resume(std::int64_t /*iteration*/) {}
  virtual void on_start(const std::string& /*problem*/, const std::string& /*method*/, int /*ranks*/) {}
  virtual void on_iteration(const IterationRecord& record) = 0;
  virtual void on_finish(const IterationRecord& /*last*/) {}
};

/// -bilevel_monitor [VIEWER]: one line per iteration with an estimate of the time left, printed through a
/// PETSc ASCII viewer (rank 0 writes); with the format ascii_csv (-bilevel_monitor ascii:FILE.csv:ascii_csv)
/// a header and one CSV row per iteration instead, the columns of CsvTraceMonitor.
class ProgressMonitor : public Monitor {
 public:
  /// On stdout of comm.
  explicit ProgressMonitor(MPI_Comm comm, PetscInt every = 1);
  /// On `viewer` (shared: the monitor takes a reference) in `format`. Collective on the viewer.
  ProgressMonitor(PetscViewer viewer, PetscViewerFormat format, PetscInt every = 1);
  void on_resume(std::int64_t iteration) override;
  void on_start(const std::string& problem, const std::string& method, int ranks) override;
  void on_iteration(const IterationRecord& record) override;

 private:
  petsc::ViewerHandle viewer_;
  PetscViewerFormat format_ = PETSC_VIEWER_DEFAULT;
  PetscInt every_;
};

/// The CSV header and row of an iteration record (no newline): the columns of --trace and of
/// -bilevel_monitor ascii:FILE:ascii_csv. Not collective.
std::string csv_header();
std::string csv_row(const IterationRecord& record);

/// A user's monitor as TaoMonitorSet takes it: a function, its context and the context's destroy function
/// (called when the monitor goes: BilevelSolver::monitor_cancel or the solver's destruction). A non-zero
/// return is a PETSc error that ends the solve. Collective: every rank calls it.
using MonitorFunction = PetscErrorCode (*)(const IterationRecord& record, void* ctx);
using MonitorContextDestroy = PetscErrorCode (*)(void** ctx);
class CallbackMonitor : public Monitor {
 public:
  CallbackMonitor(MonitorFunction function, void* ctx, MonitorContextDestroy destroy)
      : function_(function), ctx_(ctx), destroy_(destroy) {}
  ~CallbackMonitor() override;
  CallbackMonitor(const CallbackMonitor&) = delete;
  CallbackMonitor& operator=(const CallbackMonitor&) = delete;
  void on_iteration(const IterationRecord& record) override;

 private:
  MonitorFunction function_;
  void* ctx_;
  MonitorContextDestroy destroy_;
};

/// --trace FILE: a CSV row per monitored iteration, row 0 being the start point. Rank 0 writes and flushes
/// each row as it comes, so the file can be followed during the run; a restarted run keeps the rows up to its
/// checkpoint's iteration and appends after them. Collective where noted.
class CsvTraceMonitor : public Monitor {
 public:
  /// Checks that `path` can be written (an InputError naming it and option --trace otherwise) without
  /// truncating it yet: a restart keeps its rows. Collective on comm.
  CsvTraceMonitor(MPI_Comm comm, std::string path, PetscInt every = 1);
  void on_resume(std::int64_t iteration) override;
  void on_start(const std::string& problem, const std::string& method, int ranks) override;
  void on_iteration(const IterationRecord& record) override;
  void on_finish(const IterationRecord& last) override;

 private:
  MPI_Comm comm_;
  std::string path_;
  PetscInt every_;
  std::int64_t resume_after_ = -1;
  std::ofstream out_;
};

}  // namespace bilevel
