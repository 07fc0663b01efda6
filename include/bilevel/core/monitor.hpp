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
  virtual void on_start(const std::string& /*problem*/, const std::string& /*method*/, int /*ranks*/) {}
  virtual void on_iteration(const IterationRecord& record) = 0;
  virtual void on_finish(const IterationRecord& /*last*/) {}
};

/// -bilevel_monitor: one line per iteration on rank 0 with an estimate of the time left.
class ProgressMonitor : public Monitor {
 public:
  explicit ProgressMonitor(MPI_Comm comm, PetscInt every = 1) : comm_(comm), every_(every) {}
  void on_start(const std::string& problem, const std::string& method, int ranks) override;
  void on_iteration(const IterationRecord& record) override;

 private:
  MPI_Comm comm_;
  PetscInt every_;
};

/// --trace FILE: CSV row per iteration, written by rank 0 into FILE.tmp and renamed on finish.
class CsvTraceMonitor : public Monitor {
 public:
  CsvTraceMonitor(MPI_Comm comm, std::string path, PetscInt every = 1);
  ~CsvTraceMonitor() override;
  void on_iteration(const IterationRecord& record) override;
  void on_finish(const IterationRecord& last) override;

 private:
  MPI_Comm comm_;
  std::string path_, tmp_;
  PetscInt every_;
  std::ofstream out_;
  bool finished_ = false;
};

}  // namespace bilevel
