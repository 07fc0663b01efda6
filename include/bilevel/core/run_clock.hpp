#pragma once
/// \file The run's clock and its time budget. -bilevel_max_time counts from program start (data loading,
/// the solve and the final phase), so a program marks its start once; a library user who does not gets the
/// start of solve() as the origin. Under Slurm the budget can be the job's remaining time.
#include <petscsys.h>

#include <optional>
#include <string>

namespace bilevel {

/// Seconds on a monotonic clock (std::chrono::steady_clock). Not collective.
double monotonic_seconds();

/// Marks now as the start of the run (bilevel-solve calls it first thing in main). Not collective.
void mark_run_start();

/// The mark of mark_run_start(), if any. Not collective.
std::optional<double> run_start();

/// A deadline for the phase that runs now (the solver sets one for its final lower solve so that the whole
/// run keeps its budget), on monotonic_seconds()'s clock; nullopt clears it. Not collective.
void set_phase_deadline(std::optional<double> deadline);

/// Whether the phase deadline has passed, decided by rank 0's clock and broadcast (the ranks' clocks differ;
/// a loop whose ranks disagreed would deadlock). Always false without a deadline (and then not
/// communicating). Loops that can run long (accurate lower solves, model fits) call it once per iteration.
/// Collective on comm.
bool phase_deadline_passed(MPI_Comm comm);

/// The job's remaining time in seconds as the scheduler reports it: Slurm's `squeue -h -j $SLURM_JOB_ID -o
/// %L`
/// ("[days-]hours:minutes:seconds", "minutes:seconds"), read on rank 0 and broadcast. nullopt outside a
/// Slurm job or when the job has no limit ("UNLIMITED"). Collective on comm.
std::optional<double> slurm_remaining_seconds(MPI_Comm comm);

/// Parses Slurm's time-left format ("1-02:03:04", "02:03:04", "03:04", "45"); nullopt if it is not one.
/// Not collective.
std::optional<double> parse_slurm_time_left(const std::string& text);

}  // namespace bilevel
