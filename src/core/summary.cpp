#include "bilevel/core/summary.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "bilevel/petsc/error.hpp"

#ifndef BILEVEL_VERSION
#define BILEVEL_VERSION "0.0.0"
#endif

namespace bilevel {
namespace {

std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  char b[64];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string optional_number(const std::optional<PetscReal>& v) {
  return v ? number(*v) : "null";
}

}  // namespace

const char* version() {
  return BILEVEL_VERSION;
}

std::string summary_json(const SolveReport& r, const std::vector<std::pair<std::string, PetscReal>>& extras) {
  std::ostringstream s;
  s << "{\n";
  s << "  \"problem\": " << quoted(r.problem) << ",\n";
  s << "  \"method\": " << quoted(r.method) << ",\n";
  s << "  \"ranks\": " << r.ranks << ",\n";
  s << "  \"outer_iterations\": " << r.outer_iterations << ",\n";
  s << "  \"wall_time_s\": " << number(r.wall_time_s) << ",\n";
  s << "  \"upper_objective\": " << number(r.upper_objective) << ",\n";
  s << "  \"test_loss\": " << optional_number(r.test_loss) << ",\n";
  s << "  \"test_accuracy\": " << optional_number(r.test_accuracy) << ",\n";
  s << "  \"hypergradient_norm\": " << number(r.hypergradient_norm) << ",\n";
  if (r.true_hypergradient_norm)
    s << "  \"true_hypergradient_norm\": " << number(*r.true_hypergradient_norm) << ",\n";
  s << "  \"value_function\": " << optional_number(r.value_function) << ",\n";
  s << "  \"exact_hypergradient_norm\": " << optional_number(r.exact_hypergradient_norm) << ",\n";
  s << "  \"hypergradient_relative_error\": " << optional_number(r.hypergradient_relative_error) << ",\n";
  s << "  \"hypergradient_cosine\": " << optional_number(r.hypergradient_cosine) << ",\n";
  s << "  \"lower_distance\": " << optional_number(r.lower_distance) << ",\n";
  s << "  \"hypergradient_error_bound\": " << optional_number(r.hypergradient_error_bound) << ",\n";
  if (r.optimal_upper_objective)
    s << "  \"optimal_upper_objective\": " << number(*r.optimal_upper_objective) << ",\n";
  if (r.verified_hypergradient_norm)
    s << "  \"verified_hypergradient_norm\": " << number(*r.verified_hypergradient_norm) << ",\n";
  if (r.gatol_rejections > 0) s << "  \"gatol_rejections\": " << r.gatol_rejections << ",\n";
  for (const auto& [k, v] : extras) s << "  " << quoted(k) << ": " << number(v) << ",\n";
  s << "  \"oracle_counts\": {\"grad_f\": " << r.counts.grad_f << ", \"grad_g\": " << r.counts.grad_g
    << ", \"hvp\": " << r.counts.hvp << ", \"jvp\": " << r.counts.jvp << ", \"samples\": " << r.counts.samples
    << ", \"value_f\": " << r.counts.value_f << ", \"value_g\": " << r.counts.value_g << "},\n";
  s << "  \"converged_reason\": " << quoted(std::string(to_string(r.reason))) << ",\n";
  if (r.stop_signal) s << "  \"stop_signal\": " << r.stop_signal << ",\n";
  s << "  \"checkpoints_written\": " << r.checkpoints_written << ",\n";
  s << "  \"checkpoint_bytes\": " << r.checkpoint_bytes << ",\n";
  s << "  \"checkpoint_seconds\": " << number(r.checkpoint_seconds) << ",\n";
  s << "  \"restarted_from_iteration\": "
    << (r.restarted_from_iteration ? std::to_string(*r.restarted_from_iteration) : std::string("null"))
    << ",\n";
  s << "  \"peak_rss_bytes\": " << r.peak_rss_bytes << ",\n";
  s << "  \"data_bytes_per_rank\": " << r.data_bytes_per_rank << ",\n";
  s << "  \"coordinator_fraction\": " << number(r.coordinator_fraction) << ",\n";
  s << "  \"bytes_communicated_per_iteration\": " << number(r.bytes_communicated_per_iteration) << ",\n";
  s << "  \"seed\": " << r.seed << ",\n";
  s << "  \"version\": " << quoted(version()) << "\n";
  s << "}\n";
  return s.str();
}

void check_output_path(MPI_Comm comm, const std::string& path, const std::string& option) {
  int rank = 0, ok = 1;
  MPI_Comm_rank(comm, &rank);
  std::string why;
  if (rank == 0) {
    // The file is written as path.tmp and renamed, so path.tmp must be creatable in path's folder.
    const std::string tmp = path + ".tmp";
    const bool existed = std::ifstream(tmp).good();
    std::ofstream probe(tmp, std::ios::out | std::ios::app);
    ok = probe.good() ? 1 : 0;
    if (!ok) why = std::strerror(errno);
    probe.close();
    if (ok && !existed) std::remove(tmp.c_str());
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  if (!ok)
    throw InputError("cannot write " + path + " (option " + option + ")" + (why.empty() ? "" : ": " + why));
}

void write_file_atomically(MPI_Comm comm,
                           const std::string& path,
                           const std::string& text,
                           const std::string& option) {
  int rank = 0, ok = 1;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::out | std::ios::trunc);
      out << text;
      out.close();
      ok = out.fail() ? 0 : 1;
    }
    if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) ok = 0;
    if (!ok) std::remove(tmp.c_str());
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  if (!ok) throw InputError("cannot write " + path + " (option " + option + ")");
}

}  // namespace bilevel
