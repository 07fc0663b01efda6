// BilevelSolver's output at the end of solve(), as PETSc solvers give it: -bilevel_converged_reason and
// -bilevel_view through PETSc viewers, and the detail view of the last solve.
#include <string>

#include "bilevel/core/solver.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {

void BilevelSolver::view_from_options(const SolveReport& report) {
  last_reason_ = report.reason;
  last_report_ = report;
  if (const auto& v = reason_viewer_) {
    BILEVEL_PETSC_CALL(PetscViewerPushFormat(v->viewer, v->format));
    const std::string reason(to_string(report.reason));
    const bool converged = report.reason > ConvergedReason::Iterating;
    const std::string prefix = prefix_.empty() ? "" : " (" + prefix_ + ")";
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(v->viewer,
                                              "Bilevel solve%s %s due to %s iterations %lld\n",
                                              prefix.c_str(),
                                              converged ? "converged" : "did not converge",
                                              reason.c_str(),
                                              static_cast<long long>(report.outer_iterations)));
    BILEVEL_PETSC_CALL(PetscViewerPopFormat(v->viewer));
  }
  if (const auto& v = view_viewer_) {
    BILEVEL_PETSC_CALL(PetscViewerPushFormat(v->viewer, v->format));
    view(v->viewer);
    BILEVEL_PETSC_CALL(PetscViewerPopFormat(v->viewer));
  }
}

void BilevelSolver::view_last_solve(PetscViewer viewer) const {
  PetscViewerFormat format = PETSC_VIEWER_DEFAULT;
  BILEVEL_PETSC_CALL(PetscViewerGetFormat(viewer, &format));
  if (format != PETSC_VIEWER_ASCII_INFO_DETAIL || !last_report_) return;
  const SolveReport& r = *last_report_;
  const std::string reason(to_string(r.reason));
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
      viewer,
      "last solve: %s after %lld iterations in %.3f s on %d rank%s, upper objective %g\n",
      reason.c_str(),
      static_cast<long long>(r.outer_iterations),
      r.wall_time_s,
      r.ranks,
      r.ranks == 1 ? "" : "s",
      static_cast<double>(r.upper_objective)));
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                            "oracle calls: grad_f %lld, grad_g %lld, hvp %lld, jvp %lld, "
                                            "value_f %lld, value_g %lld, samples %lld\n",
                                            static_cast<long long>(r.counts.grad_f),
                                            static_cast<long long>(r.counts.grad_g),
                                            static_cast<long long>(r.counts.hvp),
                                            static_cast<long long>(r.counts.jvp),
                                            static_cast<long long>(r.counts.value_f),
                                            static_cast<long long>(r.counts.value_g),
                                            static_cast<long long>(r.counts.samples)));
}

}  // namespace bilevel
