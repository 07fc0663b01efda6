#pragma once
/// \file Stopping a run gracefully on a signal. The schedulers our users run under ask a job to stop with a
/// signal some time before they kill it (Slurm: SIGTERM to every task, or the signal chosen with --signal);
/// a user stops an interactive run with Ctrl-C. The handler only records the signal; BilevelSolver::solve
/// asks every rank at each iteration boundary (stop_signal_agreed), so all ranks stop after the same
/// iteration, write the checkpoint, the trace and the summary, and end with CANCELLED_SIGNAL.
#include <petscsys.h>

namespace bilevel {

/// Installs handlers for SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 (after PETSc's initialization, whose own
/// handlers they replace): the first signal is recorded; a second one restores the default action and
/// raises the signal again, so the process ends at once. bilevel-solve installs them; a program that embeds
/// the library may call this to get the same behaviour. Not collective.
void install_stop_signal_handlers();

/// The first stop signal this process received since the handlers were installed, or 0. Not collective.
int stop_signal_received();

/// Any rank's stop signal (the largest signal number among the ranks that received one), or 0; every rank
/// gets the same answer. Collective on comm (one small reduction).
int stop_signal_agreed(MPI_Comm comm);

/// Forgets a recorded signal (tests; a library user who continues after a cancelled solve). Not collective.
void clear_stop_signal();

/// The name of a signal number ("SIGTERM"). Not collective.
const char* signal_name(int signum);

}  // namespace bilevel
