#include "bilevel/blocks/two_system_solver.hpp"

#include <cmath>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

void TwoSystemSolver::setup(Vec y_layout, bool precondition) {
  precondition_ = precondition;
  for (std::size_t i = 0; i < 2; ++i) {
    r_[i] = petsc::duplicate(y_layout);
    p_[i] = petsc::duplicate(y_layout);
    q_[i] = petsc::duplicate(y_layout);
    if (precondition) z_[i] = petsc::duplicate(y_layout);
  }
}

void TwoSystemSolver::products(BilevelProblem& problem,
                               Vec x,
                               Vec y,
                               const Batch& batch,
                               const std::array<Vec, 2>& in,
                               const std::array<bool, 2>& active,
                               Report& report) {
  std::array<Vec, 2> w{}, out{};
  std::size_t k = 0;
  for (std::size_t i = 0; i < 2; ++i) {
    if (!active[i]) continue;
    w[k] = in[i];
    out[k] = q_[i];
    ++k;
  }
  if (k == 0) return;
  // q_i = H(x, y; B) w_i for the active systems, one pass over the data
  problem.lower_hvp_multi(
      x, y, batch, std::span<const Vec>(w.data(), k), std::span<const Vec>(out.data(), k));
  ++report.passes;
}

/// Work vectors on first use, v_i = 0 for the zero starts; returns whether v_i is nonzero on entry.
std::array<bool, 2> TwoSystemSolver::start(const Systems& systems) {
  if (!r_[0]) setup(systems.v[0]);
  for (std::size_t i = 0; i < 2; ++i)
    if (systems.zero_start[i]) BILEVEL_PETSC_CALL(VecSet(systems.v[i], 0.0));
  return {!systems.zero_start[0], !systems.zero_start[1]};
}

TwoSystemSolver::Report TwoSystemSolver::gradient(BilevelProblem& problem,
                                                  Vec x,
                                                  Vec y,
                                                  const Batch& batch,
                                                  const Systems& systems,
                                                  PetscInt steps,
                                                  PetscReal eta,
                                                  bool adapt_step,
                                                  BatchSampler* sampler,
                                                  PetscInt batch_size,
                                                  const StepHooks* hooks) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  const std::array<Vec, 2>& b = systems.b;
  const std::array<Vec, 2>& v = systems.v;
  std::array<bool, 2> nonzero = start(systems);
  Report report;
  const PetscInt n = problem.dataset_sizes().lower;
  for (PetscInt t = 0; t < steps; ++t) {
    const Batch bt = (hooks && hooks->next_batch)           ? hooks->next_batch()
                     : (sampler && batch_size > 0 && n > 0) ? sampler->next(n, batch_size)
                                                            : batch;
    products(problem, x, y, bt, v, nonzero, report);  // q_i = H v_i (skipped while v_i = 0)
    if (hooks && hooks->correct)
      for (std::size_t i = 0; i < 2; ++i)
        if (nonzero[i]) hooks->correct(i, q_[i]);
    if (adapt_step && (nonzero[0] || nonzero[1])) {
      // Rayleigh quotients ρ_i = v_iᵀH v_i / v_iᵀv_i <= λ_max(H): a step with η ρ_i > 1 is too long for H
      // (e.g. when H has grown since η = 1/L was set), so η <- 1/max ρ_i.
      std::array<PetscScalar, 2> vq{0, 0}, vv{0, 0};
      for (std::size_t i = 0; i < 2; ++i) {
        if (!nonzero[i]) continue;
        BILEVEL_PETSC_CALL(VecDotBegin(v[i], q_[i], &vq[i]));
        BILEVEL_PETSC_CALL(VecDotBegin(v[i], v[i], &vv[i]));
      }
      for (std::size_t i = 0; i < 2; ++i) {
        if (!nonzero[i]) continue;
        BILEVEL_PETSC_CALL(VecDotEnd(v[i], q_[i], &vq[i]));
        BILEVEL_PETSC_CALL(VecDotEnd(v[i], v[i], &vv[i]));
      }
      for (std::size_t i = 0; i < 2; ++i) {
        if (!nonzero[i] || !(vv[i] > 0)) continue;
        const PetscReal rho = vq[i] / vv[i];
        if (std::isfinite(rho) && eta * rho > 1) eta = 1 / rho;
      }
    }
    for (std::size_t i = 0; i < 2; ++i) {
      // r_i = H v_i − b_i
      if (nonzero[i]) {
        BILEVEL_PETSC_CALL(VecWAXPY(r_[i], -1.0, b[i], q_[i]));
      } else {
        BILEVEL_PETSC_CALL(VecCopy(b[i], r_[i]));
        BILEVEL_PETSC_CALL(VecScale(r_[i], -1.0));
      }
      BILEVEL_PETSC_CALL(VecAXPY(v[i], -eta, r_[i]));  // v_i <- v_i − η (H v_i − b_i)
      nonzero[i] = true;
    }
    if (t == steps - 1) {
      BILEVEL_PETSC_CALL(VecNormBegin(r_[0], NORM_2, &report.residual[0]));
      BILEVEL_PETSC_CALL(VecNormBegin(r_[1], NORM_2, &report.residual[1]));
      BILEVEL_PETSC_CALL(VecNormEnd(r_[0], NORM_2, &report.residual[0]));
      BILEVEL_PETSC_CALL(VecNormEnd(r_[1], NORM_2, &report.residual[1]));
    }
    ++report.iterations;
  }
  report.step = eta;
  return report;
}

TwoSystemSolver::Report TwoSystemSolver::cg(BilevelProblem& problem,
                                            Vec x,
                                            Vec y,
                                            const Batch& batch,
                                            const Systems& systems,
                                            PetscInt max_it,
                                            PetscReal rtol) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  const std::array<Vec, 2>& b = systems.b;
  const std::array<Vec, 2>& v = systems.v;
  const std::array<bool, 2> needs = start(systems);
  Report report;
  const bool pc = precondition_;
  if (pc) problem.lower_preconditioner_setup(x, y);
  products(problem, x, y, batch, v, needs, report);  // q_i = H v_i for the warm-started systems
  std::array<PetscReal, 2> bnorm{0, 0}, rho{0, 0};
  std::array<PetscScalar, 2> rr{0, 0}, rz{0, 0};
  for (std::size_t i = 0; i < 2; ++i) {
    // r_i = b_i − H v_i,  p_i = z_i = M r_i (or r_i)
    if (needs[i])
      BILEVEL_PETSC_CALL(VecWAXPY(r_[i], -1.0, q_[i], b[i]));
    else
      BILEVEL_PETSC_CALL(VecCopy(b[i], r_[i]));
    if (pc) problem.lower_precondition(r_[i], z_[i]);
    BILEVEL_PETSC_CALL(VecCopy(pc ? z_[i] : r_[i], p_[i]));
  }
  for (std::size_t i = 0; i < 2; ++i) {
    BILEVEL_PETSC_CALL(VecNormBegin(b[i], NORM_2, &bnorm[i]));
    BILEVEL_PETSC_CALL(VecDotBegin(r_[i], r_[i], &rr[i]));
    if (pc) BILEVEL_PETSC_CALL(VecDotBegin(r_[i], z_[i], &rz[i]));
  }
  for (std::size_t i = 0; i < 2; ++i) {
    BILEVEL_PETSC_CALL(VecNormEnd(b[i], NORM_2, &bnorm[i]));
    BILEVEL_PETSC_CALL(VecDotEnd(r_[i], r_[i], &rr[i]));
    if (pc) BILEVEL_PETSC_CALL(VecDotEnd(r_[i], z_[i], &rz[i]));
  }
  std::array<bool, 2> active{};
  for (std::size_t i = 0; i < 2; ++i) {
    rho[i] = pc ? rz[i] : rr[i];  // ρ_i = r_iᵀ z_i
    report.residual[i] = std::sqrt(rr[i]);
    active[i] = std::isfinite(rho[i]) && report.residual[i] > rtol * bnorm[i];
  }
  for (PetscInt it = 0; it < max_it && (active[0] || active[1]); ++it) {
    products(problem, x, y, batch, {p_[0], p_[1]}, active, report);  // q_i = H p_i, one pass
    std::array<PetscScalar, 2> pq{0, 0};
    for (std::size_t i = 0; i < 2; ++i)
      if (active[i]) BILEVEL_PETSC_CALL(VecDotBegin(p_[i], q_[i], &pq[i]));
    for (std::size_t i = 0; i < 2; ++i)
      if (active[i]) BILEVEL_PETSC_CALL(VecDotEnd(p_[i], q_[i], &pq[i]));
    for (std::size_t i = 0; i < 2; ++i) {
      if (!active[i]) continue;
      if (!(pq[i] > 0)) {  // non-positive curvature: keep the iterate, stop this system
        active[i] = false;
        continue;
      }
      const PetscReal alpha = rho[i] / pq[i];
      BILEVEL_PETSC_CALL(VecAXPY(v[i], alpha, p_[i]));    // v_i <- v_i + α p_i
      BILEVEL_PETSC_CALL(VecAXPY(r_[i], -alpha, q_[i]));  // r_i <- r_i − α H p_i
      if (pc) problem.lower_precondition(r_[i], z_[i]);   // z_i = M r_i
    }
    for (std::size_t i = 0; i < 2; ++i) {
      if (!active[i]) continue;
      BILEVEL_PETSC_CALL(VecDotBegin(r_[i], r_[i], &rr[i]));
      if (pc) BILEVEL_PETSC_CALL(VecDotBegin(r_[i], z_[i], &rz[i]));
    }
    for (std::size_t i = 0; i < 2; ++i) {
      if (!active[i]) continue;
      BILEVEL_PETSC_CALL(VecDotEnd(r_[i], r_[i], &rr[i]));
      if (pc) BILEVEL_PETSC_CALL(VecDotEnd(r_[i], z_[i], &rz[i]));
    }
    for (std::size_t i = 0; i < 2; ++i) {
      if (!active[i]) continue;
      const PetscReal next = pc ? rz[i] : rr[i];
      const PetscReal beta = next / rho[i];
      rho[i] = next;
      report.residual[i] = std::sqrt(rr[i]);
      BILEVEL_PETSC_CALL(VecAYPX(p_[i], beta, pc ? z_[i] : r_[i]));  // p_i <- z_i + β p_i
      active[i] = std::isfinite(rho[i]) && report.residual[i] > rtol * bnorm[i];
    }
    ++report.iterations;
  }
  return report;
}

}  // namespace bilevel
