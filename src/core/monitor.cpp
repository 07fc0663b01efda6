#include "bilevel/core/monitor.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <ios>
#include <string>
#include <vector>

#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

int rank_of(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

}  // namespace

ProgressMonitor::ProgressMonitor(MPI_Comm comm, PetscInt every)
    : viewer_(petsc::ViewerHandle::borrow(PETSC_VIEWER_STDOUT_(comm))), every_(every) {}

ProgressMonitor::ProgressMonitor(PetscViewer viewer, PetscViewerFormat format, PetscInt every)
    : viewer_(petsc::ViewerHandle::borrow(viewer)), format_(format), every_(every) {}

void ProgressMonitor::on_start(const std::string& problem, const std::string& method, int ranks) {
  if (format_ == PETSC_VIEWER_ASCII_CSV) {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer_, "%s\n", csv_header().c_str()));
    return;
  }
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer_,
                                            "bilevel: problem %s, method %s, %d rank%s\n",
                                            problem.c_str(),
                                            method.c_str(),
                                            ranks,
                                            ranks == 1 ? "" : "s"));
}

void ProgressMonitor::on_resume(std::int64_t iteration) {
  if (format_ == PETSC_VIEWER_ASCII_CSV) return;  // the rows say it
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer_,
                                            "bilevel: continuing from the checkpoint of iteration %lld\n",
                                            static_cast<long long>(iteration)));
}

void ProgressMonitor::on_iteration(const IterationRecord& r) {
  if (every_ > 1 && r.iteration % every_ != 0 && r.iteration != r.max_iterations) return;
  if (format_ == PETSC_VIEWER_ASCII_CSV) {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer_, "%s\n", csv_row(r).c_str()));
    return;
  }
  // Time left: the slower of the iteration budget and the time budget.
  double left = r.max_iterations > 0 && r.iteration > 0
                    ? r.wall_time / r.iteration * static_cast<double>(r.max_iterations - r.iteration)
                    : 0;
  if (r.max_time > 0) left = std::min(left, std::max(0.0, r.max_time - r.wall_time));
  char extra[512] = "";
  int n = 0;
  if (r.true_hypergradient_norm)
    n += std::snprintf(extra + n, sizeof extra - n, "  |gradF| %.3e", *r.true_hypergradient_norm);
  if (r.test_accuracy) n += std::snprintf(extra + n, sizeof extra - n, "  test acc %.4f", *r.test_accuracy);
  if (r.test_loss) n += std::snprintf(extra + n, sizeof extra - n, "  test loss %.5f", *r.test_loss);
  if (r.linear_residual >= 0)
    n += std::snprintf(extra + n, sizeof extra - n, "  lin.res %.2e", r.linear_residual);
  if (r.hypergradient_error_bound)
    n += std::snprintf(extra + n, sizeof extra - n, "  err<= %.2e", *r.hypergradient_error_bound);
  if (r.exact_hypergradient_norm)
    n += std::snprintf(extra + n, sizeof extra - n, "  exact|gradF| %.3e", *r.exact_hypergradient_norm);
  if (r.hypergradient_relative_error)
    n += std::snprintf(extra + n, sizeof extra - n, "  rel.err %.2e", *r.hypergradient_relative_error);
  char h[32] = "-";  // row 0, the start point, has no estimate yet
  if (std::isfinite(r.hypergradient_norm)) std::snprintf(h, sizeof h, "%.3e", r.hypergradient_norm);
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer_,
                                            "%5lld  %8.2fs  F %.6e  |h| %s%s  (%.0fs left)\n",
                                            static_cast<long long>(r.iteration),
                                            r.wall_time,
                                            r.upper_objective,
                                            h,
                                            extra,
                                            left));
}

std::string csv_header() {
  return "iteration,wall_time_s,upper_objective,hypergradient_norm,true_hypergradient_norm,test_loss,"
         "test_accuracy,lower_residual,linear_residual,grad_f,grad_g,hvp,jvp,samples,value_function,"
         "exact_hypergradient_norm,hypergradient_relative_error,hypergradient_cosine,lower_distance,"
         "hypergradient_error_bound";
}

std::string csv_row(const IterationRecord& r) {
  auto opt = [](const std::optional<PetscReal>& v) {  // empty for none (row 0 has no estimate)
    if (!v || !std::isfinite(*v)) return std::string();
    char b[64];
    std::snprintf(b, sizeof b, "%.10g", *v);
    return std::string(b);
  };
  char line[1024];
  std::snprintf(line,
                sizeof line,
                "%lld,%.6f,%.12g,%s,%s,%s,%s,%.4e,%.4e,%lld,%lld,%lld,%lld,%lld,%s,%s,%s,%s,%s,%s",
                static_cast<long long>(r.iteration),
                r.wall_time,
                r.upper_objective,
                opt(r.hypergradient_norm).c_str(),
                opt(r.true_hypergradient_norm).c_str(),
                opt(r.test_loss).c_str(),
                opt(r.test_accuracy).c_str(),
                r.lower_residual,
                r.linear_residual,
                static_cast<long long>(r.counts.grad_f),
                static_cast<long long>(r.counts.grad_g),
                static_cast<long long>(r.counts.hvp),
                static_cast<long long>(r.counts.jvp),
                static_cast<long long>(r.counts.samples),
                opt(r.value_function).c_str(),
                opt(r.exact_hypergradient_norm).c_str(),
                opt(r.hypergradient_relative_error).c_str(),
                opt(r.hypergradient_cosine).c_str(),
                opt(r.lower_distance).c_str(),
                opt(r.hypergradient_error_bound).c_str());
  return line;
}

CallbackMonitor::~CallbackMonitor() {
  if (destroy_) (void)destroy_(&ctx_);
}

void CallbackMonitor::on_iteration(const IterationRecord& record) {
  const PetscErrorCode ierr = function_(record, ctx_);
  if (ierr)
    throw petsc::Error(ierr, "a monitor set with BilevelSolver::monitor_set failed", __FILE__, __LINE__);
}

namespace {

void agree_or_throw(MPI_Comm comm, int ok, const std::string& path) {
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  if (!ok) throw InputError("cannot write " + path + " (option --trace)");
}

}  // namespace

CsvTraceMonitor::CsvTraceMonitor(MPI_Comm comm, std::string path, PetscInt every)
    : comm_(comm), path_(std::move(path)), every_(every) {
  int ok = 1;
  if (rank_of(comm_) == 0) {
    const bool existed = std::ifstream(path_).good();
    std::ofstream probe(path_, std::ios::out | std::ios::app);
    ok = probe.good() ? 1 : 0;
    probe.close();
    if (ok && !existed) std::remove(path_.c_str());
  }
  agree_or_throw(comm_, ok, path_);
}

void CsvTraceMonitor::on_resume(std::int64_t iteration) {
  resume_after_ = iteration;
}

void CsvTraceMonitor::on_start(const std::string&, const std::string&, int) {
  int ok = 1;
  if (rank_of(comm_) == 0) {
    // A restart keeps the header and the rows up to its iteration (a run stopped after its last checkpoint
    // wrote rows that the restart computes again).
    std::vector<std::string> kept;
    if (resume_after_ >= 0) {
      std::ifstream in(path_);
      std::string line;
      if (std::getline(in, line) && line == csv_header())
        while (std::getline(in, line))
          if (!line.empty() && std::strtoll(line.c_str(), nullptr, 10) <= resume_after_) kept.push_back(line);
    }
    out_.open(path_, std::ios::out | std::ios::trunc);
    out_ << csv_header() << '\n';
    for (const auto& l : kept) out_ << l << '\n';
    out_.flush();
    ok = out_.good() ? 1 : 0;
  }
  agree_or_throw(comm_, ok, path_);
}

void CsvTraceMonitor::on_iteration(const IterationRecord& r) {
  if (rank_of(comm_) != 0 || !out_.is_open()) return;
  if (every_ > 1 && r.iteration % every_ != 0) return;
  out_ << csv_row(r) << '\n';
  out_.flush();  // readable during the run
}

void CsvTraceMonitor::on_finish(const IterationRecord&) {
  int ok = 1;
  if (rank_of(comm_) == 0 && out_.is_open()) {
    out_.close();
    ok = out_.fail() ? 0 : 1;
  }
  agree_or_throw(comm_, ok, path_);
}

}  // namespace bilevel
