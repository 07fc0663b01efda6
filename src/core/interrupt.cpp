#include "bilevel/core/interrupt.hpp"

#include <csignal>
#include <cstring>

namespace bilevel {
namespace {

volatile std::sig_atomic_t g_signal = 0;
constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};

extern "C" void on_stop_signal(int signum) {
  if (g_signal == 0) {
    g_signal = signum;  // async-signal-safe: a store to a sig_atomic_t
    return;
  }
  // A second signal: the user (or the scheduler) insists. Default action, raised again: the process ends.
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(signum, &dfl, nullptr);
  raise(signum);
}

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a blocking read or MPI progress call continues after the handler
  for (int s : kSignals) sigaction(s, &sa, nullptr);
}

int stop_signal_received() {
  return static_cast<int>(g_signal);
}

int stop_signal_agreed(MPI_Comm comm) {
  int mine = stop_signal_received(), any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm);
  return any;
}

void clear_stop_signal() {
  g_signal = 0;
}

const char* signal_name(int signum) {
  switch (signum) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    default:
      return "a signal";
  }
}

}  // namespace bilevel
