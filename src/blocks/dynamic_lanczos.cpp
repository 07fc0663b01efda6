#include "bilevel/blocks/dynamic_lanczos.hpp"

#include <slepcbv.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

PetscInt solve_spd_tridiagonal(std::span<const PetscReal> alpha,
                               std::span<const PetscReal> beta,
                               std::span<const PetscReal> rhs,
                               std::span<PetscReal> s,
                               std::span<PetscReal> pivot) {
  const auto n = static_cast<PetscInt>(alpha.size());
  BILEVEL_ASSERT(static_cast<PetscInt>(beta.size()) + 1 >= n && static_cast<PetscInt>(rhs.size()) >= n &&
                 static_cast<PetscInt>(s.size()) >= n && static_cast<PetscInt>(pivot.size()) >= n);
  PetscReal scale = 0;
  for (PetscInt i = 0; i < n; ++i) scale = std::max(scale, std::abs(alpha[i]));
  const PetscReal tiny = 64 * PETSC_MACHINE_EPSILON * scale;
  // Forward sweep of T = L D Lᵀ (unit lower bidiagonal L with l_i = β_{i-1}/d_{i-1}): z = L⁻¹ rhs, kept in s.
  PetscInt k = 0;
  for (; k < n; ++k) {
    const PetscReal l = k > 0 ? beta[k - 1] / pivot[k - 1] : 0;
    pivot[k] = alpha[k] - (k > 0 ? l * beta[k - 1] : 0);  // d_k = α_k − β_{k-1}²/d_{k-1}
    if (!(pivot[k] > tiny) || !std::isfinite(pivot[k])) break;
    s[k] = rhs[k] - (k > 0 ? l * s[k - 1] : 0);  // z_k = rhs_k − l_k z_{k-1}
  }
  // Backward sweep on the leading k x k block: s = L⁻ᵀ D⁻¹ z.
  for (PetscInt i = k - 1; i >= 0; --i) {
    s[i] /= pivot[i];
    if (i + 1 < k) s[i] -= (beta[i] / pivot[i]) * s[i + 1];  // s_i = z_i/d_i − l_{i+1} s_{i+1}
  }
  return k;
}

void DynamicLanczos::setup(Vec y_layout, PetscInt max_dim, bool precondition) {
  BILEVEL_ASSERT(max_dim >= 1);
  max_dim_ = max_dim;
  precondition_ = precondition;
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(y_layout));
  BILEVEL_PETSC_CALL(BVCreate(comm, basis_.out()));
  BILEVEL_PETSC_CALL(BVSetSizesFromVec(basis_, y_layout, max_dim));
  BILEVEL_PETSC_CALL(BVSetOptionsPrefix(basis_, petsc::prefixed("bilevel_lanczos_bv_").c_str()));
  BILEVEL_PETSC_CALL(BVSetFromOptions(basis_));
  for (petsc::VecHandle* v : {&anchor_, &w_, &b_bar_, &q_, &m_, &m_prev_, &t_, &mt_, &d_})
    *v = petsc::duplicate(y_layout);
  alpha_.clear();
  beta_.clear();
  alpha_.reserve(static_cast<std::size_t>(max_dim));
  beta_.reserve(static_cast<std::size_t>(max_dim));
  rhs_.assign(static_cast<std::size_t>(max_dim), 0.0);
  s_.assign(static_cast<std::size_t>(max_dim), 0.0);
  pivot_.assign(static_cast<std::size_t>(max_dim), 0.0);
  exhausted_ = true;
}

void DynamicLanczos::declare_state(StateRegistry& state, const std::string& prefix) {
  state.add(prefix + "basis", basis_.get());
  state.add(prefix + "alpha", alpha_);
  state.add(prefix + "beta", beta_);
  for (auto [name, v] : {std::pair{"anchor", &anchor_},
                         std::pair{"w", &w_},
                         std::pair{"b_bar", &b_bar_},
                         std::pair{"q", &q_},
                         std::pair{"m", &m_},
                         std::pair{"m_prev", &m_prev_}})
    state.add(prefix + name, v->get());
  state.add(prefix + "r_bar_norm", r_bar_norm_);
  state.add(prefix + "beta_last", beta_last_);
  state.add_text(
      prefix + "exhausted",
      [this] { return std::string(exhausted_ ? "1" : "0"); },
      [this](const std::string& t) { exhausted_ = t == "1" || precondition_; });
}

void DynamicLanczos::apply_m(Vec in, Vec out) {
  if (precondition_)
    problem_->lower_precondition(in, out);
  else
    BILEVEL_PETSC_CALL(VecCopy(in, out));
}

void DynamicLanczos::restart(BilevelProblem& problem, Vec x, Vec y, const Batch& batch, Vec v, Vec b) {
  BILEVEL_ASSERT(basis_);
  problem_ = &problem;
  if (precondition_)
    problem.lower_preconditioner_setup(x, y);     // M at (x_k, y_{k+1}) (header: within a cycle)
  BILEVEL_PETSC_CALL(VecCopy(v, anchor_));        // v̄ = v_k
  problem.lower_hvp(x, y, batch, anchor_, w_);    // w = H(x_k, y_{k+1}) v̄  (Alg. 4, restart)
  BILEVEL_PETSC_CALL(VecCopy(b, b_bar_));         // b̄ = b_k
  BILEVEL_PETSC_CALL(VecWAXPY(m_, -1.0, w_, b));  // r̄ = b̄ − w
  apply_m(m_, q_);                                // M r̄
  PetscReal rho2 = 0;
  BILEVEL_PETSC_CALL(VecDot(m_, q_, &rho2));  // ρ² = r̄ᵀ M r̄
  alpha_.clear();
  beta_.clear();
  beta_last_ = 0;
  exhausted_ = !(rho2 > 0 && std::isfinite(rho2));
  r_bar_norm_ = exhausted_ ? 0 : std::sqrt(rho2);
  if (!exhausted_) {
    BILEVEL_PETSC_CALL(VecScale(q_, 1.0 / r_bar_norm_));  // q_1 = r̄/||r̄||  (u_1 = M r̄/ρ)
    BILEVEL_PETSC_CALL(VecScale(m_, 1.0 / r_bar_norm_));  // m_1 = r̄/ρ
  }
}

void DynamicLanczos::extend(BilevelProblem& problem, Vec x, Vec y, const Batch& batch) {
  if (exhausted_) return;
  const PetscInt j = dimension();
  problem.lower_hvp(x, y, batch, q_, t_);                            // z = H q_j
  if (j > 0) BILEVEL_PETSC_CALL(VecAXPY(t_, -beta_last_, m_prev_));  // z −= β_{j-1} q_{j-1}
  PetscReal a = 0;
  BILEVEL_PETSC_CALL(VecDot(q_, t_, &a));          // α_j = q_jᵀ z
  BILEVEL_PETSC_CALL(BVInsertVec(basis_, j, q_));  // Q_j = [Q_{j-1}, q_j]
  if (j > 0) beta_.push_back(beta_last_);          // T_j gains β_{j-1} off the diagonal
  alpha_.push_back(a);                             // … and α_j on it
  BILEVEL_PETSC_CALL(VecAXPY(t_, -a, m_));         // ω = z − α_j q_j
  apply_m(t_, mt_);                                // M ω
  PetscReal b2 = 0;
  BILEVEL_PETSC_CALL(VecDot(t_, mt_, &b2));  // β_j² = ||ω||² (ωᵀ M ω)
  // The contents move, not the handles: the checkpoint registry holds these Vecs by identity (swapped
  // handles put q, m and m_prev under each other's names, and a restart inside a cycle went astray).
  BILEVEL_PETSC_CALL(VecSwap(m_prev_, m_));  // q_{j-1} <- q_j
  BILEVEL_PETSC_CALL(VecSwap(m_, t_));       // dual m_{j+1} <- ω / β_j
  BILEVEL_PETSC_CALL(VecSwap(q_, mt_));      // q_{j+1} <- M ω / β_j
  const PetscReal b = b2 > 0 ? std::sqrt(b2) : 0;
  const PetscReal scale = std::abs(a) + (j > 0 ? beta_.back() : 0);
  if (std::isfinite(b) && b > 1e3 * PETSC_MACHINE_EPSILON * scale) {
    BILEVEL_PETSC_CALL(VecScale(q_, 1.0 / b));
    BILEVEL_PETSC_CALL(VecScale(m_, 1.0 / b));
    beta_last_ = b;
  } else {
    beta_last_ = 0;  // invariant subspace (or garbage): no next vector, restart next time
    exhausted_ = true;
  }
  if (dimension() >= max_dim_) exhausted_ = true;
}

PetscReal DynamicLanczos::solve(Vec b, Vec v) {
  petsc::ScopedEvent ev(petsc::events().hypergradient);
  const PetscInt j = dimension();
  // ||r|| or, preconditioned, ||r||_M = sqrt(rᵀ M r); r is overwritten
  auto norm_of = [&](Vec r) {
    PetscReal out = 0;
    if (!precondition_) {
      BILEVEL_PETSC_CALL(VecNorm(r, NORM_2, &out));
      return out;
    }
    apply_m(r, mt_);
    BILEVEL_PETSC_CALL(VecDot(r, mt_, &out));
    return std::sqrt(std::max<PetscReal>(out, 0));
  };
  BILEVEL_PETSC_CALL(VecCopy(anchor_, v));  // v = v̄ + …
  if (j == 0) {
    BILEVEL_PETSC_CALL(VecWAXPY(d_, -1.0, w_, b));  // empty cycle: v = v̄, residual ≈ ||b − w||
    return norm_of(d_);
  }
  BILEVEL_PETSC_CALL(VecWAXPY(d_, -1.0, b_bar_, b));  // d = b_k − b̄
  BILEVEL_PETSC_CALL(BVSetActiveColumns(basis_, 0, j));
  BILEVEL_PETSC_CALL(BVDotVec(basis_, d_, rhs_.data()));  // Q_jᵀ d
  const PetscReal dnorm = norm_of(d_);
  rhs_[0] += r_bar_norm_;  // Q_jᵀ(b_k − w) = ||r̄|| e_1 + Q_jᵀ d  (see the class comment)
  // s = T_j⁻¹ Q_jᵀ(b_k − w): Thomas algorithm, replicated on every rank.
  const std::span<const PetscReal> al(alpha_), be(beta_);
  const PetscInt k =
      solve_spd_tridiagonal(al,
                            be.first(static_cast<std::size_t>(j - 1)),
                            std::span<const PetscReal>(rhs_).first(static_cast<std::size_t>(j)),
                            std::span<PetscReal>(s_),
                            std::span<PetscReal>(pivot_));
  if (k < j) exhausted_ = true;  // T_j not positive definite: use the leading block, restart next time
  if (k == 0) {
    BILEVEL_PETSC_CALL(VecWAXPY(d_, -1.0, w_, b));
    return norm_of(d_);
  }
  BILEVEL_PETSC_CALL(BVSetActiveColumns(basis_, 0, k));
  BILEVEL_PETSC_CALL(BVMultVec(basis_, 1.0, 1.0, v, s_.data()));  // v = v̄ + Q_k s
  // ||H v − b||² ≈ ||d − Q Qᵀd||² + (β_k s_k)²: the Lanczos relation H Q_k = Q_k T_k + β_k q_{k+1} e_kᵀ.
  PetscReal kept = 0;  // ||Q_kᵀ d||²
  for (PetscInt i = 0; i < k; ++i) {
    const PetscReal c = rhs_[static_cast<std::size_t>(i)] - (i == 0 ? r_bar_norm_ : 0);
    kept += c * c;
  }
  const PetscReal beta_k = k == j ? beta_last_ : beta_[static_cast<std::size_t>(k - 1)];
  const PetscReal tail = beta_k * s_[static_cast<std::size_t>(k - 1)];
  return std::sqrt(std::max<PetscReal>(dnorm * dnorm - kept, 0) + tail * tail);
}

}  // namespace bilevel
