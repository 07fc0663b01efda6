#pragma once
/// \file Per-iteration records and the monitors that consume them (progress line, CSV trace).
#include <petscsys.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// What the solver knows after an outer iteration.
struct IterationRecord {
  std::int64_t iteration = 0;        ///< 1-based count of completed outer iterations
  std::int64_t max_iterations = 0;
  double wall_time = 0;              ///< seconds since solve() started
  double max_time = 0;               ///< -bilevel_max_time (0 = none)
  PetscReal upper_objective = 0;     ///< f(x, y) on the full validation set
  PetscReal hypergradient_norm = 0;  ///< of the estimate used by the step
  std::optional<PetscReal> true_hypergradient_norm;  ///< closed-form problems
  std::optional<PetscReal> test_loss, test_accuracy;   ///< when requested
  PetscReal lower_residual = -1, linear_residual = -1;
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

/// -bilevel_monitor: one line per iteration on rank 0 with an estimate of the time left.
class ProgressMonitor : public Monitor {
 public:
  explicit ProgressMonitor(MPI_Comm comm, PetscInt every = 1) : comm_(comm), every_(every) {}
  void on_resume(std::int64_t iteration) override;
  void on_start(const std::string& problem, const std::string& method, int ranks) override;
  void on_iteration(const IterationRecord& record) override;

 private:
  MPI_Comm comm_;
  PetscInt every_;
};

/// --trace FILE: a CSV row per monitored iteration, row 0 being the start point. Rank 0 writes and flushes each
/// row as it comes, so the file can be followed during the run; a restarted run keeps the rows up to its
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
