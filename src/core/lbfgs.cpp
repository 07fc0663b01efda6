/// \file L-BFGS: the two-loop recursion with H_0 = γ M and the minimiser around it (see core/lbfgs.hpp).
#include "bilevel/core/lbfgs.hpp"

#include <cmath>
#include <utility>

#include "bilevel/core/run_clock.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {

Lbfgs::Lbfgs(Vec layout, PetscInt memory, LbfgsPreconditioner precondition, PetscReal curvature_eps)
    : memory_(memory), precondition_(std::move(precondition)), eps_(curvature_eps) {
  if (memory_ < 1) throw InputError("L-BFGS: the memory must be at least 1 pair");
  q_ = petsc::duplicate(layout);
  mt_ = petsc::duplicate(layout);
  alpha_.resize(static_cast<std::size_t>(memory_));
}

void Lbfgs::reset() {
  s_.clear();
  t_.clear();
  rho_.clear();
}

void Lbfgs::precondition(Vec in, Vec out) {
  if (precondition_)
    precondition_(in, out);
  else
    BILEVEL_PETSC_CALL(VecCopy(in, out));
}

bool Lbfgs::push(Vec s, Vec t) {
  PetscReal st = 0, ss = 0, tt = 0;
  BILEVEL_PETSC_CALL(VecDot(s, t, &st));
  BILEVEL_PETSC_CALL(VecDot(s, s, &ss));
  BILEVEL_PETSC_CALL(VecDot(t, t, &tt));
  if (!(st > eps_ * std::sqrt(ss * tt))) return false;  // no positive curvature along s: H would lose SPD
  precondition(t, mt_);
  PetscReal tmt = 0;
  BILEVEL_PETSC_CALL(VecDot(t, mt_, &tmt));
  gamma_ = st / tmt;  // γ = sᵀt / tᵀ M t
  petsc::VecHandle sn, tn;
  if (size() == memory_) {  // reuse the oldest pair's storage
    sn = std::move(s_.front());
    tn = std::move(t_.front());
    s_.erase(s_.begin());
    t_.erase(t_.begin());
    rho_.erase(rho_.begin());
  } else {
    sn = petsc::duplicate(s);
    tn = petsc::duplicate(t);
  }
  BILEVEL_PETSC_CALL(VecCopy(s, sn));
  BILEVEL_PETSC_CALL(VecCopy(t, tn));
  s_.push_back(std::move(sn));
  t_.push_back(std::move(tn));
  rho_.push_back(1.0 / st);
  return true;
}

void Lbfgs::apply(Vec g, Vec out) {
  // q = g;  for i = newest … oldest: α_i = ρ_i s_iᵀ q,  q ← q − α_i t_i
  BILEVEL_PETSC_CALL(VecCopy(g, q_));
  const auto m = static_cast<std::size_t>(size());
  for (std::size_t k = m; k-- > 0;) {
    PetscReal sq = 0;
    BILEVEL_PETSC_CALL(VecDot(s_[k], q_, &sq));
    alpha_[k] = rho_[k] * sq;
    BILEVEL_PETSC_CALL(VecAXPY(q_, -alpha_[k], t_[k]));
  }
  // r = γ M q;  for i = oldest … newest: β = ρ_i t_iᵀ r,  r ← r + (α_i − β) s_i
  precondition(q_, out);
  BILEVEL_PETSC_CALL(VecScale(out, gamma_));
  for (std::size_t k = 0; k < m; ++k) {
    PetscReal tr = 0;
    BILEVEL_PETSC_CALL(VecDot(t_[k], out, &tr));
    BILEVEL_PETSC_CALL(VecAXPY(out, alpha_[k] - rho_[k] * tr, s_[k]));
  }
}

LbfgsResult lbfgs_minimize(const LbfgsObjective& objective,
                           Vec y,
                           const LbfgsOptions& o,
                           LbfgsPreconditioner precondition,
                           const std::function<void()>& refresh) {
  Lbfgs H(y, o.memory, std::move(precondition), o.curvature_eps);
  petsc::VecHandle yv = petsc::duplicate(y), g = petsc::duplicate(y), d = petsc::duplicate(y),
                   ynew = petsc::duplicate(y), gnew = petsc::duplicate(y), s = petsc::duplicate(y),
                   t = petsc::duplicate(y);
  BILEVEL_PETSC_CALL(VecCopy(y, yv));
  PetscReal f = objective(yv, g);
  LbfgsResult r;
  for (r.iterations = 0; r.iterations < o.max_it; ++r.iterations) {
    BILEVEL_PETSC_CALL(VecNorm(g, NORM_2, &r.gradient_norm));
    if (r.gradient_norm <= o.gatol) {
      r.converged = true;
      break;
    }
    if (o.deadline_comm != MPI_COMM_NULL && phase_deadline_passed(o.deadline_comm)) break;
    if (o.refresh_every > 0 && r.iterations % o.refresh_every == 0) {
      if (refresh) refresh();
      H.set_scale(1);
    }
    H.apply(g, d);  // d = −H ∇φ
    BILEVEL_PETSC_CALL(VecScale(d, -1));
    PetscReal gd = 0;
    BILEVEL_PETSC_CALL(VecDot(g, d, &gd));
    if (!(gd < 0)) {  // not a descent direction (rounding): restart from the preconditioned gradient
      H.reset();
      H.precondition(g, d);
      BILEVEL_PETSC_CALL(VecScale(d, -1));
      BILEVEL_PETSC_CALL(VecDot(g, d, &gd));
    }
    const ArmijoResult ls = armijo_backtrack(
        [&](PetscReal step) {
          BILEVEL_PETSC_CALL(VecWAXPY(ynew, step, d, yv));  // y + t d
          return objective(ynew, gnew);
        },
        f,
        gd,
        o.line_search);
    if (!ls.accepted) break;
    BILEVEL_PETSC_CALL(VecWAXPY(s, -1, yv, ynew));  // s = y_new − y
    BILEVEL_PETSC_CALL(VecWAXPY(t, -1, g, gnew));   // t = ∇φ(y_new) − ∇φ(y)
    H.push(s, t);
    std::swap(yv, ynew);
    std::swap(g, gnew);
    f = ls.value;
  }
  BILEVEL_PETSC_CALL(VecNorm(g, NORM_2, &r.gradient_norm));
  r.converged = r.converged || r.gradient_norm <= o.gatol;
  r.value = f;
  BILEVEL_PETSC_CALL(VecCopy(yv, y));
  return r;
}

}  // namespace bilevel
