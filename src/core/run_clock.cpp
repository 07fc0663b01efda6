#include "bilevel/core/run_clock.hpp"

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace bilevel {
namespace {

std::optional<double> g_run_start;
std::optional<double> g_phase_deadline;

}  // namespace

double monotonic_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

void mark_run_start() {
  g_run_start = monotonic_seconds();
}

std::optional<double> run_start() {
  return g_run_start;
}

void set_phase_deadline(std::optional<double> deadline) {
  g_phase_deadline = deadline;
}

bool phase_deadline_passed(MPI_Comm comm) {
  if (!g_phase_deadline) return false;  // the same on every rank: set by the collective solve()
  int passed = monotonic_seconds() >= *g_phase_deadline ? 1 : 0;
  MPI_Bcast(&passed, 1, MPI_INT, 0, comm);
  return passed != 0;
}

std::optional<double> parse_slurm_time_left(const std::string& text) {
  std::string s = text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  if (s.empty()) return std::nullopt;
  long days = 0;
  if (const auto dash = s.find('-'); dash != std::string::npos) {
    char* end = nullptr;
    days = std::strtol(s.c_str(), &end, 10);
    if (end != s.c_str() + dash || days < 0) return std::nullopt;
    s = s.substr(dash + 1);
  }
  std::vector<long> parts;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t colon = s.find(':', pos);
    const std::string field = s.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
    if (field.empty()) return std::nullopt;
    char* end = nullptr;
    const long v = std::strtol(field.c_str(), &end, 10);
    if (*end != '\0' || v < 0) return std::nullopt;
    parts.push_back(v);
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  if (parts.empty() || parts.size() > 3) return std::nullopt;
  double seconds = 0;
  for (long p : parts) seconds = seconds * 60 + static_cast<double>(p);
  // "M:S" and "H:M:S"; a lone number is seconds. With days, Slurm always prints H:M:S.
  return seconds + 86400.0 * static_cast<double>(days);
}

std::optional<double> slurm_remaining_seconds(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  double left = -1;
  if (rank == 0) {
    const char* job = std::getenv("SLURM_JOB_ID");
    if (job && *job) {
      const std::string cmd = std::string("squeue -h -j ") + job + " -o %L 2>/dev/null";
      if (FILE* p = popen(cmd.c_str(), "r")) {
        std::array<char, 128> buf{};
        std::string out;
        while (std::fgets(buf.data(), static_cast<int>(buf.size()), p)) out += buf.data();
        pclose(p);
        if (const auto v = parse_slurm_time_left(out)) left = *v;
      }
    }
  }
  MPI_Bcast(&left, 1, MPI_DOUBLE, 0, comm);
  if (left < 0) return std::nullopt;
  return left;
}

}  // namespace bilevel
