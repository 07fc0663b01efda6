/// \file `hyperclean`'s lower preconditioner M ≈ H⁻¹ (Capability::LowerPreconditioner): its ingredients,
/// the Gram matrix G = (1/n) Σ_i a'_i a'_iᵀ of the training rows (one dsyrk pass, once) and the softmax
/// curvature of the cached probabilities (a scalar c, or the K × K class curvature C for the cheap form),
/// and the oracles that build and apply the Kronecker preconditioner (kron_preconditioner.hpp).
// clang-format off
#include <petscsys.h>
#include <petscblaslapack.h>  // after petscsys.h, which it needs
// clang-format on

#include <algorithm>
#include <cmath>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "kron_preconditioner.hpp"
#include "multinomial.hpp"

namespace bilevel {

void HypercleanProblem::ensure_gram() {
  if (!gram_.empty()) return;
  const detail::MultinomialSide& side = engine_->train();
  const Dataset& data = side.data;
  const PetscInt nf = n_features_, n1 = nf + 1, rows = data.local_rows();
  std::vector<PetscScalar> g(static_cast<std::size_t>(n1 * n1), 0.0);
  const PetscBLASInt bnf = detail::blas_int(nf), bn1 = detail::blas_int(n1);
  const PetscScalar one = 1;
  // G = Σ_i a'_i a'_iᵀ: the nf × nf block by dsyrk on row-major blocks of m rows (= column-major nf × m;
  // upper triangle), the column of the constant feature by column sums.
  auto add_block = [&](const PetscScalar* block, PetscInt m) {
    if (m == 0 || nf == 0) return;
    const PetscBLASInt bm = detail::blas_int(m);
    BLASsyrk_("U", "N", &bnf, &bm, &one, block, &bnf, &one, g.data(), &bn1);
    for (PetscInt i = 0; i < m; ++i)
      for (PetscInt j = 0; j < nf; ++j) g[static_cast<std::size_t>(j + nf * n1)] += block[i * nf + j];
  };
  if (data.format == DataFormat::Dense) {
    add_block(side.dense.data(), rows);
  } else {
    detail::CsrView A(data.local);
    constexpr PetscInt kChunk = 256;
    std::vector<PetscScalar> block(static_cast<std::size_t>(kChunk * nf));
    for (PetscInt r0 = 0; r0 < rows; r0 += kChunk) {
      const PetscInt m = std::min(kChunk, rows - r0);
      std::fill(block.begin(), block.end(), 0.0);
      for (PetscInt i = 0; i < m; ++i)
        for (PetscInt p = A.ia[r0 + i]; p < A.ia[r0 + i + 1]; ++p)
          block[static_cast<std::size_t>(i * nf + A.ja[p])] = A.values[p];
      add_block(block.data(), m);
    }
  }
  g[static_cast<std::size_t>(nf + nf * n1)] = static_cast<PetscScalar>(rows);
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(g));
  const PetscReal inv = 1.0 / static_cast<PetscReal>(data.n_rows);
  for (PetscInt j = 0; j < n1; ++j)
    for (PetscInt i = 0; i <= j; ++i) {
      const PetscScalar v = inv * g[static_cast<std::size_t>(i + j * n1)];  // G = (1/n) Σ a'_i a'_iᵀ
      g[static_cast<std::size_t>(i + j * n1)] = v;
      g[static_cast<std::size_t>(j + i * n1)] = v;
    }
  gram_ = std::move(g);
}

double HypercleanProblem::mean_curvature(const PetscReal* w) {
  // c = (1/n) Σ_i ω_i (1 − ||p_i||²)/(K − 1): the mean eigenvalue of the softmax blocks on the non-constant
  // directions, at the cached probabilities
  const PetscInt K = classes_;
  const detail::MultinomialSide& side = engine_->train();
  const PetscScalar* p = side.p.data();
  double c = 0;
  for (PetscInt i = 0; i < side.data.local_rows(); ++i) {
    double pp = 0;
    for (PetscInt k = 0; k < K; ++k) pp += p[i * K + k] * p[i * K + k];
    c += w[i] * (1 - pp);
  }
  c = detail::sum_over_ranks(comm_, c) / (static_cast<double>(side.data.n_rows) * static_cast<double>(K - 1));
  return std::max(c, 1e-6);
}

std::vector<PetscScalar> HypercleanProblem::class_curvature(const PetscReal* w) {
  // C = (1/n) Σ_i ω_i (diag(p_i) − p_i p_iᵀ), K × K, at the cached probabilities
  const PetscInt K = classes_;
  const detail::MultinomialSide& side = engine_->train();
  const PetscScalar* p = side.p.data();
  std::vector<PetscScalar> C(static_cast<std::size_t>(K * K), 0.0);
  for (PetscInt i = 0; i < side.data.local_rows(); ++i) {
    const PetscScalar* pi = p + i * K;
    for (PetscInt a = 0; a < K; ++a) {
      C[static_cast<std::size_t>(a * K + a)] += w[i] * pi[a];
      for (PetscInt b = 0; b < K; ++b) C[static_cast<std::size_t>(a * K + b)] -= w[i] * pi[a] * pi[b];
    }
  }
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(C));
  for (PetscScalar& v : C) v /= static_cast<double>(side.data.n_rows);
  return C;
}

void HypercleanProblem::lower_preconditioner_setup_impl(Vec x, Vec y, PreconditionerKind kind) {
  check_layouts(x, y);
  refresh_weights(x);
  ensure_gram();
  const bool cheap = kind == PreconditionerKind::Cheap && options_.cheap_preconditioner_rank > 0;
  std::unique_ptr<detail::KronPreconditioner>& pc = cheap ? pc_cheap_ : pc_exact_;
  if (!pc)
    pc = std::make_unique<detail::KronPreconditioner>(
        n_features_ + 1, classes_, cheap ? options_.cheap_preconditioner_rank : 0);
  // c (and for the cheap form C) from the probabilities of the last pass over the training rows (a nearby y;
  // P only has to approximate H). Refactoring costs (nf+1)³/3 flops for the Cholesky form, and for the cheap
  // form one pass over the cached probabilities for C and an eigendecomposition of order K (G's is computed
  // once), so P is kept while c moves by less than 5%.
  const double c = mean_curvature(weight_.data());
  if (pc->curvature() < 0 || std::abs(c - pc->curvature()) > 0.05 * pc->curvature())
    pc->factor(gram_,
               c,
               options_.mu,
               options_.bias_weight(),
               cheap ? class_curvature(weight_.data()) : std::vector<PetscScalar>{});
  pc_ = pc.get();
}

void HypercleanProblem::lower_precondition_impl(Vec r, Vec out) {
  check_layouts(nullptr, r);
  if (!pc_) throw Error("hyperclean: lower_precondition called before lower_preconditioner_setup");
  const PetscScalar* rf = engine_->gather_direction(r);
  PetscScalar* full = detail::ensure(engine_->workspace().grad, static_cast<std::size_t>(dy_));
  pc_->apply(rf, full);
  petsc::WriteView o(out);
  for (PetscInt l = 0; l < o.size(); ++l) o[l] = full[y_begin_ + l];
}

void HypercleanProblem::lower_precondition_multi_impl(std::span<const Vec> r, std::span<const Vec> out) {
  if (!pc_) throw Error("hyperclean: lower_precondition called before lower_preconditioner_setup");
  const auto m = static_cast<PetscInt>(r.size());
  if (m == 1) return lower_precondition_impl(r[0], out[0]);
  pc_->resize_wide(m);
  for (PetscInt i = 0; i < m; ++i) {
    check_layouts(nullptr, r[static_cast<std::size_t>(i)]);
    pc_->set_rhs(i, engine_->gather_direction(r[static_cast<std::size_t>(i)]));
  }
  pc_->solve_wide();  // M r_i for every i in one pair of triangular solves
  for (PetscInt i = 0; i < m; ++i) {
    petsc::WriteView o(out[static_cast<std::size_t>(i)]);
    for (PetscInt l = 0; l < o.size(); ++l) o[l] = pc_->solution(i, y_begin_ + l);
  }
}

}  // namespace bilevel
