#include "bilevel/core/monitor.hpp"

#include <cstdio>
#include <ios>

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
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer_, "bilevel: problem %s, method %s, %d rank%s\n", problem.c_str(),
                                            method.c_str(), ranks, ranks == 1 ? "" : "s"));
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
  char extra[256] = "";
  int n = 0;
  if (r.true_hypergradient_norm)
    n += std::snprintf(extra + n, sizeof extra - n, "  |gradF| %.3e", *r.true_hypergradient_norm);
  if (r.test_accuracy) n += std::snprintf(extra + n, sizeof extra - n, "  test acc %.4f", *r.test_accuracy);
  if (r.test_loss) n += std::snprintf(extra + n, sizeof extra - n, "  test loss %.5f", *r.test_loss);
  if (r.linear_residual >= 0)
    n += std::snprintf(extra + n, sizeof extra - n, "  lin.res %.2e", r.linear_residual);
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer_, "%5lld  %8.2fs  F %.6e  |h| %.3e%s  (%.0fs left)\n",
                                            static_cast<long long>(r.iteration), r.wall_time, r.upper_objective,
                                            r.hypergradient_norm, extra, left));
}

std::string csv_header() {
  return "iteration,wall_time_s,upper_objective,hypergradient_norm,true_hypergradient_norm,test_loss,"
         "test_accuracy,lower_residual,linear_residual,grad_f,grad_g,hvp,jvp,samples";
}

std::string csv_row(const IterationRecord& r) {
  auto opt = [](const std::optional<PetscReal>& v) {
    if (!v) return std::string();
    char b[64];
    std::snprintf(b, sizeof b, "%.10g", *v);
    return std::string(b);
  };
  char line[512];
  std::snprintf(line, sizeof line, "%lld,%.6f,%.12g,%.6e,%s,%s,%s,%.4e,%.4e,%lld,%lld,%lld,%lld,%lld",
                static_cast<long long>(r.iteration), r.wall_time, r.upper_objective, r.hypergradient_norm,
                opt(r.true_hypergradient_norm).c_str(), opt(r.test_loss).c_str(), opt(r.test_accuracy).c_str(),
                r.lower_residual, r.linear_residual, static_cast<long long>(r.counts.grad_f),
                static_cast<long long>(r.counts.grad_g), static_cast<long long>(r.counts.hvp),
                static_cast<long long>(r.counts.jvp), static_cast<long long>(r.counts.samples));
  return line;
}

CallbackMonitor::~CallbackMonitor() {
  if (destroy_) (void)destroy_(&ctx_);
}

void CallbackMonitor::on_iteration(const IterationRecord& record) {
  const PetscErrorCode ierr = function_(record, ctx_);
  if (ierr) throw petsc::Error(ierr, "a monitor set with BilevelSolver::monitor_set failed", __FILE__, __LINE__);
}

CsvTraceMonitor::CsvTraceMonitor(MPI_Comm comm, std::string path, PetscInt every)
    : comm_(comm), path_(std::move(path)), tmp_(path_ + ".tmp"), every_(every) {
  int ok = 1;
  if (rank_of(comm_) == 0) {
    out_.open(tmp_, std::ios::out | std::ios::trunc);
    ok = out_.good() ? 1 : 0;
    if (ok)
      out_ << csv_header() << '\n';
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm_);
  if (!ok) throw InputError("cannot write trace file " + path_ + " (option --trace)");
}

CsvTraceMonitor::~CsvTraceMonitor() {
  if (!finished_ && out_.is_open()) {
    out_.close();
    std::remove(tmp_.c_str());  // no half-written output
  }
}

void CsvTraceMonitor::on_iteration(const IterationRecord& r) {
  if (rank_of(comm_) != 0) return;
  if (every_ > 1 && r.iteration % every_ != 0) return;
  out_ << csv_row(r) << '\n';
}

void CsvTraceMonitor::on_finish(const IterationRecord&) {
  int ok = 1;
  if (rank_of(comm_) == 0) {
    out_.close();
    ok = (!out_.fail() && std::rename(tmp_.c_str(), path_.c_str()) == 0) ? 1 : 0;
  }
  finished_ = true;
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm_);
  if (!ok) throw InputError("cannot write trace file " + path_ + " (option --trace)");
}

}  // namespace bilevel
