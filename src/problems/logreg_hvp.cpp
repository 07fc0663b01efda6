/// \file `logreg`'s lower Hessian-vector product H v = (1/n) [A 1]ᵀ D [A 1] v + λ ∘ v, D = diag(d_i): the
/// fused one-pass CSR kernel (also timed by `bilevel-bench hvp`), the oracle for one or several
/// directions on sparse and dense rows (recomputing the cached d_i of stale rows in the same pass), and
/// the benchmark hooks.
// clang-format off
#include <petscsys.h>
#include <petscblaslapack.h>  // after petscsys.h, which it needs
// clang-format on

#include <algorithm>
#include <cmath>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "bilevel/problems/logreg.hpp"
#include "data_parallel.hpp"
#include "logreg_side.hpp"

namespace bilevel {

// out += scale · [A 1]ᵀ D [A 1] v in one pass: per row, t_i = scale d_i (a_i·v + v_c), out += t_i [a_i; 1].
void logistic_hvp_csr(PetscInt rows,
                      const PetscInt* ia,
                      const PetscInt* ja,
                      const PetscScalar* a,
                      const PetscReal* d,
                      PetscReal scale,
                      const PetscScalar* v,
                      PetscInt n_features,
                      bool intercept,
                      PetscScalar* out) {
  const PetscScalar vc = intercept ? v[n_features] : 0.0;
  PetscScalar tc = 0;
  for (PetscInt i = 0; i < rows; ++i) {
    const PetscInt begin = ia[i], end = ia[i + 1];
    PetscScalar t = vc;
    for (PetscInt p = begin; p < end; ++p) t += a[p] * v[ja[p]];    // t = a_i·v + v_c
    t *= scale * d[i];                                              // t = scale d_i (a_i·v + v_c)
    for (PetscInt p = begin; p < end; ++p) out[ja[p]] += t * a[p];  // out += t a_i
    tc += t;
  }
  if (intercept) out[n_features] += tc;
}

void LogregProblem::steady_hvp(Side& side, PetscReal scale, const PetscScalar* v, PetscScalar* acc) {
  detail::CsrView A(side.data.local);
  const auto requested = options_.hvp_kernel == "fused"         ? detail::HvpKernel::Fused
                         : options_.hvp_kernel == "interleaved" ? detail::HvpKernel::Interleaved
                         : options_.hvp_kernel == "panel"       ? detail::HvpKernel::Panel
                                                                : detail::HvpKernel::Auto;
  const detail::HvpKernel kernel = detail::choose_hvp_kernel(requested, side.width);
  const double per_row = A.rows > 0 ? static_cast<double>(A.ia[A.rows]) / static_cast<double>(A.rows) : 0.0;
  const bool simd = detail::use_simd(
      requested, kernel, options_.hvp_simd && side.strict_rows && detail::cpu_has_avx512(), per_row);
  detail::logistic_hvp(kernel,
                       simd,
                       A.rows,
                       A.ia,
                       A.ja,
                       A.values,
                       side.d.data(),
                       scale,
                       v,
                       side.c_pos,
                       options_.intercept,
                       acc,
                       side.hvp_work);
  hvp_kernel_used_ = std::string(detail::to_string(kernel)) + (simd ? "/avx512" : "");
}

void LogregProblem::lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) {
  const Vec ws[1] = {w};
  const Vec os[1] = {out};
  lower_hvp_multi_impl(x, y, batch, std::span<const Vec>(ws, 1), std::span<const Vec>(os, 1));
}

void LogregProblem::lower_hvp_multi_impl(
    Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out) {
  check_layouts(x, y);
  BILEVEL_ASSERT(w.size() == out.size());
  const PetscInt m = static_cast<PetscInt>(w.size());
  if (m == 0) return;
  Side& side = *train_;
  const PetscScalar* yf = model_of(side, y);
  side.rows.select(side.data, batch);
  const detail::LocalRows& rows = side.rows;
  const PetscInt nf = n_features_, nrows = rows.count(), width = side.width, cp = side.c_pos;
  const bool icpt = options_.intercept;
  const PetscScalar c = icpt ? yf[cp] : 0.0;
  const PetscReal inv = 1.0 / static_cast<PetscReal>(rows.global_size());
  PetscReal* d = side.d.data();
  const std::size_t mw = static_cast<std::size_t>(m * width);
  PetscScalar* acc = detail::ensure(side.sparse ? side.acc : buffer_, mw + 2);
  std::fill(acc, acc + mw, 0.0);

  // The directions as the rows address them (compressed for sparse rows), interleaved: V[j m + q] = (w_q)_j.
  const PetscScalar* V = nullptr;
  if (side.sparse) {
    PetscScalar* dir = detail::ensure(side.dir, static_cast<std::size_t>(width));
    if (m == 1) {
      side.cols.gather(w[0], dir);
      V = dir;
    } else {
      PetscScalar* packed = detail::ensure(multi_, mw);
      for (PetscInt q = 0; q < m; ++q) {
        side.cols.gather(w[q], dir);
        for (PetscInt j = 0; j < width; ++j) packed[j * m + q] = dir[j];
      }
      V = packed;
    }
  } else if (m == 1) {
    V = w_gather_->gather(w[0]);
  } else {
    PetscScalar* packed = detail::ensure(multi_, mw);
    for (PetscInt q = 0; q < m; ++q) {
      const PetscScalar* wq = w_gather_->gather(w[q]);
      for (PetscInt j = 0; j < dy_; ++j) packed[j * m + q] = wq[j];
    }
    V = packed;
  }

  if (side.sparse) {
    detail::CsrView A(side.data.local);
    if (m == 1 && rows.full() && side.stamps.all_valid()) {
      // The steady state: D cached, one pass of the chosen kernel (logreg_kernels.hpp).
      steady_hvp(side, inv, V, acc);
    } else if (m == 1) {
      // One pass per row: t = a_i·v + v_c, and z_i = a_i·w + c in the same sweep when d_i is stale; then
      // t ← d_i t / n and acc += t [a_i; 1].
      const PetscScalar vc = icpt ? V[cp] : 0.0;
      PetscScalar tc = 0;
      for (PetscInt k = 0; k < nrows; ++k) {
        const PetscInt i = rows.row(k);
        const PetscInt begin = A.ia[i], end = A.ia[i + 1];
        PetscScalar t = vc;
        if (side.stamps.valid(i)) {
          for (PetscInt p = begin; p < end; ++p) t += A.values[p] * V[A.ja[p]];
        } else {
          PetscScalar z = c;
          for (PetscInt p = begin; p < end; ++p) {
            z += A.values[p] * yf[A.ja[p]];
            t += A.values[p] * V[A.ja[p]];
          }
          d[i] = detail::logistic_curvature(z);
          side.stamps.mark(i);
        }
        t *= d[i] * inv;
        for (PetscInt p = begin; p < end; ++p) acc[A.ja[p]] += t * A.values[p];
        tc += t;
      }
      if (icpt) acc[cp] += tc;
      if (rows.full()) side.stamps.mark_all();
    } else {
      // One pass per row: z_i = a_i·w + c (only when d_i is stale), t_q = a_i·v_q + (v_q)_c, then
      // t_q ← d_i t_q / n and acc_q += t_q [a_i; 1].
      PetscScalar t[16];
      for (PetscInt q0 = 0; q0 < m; q0 += 16) {
        const PetscInt mq = std::min<PetscInt>(16, m - q0);
        for (PetscInt k = 0; k < nrows; ++k) {
          const PetscInt i = rows.row(k);
          const PetscInt begin = A.ia[i], end = A.ia[i + 1];
          for (PetscInt q = 0; q < mq; ++q) t[q] = icpt ? V[cp * m + q0 + q] : 0.0;
          if (!side.stamps.valid(i)) {
            PetscScalar z = c;
            for (PetscInt p = begin; p < end; ++p) {
              const PetscInt j = A.ja[p];
              z += A.values[p] * yf[j];
              for (PetscInt q = 0; q < mq; ++q) t[q] += A.values[p] * V[j * m + q0 + q];
            }
            d[i] = detail::logistic_curvature(z);
            side.stamps.mark(i);
          } else {
            for (PetscInt p = begin; p < end; ++p) {
              const PetscInt j = A.ja[p];
              for (PetscInt q = 0; q < mq; ++q) t[q] += A.values[p] * V[j * m + q0 + q];
            }
          }
          const PetscReal scale = d[i] * inv;
          for (PetscInt q = 0; q < mq; ++q) t[q] *= scale;
          for (PetscInt p = begin; p < end; ++p) {
            const PetscInt j = A.ja[p];
            for (PetscInt q = 0; q < mq; ++q) acc[j * m + q0 + q] += t[q] * A.values[p];
          }
          if (icpt)
            for (PetscInt q = 0; q < mq; ++q) acc[cp * m + q0 + q] += t[q];
        }
      }
      if (rows.full()) side.stamps.mark_all();
    }
  } else {
    detail::DenseView A(side.data.local);
    const PetscInt lda = A.lda;
    if (rows.full() && !side.stamps.all_valid()) {
      PetscInt ignored = 0;
      loss_pass(side, Batch::all(), yf, nullptr, &ignored, false);  // refresh d
      side.rows.select(side.data, batch);
    }
    PetscScalar* z = detail::ensure(side.z, static_cast<std::size_t>(side.data.local_rows()));
    for (PetscInt q = 0; q < m; ++q) {
      if (rows.full()) {
        // t = d ∘ (A v + v_c) / n by gemv, then acc += Aᵀ t (gemv) and acc_c += Σ t.
        const PetscBLASInt m_ = detail::blas_int(side.data.local_rows()), n_ = detail::blas_int(nf),
                           ld = detail::blas_int(std::max<PetscInt>(lda, 1)), incv = detail::blas_int(m),
                           one = 1;
        const PetscScalar alpha = 1, beta0 = 0, beta1 = 1;
        if (m_ > 0 && n_ > 0)
          BLASgemv_("N", &m_, &n_, &alpha, A.values, &ld, V + q, &incv, &beta0, z, &one);
        else
          std::fill(z, z + side.data.local_rows(), 0.0);
        const PetscScalar vc = icpt ? V[nf * m + q] : 0.0;
        double tc = 0;
        for (PetscInt i = 0; i < nrows; ++i) {
          z[i] = (z[i] + vc) * d[i] * inv;
          tc += z[i];
        }
        if (m_ > 0 && n_ > 0)
          BLASgemv_("T", &m_, &n_, &alpha, A.values, &ld, z, &one, &beta1, acc + q, &incv);
        if (icpt) acc[nf * m + q] += tc;
      } else {
        for (PetscInt k = 0; k < nrows; ++k) {
          const PetscInt i = rows.row(k);
          if (!side.stamps.valid(i)) {
            PetscScalar zi = c;
            for (PetscInt j = 0; j < nf; ++j) zi += A.values[i + j * lda] * yf[j];
            d[i] = detail::logistic_curvature(zi);
            side.stamps.mark(i);
          }
          PetscScalar t = icpt ? V[nf * m + q] : 0.0;
          for (PetscInt j = 0; j < nf; ++j) t += A.values[i + j * lda] * V[j * m + q];
          t *= d[i] * inv;
          for (PetscInt j = 0; j < nf; ++j) acc[j * m + q] += t * A.values[i + j * lda];
          if (icpt) acc[nf * m + q] += t;
        }
      }
    }
  }

  // out_q = (1/n) [A 1]ᵀ D [A 1] v_q (summed over ranks) + λ ∘ v_q (regulariser on w only)
  const PetscScalar* lam = regularisers(x);
  for (PetscInt q = 0; q < m; ++q) {
    const PetscScalar* acc_q = acc;
    if (m > 1) {  // de-interleave block q
      PetscScalar* one =
          detail::ensure(side.sparse ? side.dir : hvp_one_, static_cast<std::size_t>(width + 2));
      for (PetscInt j = 0; j < width; ++j) one[j] = acc[j * m + q];
      acc_q = one;
    }
    sums_to(side, acc_q, 1.0, out[q]);
    petsc::ReadView vq(w[q]);
    petsc::WriteView o(out[q]);
    const PetscInt jend = std::min(y_end_, nf) - y_begin_;
    for (PetscInt l = 0; l < jend; ++l) o[l] += (options_.scalar ? lam[0] : lam[l]) * vq[l];
  }
}

// Jacobi: M = diag(H)⁻¹ with diag(H)_j = (1/n) Σ_i d_i a_ij² + λ_j on w and (1/n) Σ_i d_i on the intercept,
// d_i the logistic curvature at y. One pass over the local training rows (refreshing stale d_i first),
// the column sums added over ranks onto y's layout like an HVP's.
void LogregProblem::lower_preconditioner_setup_impl(Vec x, Vec y, PreconditionerKind /*kind*/) {
  if (options_.preconditioner != "jacobi")
    throw NotImplemented("logreg: -bilevel_logreg_preconditioner none offers no lower-level preconditioner");
  check_layouts(x, y);
  Side& side = *train_;
  const PetscScalar* yf = model_of(side, y);
  if (!side.stamps.all_valid()) {
    PetscInt ignored = 0;
    loss_pass(side, Batch::all(), yf, nullptr, &ignored, false);
  }
  const PetscInt width = side.width, rows = side.data.local_rows();
  const PetscReal* d = side.d.data();
  PetscScalar* acc = detail::ensure(side.sparse ? side.acc : buffer_, static_cast<std::size_t>(width + 2));
  std::fill(acc, acc + width, 0.0);
  double dsum = 0;
  if (side.sparse) {
    detail::CsrView A(side.data.local);
    for (PetscInt i = 0; i < rows; ++i) {
      for (PetscInt p = A.ia[i]; p < A.ia[i + 1]; ++p) acc[A.ja[p]] += d[i] * A.values[p] * A.values[p];
      dsum += d[i];
    }
  } else {
    detail::DenseView A(side.data.local);
    for (PetscInt j = 0; j < n_features_; ++j) {
      const PetscScalar* col = A.values + j * A.lda;
      double s = 0;
      for (PetscInt i = 0; i < rows; ++i) s += d[i] * col[i] * col[i];
      acc[j] = s;
    }
    for (PetscInt i = 0; i < rows; ++i) dsum += d[i];
  }
  if (options_.intercept) acc[side.c_pos] = dsum;
  if (!inv_diag_) inv_diag_ = create_lower_vec();
  sums_to(side, acc, 1.0 / static_cast<PetscReal>(side.data.n_rows), inv_diag_);
  const PetscScalar* lam = regularisers(x);
  PetscReal largest = 0;
  {
    petsc::WriteView o(inv_diag_);
    const PetscInt jend = std::min(y_end_, n_features_) - y_begin_;
    for (PetscInt l = 0; l < jend; ++l) o[l] += options_.scalar ? lam[0] : lam[l];
    for (PetscInt l = 0; l < o.size(); ++l) largest = std::max(largest, std::abs(o[l]));
  }
  // An intercept whose rows all saturate (d_i → 0) would get an unbounded M; such entries (and anything
  // not finite) take the scale of the largest diagonal entry instead.
  PetscReal global_largest = largest;
  BILEVEL_PETSC_CALL(MPI_Allreduce(&largest, &global_largest, 1, MPIU_REAL, MPI_MAX, comm_));
  const PetscReal floor = 1e-12 * global_largest;
  petsc::WriteView o(inv_diag_);
  for (PetscInt l = 0; l < o.size(); ++l)
    o[l] =
        std::isfinite(o[l]) && o[l] > floor ? 1.0 / o[l] : (global_largest > 0 ? 1.0 / global_largest : 1.0);
}

void LogregProblem::lower_precondition_impl(Vec r, Vec out) {
  if (!inv_diag_) throw Error("logreg: lower_precondition called before lower_preconditioner_setup");
  BILEVEL_PETSC_CALL(VecPointwiseMult(out, inv_diag_, r));
}

void LogregProblem::hvp_kernel_only(Vec y, Vec w) {
  Side& side = *train_;
  const PetscScalar* yf = model_of(side, y);
  if (!side.stamps.all_valid()) {
    PetscInt ignored = 0;
    loss_pass(side, Batch::all(), yf, nullptr, &ignored, false);
  }
  const PetscReal inv = 1.0 / static_cast<PetscReal>(side.data.n_rows);
  if (side.sparse) {
    PetscScalar* v = detail::ensure(side.dir, static_cast<std::size_t>(side.width));
    side.cols.gather(w, v);
    PetscScalar* acc = detail::ensure(side.acc, static_cast<std::size_t>(side.width + 2));
    std::fill(acc, acc + side.width, 0.0);
    steady_hvp(side, inv, v, acc);
    return;
  }
  const PetscScalar* v = w_gather_->gather(w);
  PetscScalar* acc = detail::ensure(buffer_, static_cast<std::size_t>(dy_ + 2));
  std::fill(acc, acc + dy_, 0.0);
  {
    detail::DenseView A(side.data.local);
    const PetscBLASInt m_ = detail::blas_int(side.data.local_rows()), n_ = detail::blas_int(n_features_),
                       ld = detail::blas_int(std::max<PetscInt>(A.lda, 1)), one = 1;
    const PetscScalar alpha = 1, beta0 = 0, beta1 = 1;
    PetscScalar* z = detail::ensure(side.z, static_cast<std::size_t>(side.data.local_rows()));
    if (m_ == 0 || n_ == 0) return;
    BLASgemv_("N", &m_, &n_, &alpha, A.values, &ld, v, &one, &beta0, z, &one);
    for (PetscInt i = 0; i < side.data.local_rows(); ++i) z[i] *= side.d[static_cast<std::size_t>(i)] * inv;
    BLASgemv_("T", &m_, &n_, &alpha, A.values, &ld, z, &one, &beta1, acc, &one);
  }
}

std::int64_t LogregProblem::hvp_pass_bytes() const {
  const Dataset& data = train_->data;
  const std::int64_t rows = data.local_rows();
  if (data.format == DataFormat::Dense) return 2 * rows * n_features_ * 8;
  MatInfo info;
  BILEVEL_PETSC_CALL(MatGetInfo(data.local, MAT_LOCAL, &info));
  const auto nnz = static_cast<std::int64_t>(info.nz_used);
  return nnz * 12 + (rows + 1) * 4 + rows * 8;
}

/// ∇_y g(x_j, y; B) for several x_j at one y (zeroth-order paths start at one y⁰). The data
/// term (1/n) Σ_{i ∈ B} r_i [a_i; 1] does not depend on x, so one pass over the batch's rows serves every
/// x_j, and each output adds its own λ(x_j) ∘ w: the same operations, in the same order, as
/// lower_grad_y_impl per output, so the results are identical to m single calls.
void LogregProblem::lower_grad_y_multi_impl(std::span<const Vec> xs,
                                            Vec y,
                                            const Batch& batch,
                                            std::span<const Vec> gys) {
  if (xs.empty()) return;
  for (Vec x : xs) check_layouts(x, y);
  data_grad_y(y, batch, gys[0]);
  for (std::size_t j = 1; j < gys.size(); ++j) BILEVEL_PETSC_CALL(VecCopy(gys[0], gys[j]));
  for (std::size_t j = 0; j < gys.size(); ++j) add_regulariser_grad(xs[j], y, gys[j]);
}

}  // namespace bilevel
