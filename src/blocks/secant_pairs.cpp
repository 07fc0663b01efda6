#include "bilevel/blocks/secant_pairs.hpp"

#include <petscksp.h>

#include <algorithm>
#include <cmath>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

const char* to_string(SecantKind kind) {
  return kind == SecantKind::Bfgs ? "bfgs" : "sr1";
}

// ---------------------------------------------------------------------------------------------------------
// SecantPairs: Gram indexing: S slot j is index j, G slot j is index m + j.

SecantPairs::SecantPairs(Vec layout, SecantKind kind, PetscInt memory, SecantRules rules)
    : kind_(kind), m_(std::max<PetscInt>(memory, 0)), rules_(rules) {
  const auto m = static_cast<std::size_t>(m_);
  s_.reserve(m);
  g_.reserve(m);
  for (PetscInt j = 0; j < m_; ++j) {
    s_.push_back(petsc::duplicate(layout));
    g_.push_back(petsc::duplicate(layout));
  }
  list_.reserve(2 * m);
  order_.reserve(m);
  gram_.assign(4 * m * m, 0.0);
  dots_s_.assign(2 * m + 1, 0.0);
  dots_g_.assign(2 * m + 1, 0.0);
  dots_d_.assign(2 * m + 1, 0.0);
  a_.assign(2 * m, 0.0);
  b_.assign(2 * m, 0.0);
  coef_.assign(2 * m, 0.0);
  alpha_.assign(m, 0.0);
  maxpy_.assign(2 * m, 0.0);
  if (kind_ == SecantKind::Sr1) {
    p_.assign(2 * m * m, 0.0);
    sigma_.assign(m, 0.0);
    use_.assign(m, 0);
  }
}

void SecantPairs::declare_state(StateRegistry& state, const std::string& prefix) {
  for (PetscInt j = 0; j < m_; ++j) {
    state.add(prefix + "s" + std::to_string(j), s_[static_cast<std::size_t>(j)].get());
    state.add(prefix + "g" + std::to_string(j), g_[static_cast<std::size_t>(j)].get());
  }
  state.add(prefix + "gram", gram_);
  state.add(prefix + "gamma", gamma_);
  state.add(prefix + "rejected", rejected_);
  // the slot order last: loading it rebuilds the lists from the slots and the Gram matrix loaded before
  state.add_text(
      prefix + "order",
      [this] {
        std::string t;
        for (PetscInt j : order_) t += (t.empty() ? "" : ",") + std::to_string(j);
        return t;
      },
      [this](const std::string& t) {
        order_.clear();
        std::size_t pos = 0;
        while (pos < t.size()) {
          const std::size_t comma = t.find(',', pos);
          order_.push_back(static_cast<PetscInt>(std::stol(t.substr(pos, comma - pos))));
          pos = comma == std::string::npos ? t.size() : comma + 1;
        }
        for (PetscInt j : order_)
          if (j < 0 || j >= m_)
            throw InputError("checkpoint: secant pair slot " + std::to_string(j) + " out of range");
        rebuild_list();
        sr1_stale_ = true;
      });
}

void SecantPairs::reset() {
  order_.clear();
  rebuild_list();
  sr1_stale_ = true;
}

void SecantPairs::set_scale(PetscReal gamma) {
  if (!(gamma > 0) || !std::isfinite(gamma)) return;
  gamma_ = gamma;
  sr1_stale_ = true;
}

PetscInt SecantPairs::active() const {
  if (kind_ == SecantKind::Bfgs) return size();
  PetscInt n = 0;
  for (PetscInt j : order_) n += use_[static_cast<std::size_t>(j)] ? 1 : 0;
  return n;
}

void SecantPairs::rebuild_list() {
  const PetscInt n = size();
  list_.resize(static_cast<std::size_t>(2 * n));
  for (PetscInt j = 0; j < n; ++j) {
    list_[static_cast<std::size_t>(j)] = s_[static_cast<std::size_t>(j)].get();
    list_[static_cast<std::size_t>(n + j)] = g_[static_cast<std::size_t>(j)].get();
  }
}

PetscReal SecantPairs::gram_row_dot(PetscInt row, const PetscReal* c) const {
  PetscReal sum = 0;
  const PetscInt n = size();
  for (PetscInt j = 0; j < n; ++j) sum += gram(row, j) * c[j] + gram(row, m_ + j) * c[m_ + j];
  return sum;
}

bool SecantPairs::push(Vec s, Vec g) {
  if (m_ == 0) return false;
  const PetscInt n = size();
  PetscScalar ss = 0, sg = 0, gg = 0;
  // One reduction: [S G]ᵀ s, [S G]ᵀ g, sᵀs, sᵀg, gᵀg (split-phase, ends in the order of the begins).
  if (n > 0) {
    BILEVEL_PETSC_CALL(VecMDotBegin(s, 2 * n, list_.data(), dots_s_.data()));
    BILEVEL_PETSC_CALL(VecMDotBegin(g, 2 * n, list_.data(), dots_g_.data()));
  }
  BILEVEL_PETSC_CALL(VecDotBegin(s, s, &ss));
  BILEVEL_PETSC_CALL(VecDotBegin(s, g, &sg));
  BILEVEL_PETSC_CALL(VecDotBegin(g, g, &gg));
  if (n > 0) {
    BILEVEL_PETSC_CALL(VecMDotEnd(s, 2 * n, list_.data(), dots_s_.data()));
    BILEVEL_PETSC_CALL(VecMDotEnd(g, 2 * n, list_.data(), dots_g_.data()));
  }
  BILEVEL_PETSC_CALL(VecDotEnd(s, s, &ss));
  BILEVEL_PETSC_CALL(VecDotEnd(s, g, &sg));
  BILEVEL_PETSC_CALL(VecDotEnd(g, g, &gg));

  bool ok = std::isfinite(ss) && std::isfinite(sg) && std::isfinite(gg) && ss > 0 && gg > 0;
  // BFGS: positive curvature sᵀg > ε ||s|| ||g|| keeps H positive definite.
  if (ok && kind_ == SecantKind::Bfgs) ok = sg > rules_.curvature_eps * std::sqrt(ss * gg);
  if (!ok) {
    ++rejected_;
    return false;
  }
  PetscInt slot = 0;
  if (n < m_) {
    slot = n;
  } else {
    slot = order_.front();  // first in, first out
    order_.erase(order_.begin());
  }
  order_.push_back(slot);
  BILEVEL_PETSC_CALL(VecCopy(s, s_[static_cast<std::size_t>(slot)]));
  BILEVEL_PETSC_CALL(VecCopy(g, g_[static_cast<std::size_t>(slot)]));
  const PetscInt is = slot, ig = m_ + slot;
  for (PetscInt j = 0; j < n; ++j) {
    if (j == slot) continue;  // the replaced pair's old products are overwritten below
    gram(is, j) = gram(j, is) = dots_s_[static_cast<std::size_t>(j)];
    gram(is, m_ + j) = gram(m_ + j, is) = dots_s_[static_cast<std::size_t>(n + j)];
    gram(ig, j) = gram(j, ig) = dots_g_[static_cast<std::size_t>(j)];
    gram(ig, m_ + j) = gram(m_ + j, ig) = dots_g_[static_cast<std::size_t>(n + j)];
  }
  gram(is, is) = ss;
  gram(is, ig) = gram(ig, is) = sg;
  gram(ig, ig) = gg;
  if (n < m_) rebuild_list();
  if (sg > 0) gamma_ = sg / gg;  // H0 = (sᵀg / gᵀg) I from the newest pair (N&W eq. 7.20)
  sr1_stale_ = true;
  return true;
}

void SecantPairs::rebuild_sr1() {
  // p_i = s_i − H_i g_i with H_i = γ I + Σ_{l<i, used} p_l p_lᵀ / σ_l, σ_l = p_lᵀ g_l; all as coefficients
  // over [S G], inner products from the Gram matrix (no communication).
  const auto m2 = static_cast<std::size_t>(2 * m_);
  for (std::size_t pos = 0; pos < order_.size(); ++pos) {
    const PetscInt j = order_[pos];
    PetscReal* pc = &p_[static_cast<std::size_t>(j) * m2];
    std::fill(pc, pc + m2, 0.0);
    pc[j] = 1.0;           // s_j
    pc[m_ + j] = -gamma_;  // − γ g_j
    for (std::size_t q = 0; q < pos; ++q) {
      const PetscInt l = order_[q];
      if (!use_[static_cast<std::size_t>(l)]) continue;
      const PetscReal* pl = &p_[static_cast<std::size_t>(l) * m2];
      const PetscReal t = gram_row_dot(m_ + j, pl) / sigma_[static_cast<std::size_t>(l)];  // p_lᵀ g_j / σ_l
      for (std::size_t b = 0; b < m2; ++b) pc[b] -= t * pl[b];
    }
    const PetscReal sigma = gram_row_dot(m_ + j, pc);  // p_jᵀ g_j
    PetscReal pn2 = 0;
    for (PetscInt a = 0; a < size(); ++a)
      pn2 += pc[a] * gram_row_dot(a, pc) + pc[m_ + a] * gram_row_dot(m_ + a, pc);
    const PetscReal pn = std::sqrt(std::max<PetscReal>(pn2, 0.0));
    const PetscReal sn = std::sqrt(gram(j, j)), gn = std::sqrt(gram(m_ + j, m_ + j));
    sigma_[static_cast<std::size_t>(j)] = sigma;
    use_[static_cast<std::size_t>(j)] =
        pn > rules_.sr1_tiny * (sn + gamma_ * gn) && std::abs(sigma) >= rules_.sr1_skip * pn * gn;
  }
  sr1_stale_ = false;
}

void SecantPairs::combine(PetscReal d_coef, Vec d, const PetscReal* c, Vec out) {
  const PetscInt n = size();
  for (PetscInt j = 0; j < n; ++j) {
    maxpy_[static_cast<std::size_t>(j)] = c[j];
    maxpy_[static_cast<std::size_t>(n + j)] = c[m_ + j];
  }
  BILEVEL_PETSC_CALL(VecCopy(d, out));
  BILEVEL_PETSC_CALL(VecScale(out, d_coef));                              // out = c_d d
  BILEVEL_PETSC_CALL(VecMAXPY(out, 2 * n, maxpy_.data(), list_.data()));  // out += [S G] c
}

void SecantPairs::apply(Vec d, Vec out) {
  BILEVEL_ASSERT(d != out);
  const PetscInt n = size();
  if (n == 0) {
    BILEVEL_PETSC_CALL(VecCopy(d, out));
    BILEVEL_PETSC_CALL(VecScale(out, gamma_));  // out = H0 d = γ d
    return;
  }
  BILEVEL_PETSC_CALL(VecMDot(d, 2 * n, list_.data(), dots_d_.data()));  // [S G]ᵀ d, one reduction
  auto wS = [&](PetscInt j) { return dots_d_[static_cast<std::size_t>(j)]; };
  auto wG = [&](PetscInt j) { return dots_d_[static_cast<std::size_t>(n + j)]; };
  if (kind_ == SecantKind::Bfgs) {
    // Two-loop recursion (N&W Alg. 7.4) on q = d + [S G] a and r = c_d d + [S G] b.
    std::fill(a_.begin(), a_.end(), 0.0);
    for (PetscInt pos = n - 1; pos >= 0; --pos) {
      const PetscInt j = order_[static_cast<std::size_t>(pos)];
      const PetscReal rho = 1.0 / gram(j, m_ + j);
      const PetscReal alpha = rho * (wS(j) + gram_row_dot(j, a_.data()));  // α_i = ρ_i s_iᵀ q
      alpha_[static_cast<std::size_t>(pos)] = alpha;
      a_[static_cast<std::size_t>(m_ + j)] -= alpha;  // q <- q − α_i g_i
    }
    const PetscReal c_d = gamma_;  // r = H0 q = γ q
    for (std::size_t i = 0; i < b_.size(); ++i) b_[i] = gamma_ * a_[i];
    for (PetscInt pos = 0; pos < n; ++pos) {
      const PetscInt j = order_[static_cast<std::size_t>(pos)];
      const PetscReal rho = 1.0 / gram(j, m_ + j);
      const PetscReal beta = rho * (c_d * wG(j) + gram_row_dot(m_ + j, b_.data()));  // β = ρ_i g_iᵀ r
      b_[static_cast<std::size_t>(j)] +=
          alpha_[static_cast<std::size_t>(pos)] - beta;  // r <- r + (α_i − β) s_i
    }
    combine(c_d, d, b_.data(), out);
    return;
  }
  // SR1 compact form: H d = γ d + Σ_i p_i (p_iᵀ d) / σ_i.
  if (sr1_stale_) rebuild_sr1();
  std::fill(coef_.begin(), coef_.end(), 0.0);
  const auto m2 = static_cast<std::size_t>(2 * m_);
  for (PetscInt j : order_) {
    if (!use_[static_cast<std::size_t>(j)]) continue;
    const PetscReal* pc = &p_[static_cast<std::size_t>(j) * m2];
    PetscReal ptd = 0;
    for (PetscInt l = 0; l < n; ++l) ptd += pc[l] * wS(l) + pc[m_ + l] * wG(l);  // p_iᵀ d
    const PetscReal t = ptd / sigma_[static_cast<std::size_t>(j)];
    for (std::size_t b = 0; b < m2; ++b) coef_[b] += t * pc[b];
  }
  combine(gamma_, d, coef_.data(), out);
}

// ---------------------------------------------------------------------------------------------------------
// LmvmBfgs

LmvmBfgs::LmvmBfgs(Vec layout, PetscInt memory, const std::string& prefix) : memory_(memory) {
  // Trap 1 (style-anchors §3.12): the LMVM types are registered by the KSP package.
  BILEVEL_PETSC_CALL(KSPInitializePackage());
  MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(layout));
  PetscInt n = 0, N = 0;
  BILEVEL_PETSC_CALL(VecGetLocalSize(layout, &n));
  BILEVEL_PETSC_CALL(VecGetSize(layout, &N));
  BILEVEL_PETSC_CALL(MatCreate(comm, mat_.out()));
  BILEVEL_PETSC_CALL(MatSetSizes(mat_, n, n, N, N));
  BILEVEL_PETSC_CALL(MatSetType(mat_, MATLMVMBFGS));
  BILEVEL_PETSC_CALL(MatSetOptionsPrefix(mat_, petsc::prefixed(prefix).c_str()));
  // Trap 2: the history size goes in before MatLMVMAllocate (not on a MatCreateLMVMBFGS matrix).
  BILEVEL_PETSC_CALL(MatLMVMSetHistorySize(mat_, memory));
  // 3.18's default J0 is a diagonal rescaling; the textbook γ = sᵀg/gᵀg is the scalar one.
  BILEVEL_PETSC_CALL(MatLMVMSymBroydenSetScaleType(mat_, MAT_LMVM_SYMBROYDEN_SCALE_SCALAR));
  BILEVEL_PETSC_CALL(MatSetFromOptions(mat_));
  BILEVEL_PETSC_CALL(MatLMVMAllocate(mat_, layout, layout));
  x_shadow_ = petsc::duplicate(layout);
  f_shadow_ = petsc::duplicate(layout);
  reset();
}

void LmvmBfgs::set_scale(PetscReal gamma) {
  if (!(gamma > 0) || !std::isfinite(gamma)) return;
  gamma_ = gamma;
  // δ is PETSc's σ before the first pair after a reset: without pairs, reset now so that it applies.
  BILEVEL_PETSC_CALL(MatLMVMSymBroydenSetDelta(mat_, gamma_));
  if (stored_ == 0) reset();
}

void LmvmBfgs::declare_state(StateRegistry& state, const std::string& prefix) {
  state.add(prefix + "gamma", gamma_);
  state.add_text(
      prefix + "stored",
      [this] { return std::to_string(stored_); },
      [this](const std::string&) { reset(); });  // the pairs are not in the checkpoint: start without them
}

void LmvmBfgs::reset() {
  BILEVEL_PETSC_CALL(MatLMVMSymBroydenSetDelta(mat_, gamma_));
  BILEVEL_PETSC_CALL(MatLMVMReset(mat_, PETSC_FALSE));
  BILEVEL_PETSC_CALL(VecSet(x_shadow_, 0.0));
  BILEVEL_PETSC_CALL(VecSet(f_shadow_, 0.0));
  BILEVEL_PETSC_CALL(MatLMVMUpdate(mat_, x_shadow_, f_shadow_));  // stores Xprev = 0, Fprev = 0
  stored_ = 0;
}

bool LmvmBfgs::push(Vec s, Vec g) {
  PetscInt before = 0, after = 0;
  BILEVEL_PETSC_CALL(MatLMVMGetUpdateCount(mat_, &before));
  // X̃ += s, F̃ += g: MatLMVMUpdate forms s = X̃ − X̃prev and g = F̃ − F̃prev
  BILEVEL_PETSC_CALL(VecAXPY(x_shadow_, 1.0, s));
  BILEVEL_PETSC_CALL(VecAXPY(f_shadow_, 1.0, g));
  BILEVEL_PETSC_CALL(MatLMVMUpdate(mat_, x_shadow_, f_shadow_));
  BILEVEL_PETSC_CALL(MatLMVMGetUpdateCount(mat_, &after));
  if (after == before) return false;
  stored_ = std::min(stored_ + 1, memory_);
  PetscScalar sg = 0, gg = 0;
  BILEVEL_PETSC_CALL(VecDotBegin(s, g, &sg));
  BILEVEL_PETSC_CALL(VecDotBegin(g, g, &gg));
  BILEVEL_PETSC_CALL(VecDotEnd(s, g, &sg));
  BILEVEL_PETSC_CALL(VecDotEnd(g, g, &gg));
  if (sg > 0 && gg > 0) gamma_ = sg / gg;  // what PETSc's scalar J0 uses (σ of the newest pair)
  return true;
}

void LmvmBfgs::apply(Vec d, Vec out) {
  BILEVEL_ASSERT(d != out);
  BILEVEL_PETSC_CALL(MatSolve(mat_, d, out));  // out = H d: MatSolve applies the inverse approximation
}

std::int64_t LmvmBfgs::rejected() const {
  PetscInt r = 0;
  BILEVEL_PETSC_CALL(MatLMVMGetRejectCount(mat_, &r));
  return r;
}

const char* to_string(SecantBackend backend) {
  return backend == SecantBackend::Own ? "own" : "petsc";
}

std::unique_ptr<InverseHessianApprox> make_inverse_hessian_approx(Vec layout,
                                                                  SecantKind kind,
                                                                  PetscInt memory,
                                                                  SecantBackend backend,
                                                                  const std::string& prefix,
                                                                  SecantRules rules) {
  if (backend == SecantBackend::Own) return std::make_unique<SecantPairs>(layout, kind, memory, rules);
  if (kind != SecantKind::Bfgs)
    throw InputError("option -" + prefix +
                     "backend petsc supports kind bfgs only (PETSc 3.18's MATLMVMSR1 "
                     "has no automatic J0 rescaling); use -" +
                     prefix + "backend own for sr1");
  return std::make_unique<LmvmBfgs>(layout, memory, prefix);
}

}  // namespace bilevel
