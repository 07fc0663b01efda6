/// \file `logreg`: l2-regularised binary logistic regression with per-feature (or scalar) log-regularisers.
/// Options: -bilevel_logreg_scalar, -bilevel_logreg_intercept, -bilevel_logreg_initial_x.
///
/// Notation: z_i = a_i·w + c, m_i = b_i z_i, ℓ_i = log(1 + e^{−m_i}), r_i = dℓ_i/dz_i = −b_i σ(−m_i),
/// d_i = d²ℓ_i/dz_i² = σ(z_i)(1 − σ(z_i)), λ_j = e^{x_j}.
///
/// The starting point x_j = log(1e−2) lies on the slope of the value function, between its two flat parts
/// (docs/benchmarks.md, "logreg's starting point", has the measurement).
#include "bilevel/problems/logreg.hpp"

#include "bilevel/core/lower_hessian.hpp"

#include <petscblaslapack.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "bilevel/data/libsvm.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "data_parallel.hpp"

namespace bilevel {

/// Per-row logistic quantities from one exponential, e = e^{−|z|} (so nothing overflows):
///   ℓ = log(1 + e^{−m}) = max(−m, 0) + log1p(e)   with m = b z, |m| = |z|   (only when loss != nullptr)
///   r = dℓ/dz = −b σ(−m),   σ(−m) = (m ≥ 0 ? e : 1) / (1 + e)
///   d = d²ℓ/dz² = σ(z)(1 − σ(z)) = e / (1 + e)²
static inline void logistic_row(double z, double b, double* loss, double* r, double* d) {
  const double e = std::exp(-std::abs(z)), inv = 1.0 / (1.0 + e), m = b * z;
  if (loss) *loss += (m < 0 ? -m : 0.0) + std::log1p(e);
  *r = -b * (m >= 0 ? e : 1.0) * inv;
  *d = e * inv * inv;
}

/// d = σ(z)(1 − σ(z)) = e / (1 + e)², e = e^{−|z|}.
static inline double logistic_curvature(double z) {
  const double e = std::exp(-std::abs(z)), inv = 1.0 / (1.0 + e);
  return e * inv * inv;
}

LogregOptions LogregOptions::from_options(MPI_Comm comm) {
  petsc::OptionsReader reader(comm, "bilevel_logreg_", "Problem logreg, logistic-regression hyperparameters (-bilevel_logreg_*)");
  LogregOptions o;
  o.scalar = reader.boolean("scalar", o.scalar, "one regulariser for all features (dx = 1)");
  o.intercept = reader.boolean("intercept", o.intercept, "unregularised intercept as the last entry of y");
  o.initial_x = reader.real("initial_x", o.initial_x, "starting log-regulariser x_j", -50.0, 50.0);
  return o;
}

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

/// One data set: its rows, labels as ±1, the curvature cache d (training side only) and work buffers.
struct LogregProblem::Side {
  Dataset data;
  std::vector<PetscReal> sign;  // b_i ∈ {−1, +1} per local row
  std::vector<PetscReal> d;     // d_i = σ(z_i)(1 − σ(z_i)) at the y of `stamps`
  detail::RowStamps stamps;
  detail::LocalRows rows;
  std::vector<PetscScalar> z;  // dense path: per-row products
  bool caches_curvature = false;
};

namespace {

PetscReal label_sign(const Dataset& data, PetscInt label) {
  if (data.n_classes == 1) return data.class_values.empty() || data.class_values[0] > 0 ? 1.0 : -1.0;
  return label == 1 ? 1.0 : -1.0;
}

void require_binary(const Dataset& data) {
  if (data.n_classes > 2)
    throw InputError(
        data.source + ": the logreg problem needs binary labels but the file has " +
        std::to_string(data.n_classes) +
        " classes; use --problem softmax (multinomial) or --problem hyperclean for multi-class data");
}

PetscBLASInt blas_int(PetscInt n) {
  PetscBLASInt b = 0;
  BILEVEL_PETSC_CALL(PetscBLASIntCast(n, &b));
  return b;
}

}  // namespace

LogregProblem::LogregProblem(Dataset train,
                             Dataset validation,
                             std::optional<Dataset> test,
                             const LogregOptions& options)
    : comm_(train.comm), options_(options) {
  require_binary(train);
  require_binary(validation);
  if (test) require_binary(*test);
  n_features_ = std::max(train.n_features, validation.n_features);
  if (test) n_features_ = std::max(n_features_, test->n_features);
  reconcile_features(train, n_features_);
  reconcile_features(validation, n_features_);
  if (test) reconcile_features(*test, n_features_);
  dy_ = n_features_ + (options_.intercept ? 1 : 0);

  auto make_side = [](Dataset&& data, bool curvature) {
    auto side = std::make_unique<Side>();
    side->data = std::move(data);
    side->sign.resize(static_cast<std::size_t>(side->data.local_rows()));
    for (PetscInt i = 0; i < side->data.local_rows(); ++i)
      side->sign[static_cast<std::size_t>(i)] =
          label_sign(side->data, side->data.labels[static_cast<std::size_t>(i)]);
    side->caches_curvature = curvature;
    if (curvature) {
      side->d.assign(static_cast<std::size_t>(side->data.local_rows()), 0.0);
      side->stamps.resize(side->data.local_rows());
    }
    return side;
  };
  train_ = make_side(std::move(train), true);
  validation_ = make_side(std::move(validation), false);
  if (test) test_ = make_side(std::move(*test), false);

  PetscInt local = PETSC_DECIDE, global = dy_;
  BILEVEL_PETSC_CALL(PetscSplitOwnership(comm_, &local, &global));
  BILEVEL_PETSC_CALL(MPI_Scan(&local, &y_end_, 1, MPIU_INT, MPI_SUM, comm_));
  y_begin_ = y_end_ - local;
  y_gather_ = std::make_unique<detail::Gatherer>(true);
  w_gather_ = std::make_unique<detail::Gatherer>();
  x_gather_ = std::make_unique<detail::Gatherer>();
  buffer_.assign(static_cast<std::size_t>(dy_ + 2), 0.0);
}

LogregProblem::~LogregProblem() = default;

std::unique_ptr<LogregProblem> LogregProblem::from_files(MPI_Comm comm,
                                                         const std::string& train,
                                                         const std::string& validation,
                                                         const std::string& test,
                                                         const LogregOptions& options) {
  Dataset tr = read_libsvm(comm, train);
  Dataset va = read_libsvm(comm, validation);
  std::optional<Dataset> te;
  if (!test.empty()) te = read_libsvm(comm, test);
  return std::make_unique<LogregProblem>(std::move(tr), std::move(va), std::move(te), options);
}

petsc::VecHandle LogregProblem::create_lower_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, y_end_ - y_begin_, dy_, v.out()));
  return v;
}

petsc::VecHandle LogregProblem::create_upper_vec() const {
  petsc::VecHandle v;
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  if (options_.scalar) {
    BILEVEL_PETSC_CALL(VecCreateMPI(comm_, rank == 0 ? 1 : 0, 1, v.out()));
  } else {
    // Same layout as the first n_features entries of y: the regulariser terms need no communication.
    const PetscInt local = std::max<PetscInt>(0, std::min(y_end_, n_features_) - y_begin_);
    BILEVEL_PETSC_CALL(VecCreateMPI(comm_, local, n_features_, v.out()));
  }
  return v;
}

Capability LogregProblem::capabilities() const {
  Capability c =
      Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX | Capability::Stochastic;
  if (test_) c = c | Capability::TestSet;
  return c;
}

DatasetSizes LogregProblem::dataset_sizes() const {
  return {train_->data.n_rows, validation_->data.n_rows};
}

ProblemHints LogregProblem::hints() const {
  ProblemHints h;
  h.upper_stepper = "adam";
  h.upper_step = 0.2;
  h.x_lower_bound = -20.0;
  h.x_upper_bound = 10.0;
  // The regularisers e^{x_j} move over decades during a run, so a gradient step 1/L fixed at the start
  // becomes unstable (docs/benchmarks.md); truncated Newton on the small model is cheap and stays stable.
  h.lower_update = "newton";
  return h;
}

std::optional<PetscReal> LogregProblem::lower_lipschitz_bound(Vec x) {
  if (!data_lipschitz_) {
    const OracleCounts saved = counts();
    petsc::VecHandle x_off = create_upper_vec(), y0 = create_lower_vec();
    BILEVEL_PETSC_CALL(VecSet(x_off, -50.0));  // e^{−50} ≈ 2e−22: the data term alone
    BILEVEL_PETSC_CALL(VecSet(y0, 0.0));       // d_i = 1/4, the largest curvature of every row
    data_lipschitz_ = 1.01 * estimate_lower_lipschitz(*this, x_off, y0);
    set_counts(saved);
  }
  PetscReal xmax = 0;
  BILEVEL_PETSC_CALL(VecMax(x, nullptr, &xmax));
  return *data_lipschitz_ + std::exp(xmax);
}

void LogregProblem::initial_point(Vec x, Vec y) {
  BILEVEL_PETSC_CALL(VecSet(x, options_.initial_x));
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

void LogregProblem::check_layouts(Vec x, Vec y) const {
  PetscInt nx = 0, ny = 0;
  if (y) BILEVEL_PETSC_CALL(VecGetSize(y, &ny));
  if (x) BILEVEL_PETSC_CALL(VecGetSize(x, &nx));
  if (y && ny != dy_)
    throw InputError("logreg: y has size " + std::to_string(ny) + ", expected " + std::to_string(dy_));
  const PetscInt dx = options_.scalar ? 1 : n_features_;
  if (x && nx != dx)
    throw InputError("logreg: x has size " + std::to_string(nx) + ", expected " + std::to_string(dx));
}

const PetscScalar* LogregProblem::regularisers(Vec x) {
  if (options_.scalar) {
    const PetscScalar* xf = x_gather_->gather(x);
    exp_x_.assign(1, std::exp(xf[0]));
    return exp_x_.data();
  }
  petsc::ReadView xv(x);
  exp_x_.resize(static_cast<std::size_t>(xv.size()));
  for (PetscInt j = 0; j < xv.size(); ++j)
    exp_x_[static_cast<std::size_t>(j)] = std::exp(xv[j]);  // λ_j = e^{x_j}
  return exp_x_.data();
}

double LogregProblem::loss_pass(Side& side,
                                const Batch& batch,
                                const PetscScalar* y_full,
                                PetscScalar* grad,
                                PetscInt* count,
                                bool want_loss) {
  side.rows.select(side.data, batch);
  *count = side.rows.global_size();
  const PetscInt nf = n_features_;
  const bool icpt = options_.intercept;
  const PetscScalar c = icpt ? y_full[nf] : 0.0;
  const PetscReal* b = side.sign.data();
  const bool curv = side.caches_curvature;
  PetscReal* d = curv ? side.d.data() : nullptr;
  const detail::LocalRows& rows = side.rows;
  const PetscInt nrows = rows.count();
  double loss = 0, gc = 0;
  if (side.data.format == DataFormat::Sparse) {
    detail::CsrView A(side.data.local);
    for (PetscInt k = 0; k < nrows; ++k) {
      const PetscInt i = rows.row(k);
      const PetscInt begin = A.ia[i], end = A.ia[i + 1];
      PetscScalar z = c;
      for (PetscInt p = begin; p < end; ++p) z += A.values[p] * y_full[A.ja[p]];  // z_i = a_i·w + c
      double r = 0, di = 0;
      logistic_row(z, b[i], want_loss ? &loss : nullptr, &r, &di);  // ℓ_i, r_i, d_i
      if (curv) {
        d[i] = di;
        side.stamps.mark(i);
      }
      if (grad) {
        for (PetscInt p = begin; p < end; ++p) grad[A.ja[p]] += r * A.values[p];  // grad += r_i a_i
        gc += r;
      }
    }
  } else {
    detail::DenseView A(side.data.local);
    const PetscInt lda = A.lda;
    PetscScalar* z = detail::ensure(side.z, static_cast<std::size_t>(side.data.local_rows()));
    if (rows.full()) {
      // z = A w (one gemv over the column-major block), then r_i in place, then grad += Aᵀ r.
      const PetscBLASInt m_ = blas_int(side.data.local_rows()), n_ = blas_int(nf),
                         ld = blas_int(std::max<PetscInt>(lda, 1)), one = 1;
      const PetscScalar alpha = 1, beta = 0;
      if (m_ > 0 && n_ > 0)
        BLASgemv_("N", &m_, &n_, &alpha, A.values, &ld, y_full, &one, &beta, z, &one);
      else
        std::fill(z, z + side.data.local_rows(), 0.0);
      for (PetscInt i = 0; i < nrows; ++i) {
        double r = 0, di = 0;
        logistic_row(z[i] + c, b[i], want_loss ? &loss : nullptr, &r, &di);
        if (curv) d[i] = di;
        z[i] = r;
        gc += r;
      }
      if (grad && m_ > 0 && n_ > 0) {
        const PetscScalar beta1 = 1;
        BLASgemv_("T", &m_, &n_, &alpha, A.values, &ld, z, &one, &beta1, grad, &one);
      }
      if (curv) side.stamps.mark_all();
    } else {
      for (PetscInt k = 0; k < nrows; ++k) {
        const PetscInt i = rows.row(k);
        PetscScalar zi = c;
        for (PetscInt j = 0; j < nf; ++j) zi += A.values[i + j * lda] * y_full[j];
        double r = 0, di = 0;
        logistic_row(zi, b[i], want_loss ? &loss : nullptr, &r, &di);
        if (curv) {
          d[i] = di;
          side.stamps.mark(i);
        }
        if (grad) {
          for (PetscInt j = 0; j < nf; ++j) grad[j] += r * A.values[i + j * lda];
          gc += r;
        }
      }
    }
  }
  if (curv && rows.full()) side.stamps.mark_all();
  if (grad && icpt) grad[nf] += gc;
  return loss;
}

PetscReal LogregProblem::upper_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  PetscInt n = 0;
  const PetscReal loss = detail::sum_over_ranks(comm_, loss_pass(*validation_, batch, yf, nullptr, &n, true));
  return loss / static_cast<PetscReal>(n);  // f = (1/m) Σ ℓ_i
}

void LogregProblem::upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  check_layouts(x, y);
  if (gx) BILEVEL_PETSC_CALL(VecSet(gx, 0.0));  // f does not depend on x
  if (!gy) return;
  const PetscScalar* yf = y_gather_->gather(y);
  std::fill(buffer_.begin(), buffer_.end(), 0.0);
  PetscInt n = 0;
  loss_pass(*validation_, batch, yf, buffer_.data(), &n, false);
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(buffer_.data(), static_cast<std::size_t>(dy_)));
  // ∇_y f = (1/m) Σ r_i [a_i; 1]
  const PetscReal inv = 1.0 / static_cast<PetscReal>(n);
  petsc::WriteView out(gy);
  for (PetscInt j = 0; j < out.size(); ++j) out[j] = inv * buffer_[static_cast<std::size_t>(y_begin_ + j)];
}

PetscReal LogregProblem::lower_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  train_->stamps.refresh(y_gather_->generation());
  PetscInt n = 0;
  const double loss = loss_pass(*train_, batch, yf, nullptr, &n, true);
  // 1/2 Σ_j λ_j w_j² over the local features
  const PetscScalar* lam = regularisers(x);
  double reg = 0;
  const PetscInt jend = std::min(y_end_, n_features_);
  for (PetscInt j = y_begin_; j < jend; ++j)
    reg += (options_.scalar ? lam[0] : lam[j - y_begin_]) * yf[j] * yf[j];
  PetscScalar sums[2] = {loss, 0.5 * reg};
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  return sums[0] / static_cast<PetscReal>(n) + sums[1];  // g = (1/n) Σ ℓ_i + 1/2 Σ λ_j w_j²
}

void LogregProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) {
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  train_->stamps.refresh(y_gather_->generation());
  std::fill(buffer_.begin(), buffer_.end(), 0.0);
  PetscInt n = 0;
  loss_pass(*train_, batch, yf, buffer_.data(), &n, false);
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(buffer_.data(), static_cast<std::size_t>(dy_)));
  const PetscScalar* lam = regularisers(x);
  const PetscReal inv = 1.0 / static_cast<PetscReal>(n);
  petsc::WriteView out(gy);
  for (PetscInt l = 0; l < out.size(); ++l) {
    const PetscInt j = y_begin_ + l;
    PetscScalar v = inv * buffer_[static_cast<std::size_t>(j)];             // (1/n) Σ r_i [a_i; 1]
    if (j < n_features_) v += (options_.scalar ? lam[0] : lam[l]) * yf[j];  // + λ_j w_j
    out[l] = v;
  }
}

void LogregProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& /*batch*/, Vec gx) {
  check_layouts(x, y);
  const PetscScalar* lam = regularisers(x);
  const PetscInt jend = std::min(y_end_, n_features_);
  petsc::ReadView yv(y);
  if (options_.scalar) {
    // ∂g/∂x = 1/2 e^x Σ_j w_j²
    double s = 0;
    for (PetscInt j = y_begin_; j < jend; ++j) s += yv[j - y_begin_] * yv[j - y_begin_];
    s = detail::sum_over_ranks(comm_, s);
    petsc::WriteView out(gx);
    if (out.size() > 0) out[0] = 0.5 * lam[0] * s;
    return;
  }
  // ∂g/∂x_j = 1/2 e^{x_j} w_j²
  petsc::WriteView out(gx);
  for (PetscInt l = 0; l < out.size(); ++l) out[l] = 0.5 * lam[l] * yv[l] * yv[l];
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
  const PetscScalar* yf = y_gather_->gather(y);
  side.stamps.refresh(y_gather_->generation());
  side.rows.select(side.data, batch);
  const detail::LocalRows& rows = side.rows;
  const PetscInt nf = n_features_, nrows = rows.count();
  const bool icpt = options_.intercept;
  const PetscScalar c = icpt ? yf[nf] : 0.0;
  const PetscReal inv = 1.0 / static_cast<PetscReal>(rows.global_size());
  PetscReal* d = side.d.data();
  const std::size_t mdy = static_cast<std::size_t>(m * dy_);
  PetscScalar* acc = detail::ensure(buffer_, mdy + 2);
  std::fill(acc, acc + mdy, 0.0);

  // The directions, gathered to every rank, interleaved: V[j m + q] = (w_q)_j (for m = 1 the gather itself).
  const PetscScalar* V = nullptr;
  if (m == 1) {
    V = w_gather_->gather(w[0]);
  } else {
    PetscScalar* packed = detail::ensure(multi_, mdy);
    for (PetscInt q = 0; q < m; ++q) {
      const PetscScalar* wq = w_gather_->gather(w[q]);
      for (PetscInt j = 0; j < dy_; ++j) packed[j * m + q] = wq[j];
    }
    V = packed;
  }

  if (side.data.format == DataFormat::Sparse) {
    detail::CsrView A(side.data.local);
    if (m == 1 && rows.full() && side.stamps.all_valid()) {
      // The steady state: D cached, one fused pass (logistic_hvp_csr).
      logistic_hvp_csr(A.rows, A.ia, A.ja, A.values, d, inv, V, nf, icpt, acc);
    } else if (m == 1) {
      // One pass per row: t = a_i·v + v_c, and z_i = a_i·w + c in the same sweep when d_i is stale; then
      // t ← d_i t / n and acc += t [a_i; 1].
      const PetscScalar vc = icpt ? V[nf] : 0.0;
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
          d[i] = logistic_curvature(z);
          side.stamps.mark(i);
        }
        t *= d[i] * inv;
        for (PetscInt p = begin; p < end; ++p) acc[A.ja[p]] += t * A.values[p];
        tc += t;
      }
      if (icpt) acc[nf] += tc;
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
          for (PetscInt q = 0; q < mq; ++q) t[q] = icpt ? V[nf * m + q0 + q] : 0.0;
          if (!side.stamps.valid(i)) {
            PetscScalar z = c;
            for (PetscInt p = begin; p < end; ++p) {
              const PetscInt j = A.ja[p];
              z += A.values[p] * yf[j];
              for (PetscInt q = 0; q < mq; ++q) t[q] += A.values[p] * V[j * m + q0 + q];
            }
            d[i] = logistic_curvature(z);
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
            for (PetscInt q = 0; q < mq; ++q) acc[nf * m + q0 + q] += t[q];
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
        const PetscBLASInt m_ = blas_int(side.data.local_rows()), n_ = blas_int(nf),
                           ld = blas_int(std::max<PetscInt>(lda, 1)), incv = blas_int(m), one = 1;
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
            d[i] = logistic_curvature(zi);
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

  detail::sum_over_ranks(comm_, std::span<PetscScalar>(acc, mdy));
  // out_q = (1/n) [A 1]ᵀ D [A 1] v_q + λ ∘ v_q (regulariser on w only)
  const PetscScalar* lam = regularisers(x);
  for (PetscInt q = 0; q < m; ++q) {
    petsc::ReadView vq(w[q]);
    petsc::WriteView o(out[q]);
    for (PetscInt l = 0; l < o.size(); ++l) {
      const PetscInt j = y_begin_ + l;
      PetscScalar v = acc[j * m + q];
      if (j < nf) v += (options_.scalar ? lam[0] : lam[l]) * vq[l];
      o[l] = v;
    }
  }
}

void LogregProblem::lower_jvp_impl(Vec x, Vec y, const Batch& /*batch*/, Vec w, Vec out) {
  check_layouts(x, y);
  const PetscScalar* lam = regularisers(x);
  petsc::ReadView yv(y), wv(w);
  const PetscInt jend = std::min(y_end_, n_features_);
  if (options_.scalar) {
    // J w = Σ_j e^x w_j v_j
    double s = 0;
    for (PetscInt j = y_begin_; j < jend; ++j) s += yv[j - y_begin_] * wv[j - y_begin_];
    s = detail::sum_over_ranks(comm_, s);
    petsc::WriteView o(out);
    if (o.size() > 0) o[0] = lam[0] * s;
    return;
  }
  // (J w)_j = e^{x_j} w_j v_j
  petsc::WriteView o(out);
  for (PetscInt l = 0; l < o.size(); ++l) o[l] = lam[l] * yv[l] * wv[l];
}

TestMetrics LogregProblem::evaluate_test(Vec x, Vec y) {
  if (!test_) throw NotImplemented("logreg: no test set was given");
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  Side& side = *test_;
  PetscInt n = 0;
  PetscScalar sums[2] = {loss_pass(side, Batch::all(), yf, nullptr, &n, true), 0};
  // accuracy: prediction sign(a·w + c) (0 counts as −1)
  const PetscScalar c = options_.intercept ? yf[n_features_] : 0.0;
  std::vector<PetscScalar>& z = side.z;
  z.assign(static_cast<std::size_t>(side.data.local_rows()), c);
  {
    petsc::VecHandle wv, zv;
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, n_features_, yf, wv.out()));
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, side.data.local_rows(), z.data(), zv.out()));
    BILEVEL_PETSC_CALL(MatMultAdd(side.data.local, wv, zv, zv));
  }
  for (PetscInt i = 0; i < side.data.local_rows(); ++i)
    if ((z[static_cast<std::size_t>(i)] > 0 ? 1.0 : -1.0) == side.sign[static_cast<std::size_t>(i)])
      sums[1] += 1;
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  TestMetrics m;
  m.loss = sums[0] / static_cast<PetscReal>(n);
  m.accuracy = sums[1] / static_cast<PetscReal>(n);
  return m;
}

std::optional<PetscReal> LogregProblem::validation_accuracy(Vec x, Vec y) {
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  Side& side = *validation_;
  const PetscScalar c = options_.intercept ? yf[n_features_] : 0.0;
  std::vector<PetscScalar>& z = side.z;
  z.assign(static_cast<std::size_t>(side.data.local_rows()), c);
  {
    petsc::VecHandle wv, zv;
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, n_features_, yf, wv.out()));
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, side.data.local_rows(), z.data(), zv.out()));
    BILEVEL_PETSC_CALL(MatMultAdd(side.data.local, wv, zv, zv));
  }
  double correct = 0;
  for (PetscInt i = 0; i < side.data.local_rows(); ++i)
    if ((z[static_cast<std::size_t>(i)] > 0 ? 1.0 : -1.0) == side.sign[static_cast<std::size_t>(i)])
      correct += 1;
  correct = detail::sum_over_ranks(comm_, correct);
  return correct / static_cast<PetscReal>(side.data.n_rows);
}

void LogregProblem::hvp_kernel_only(Vec y, Vec w) {
  Side& side = *train_;
  const PetscScalar* yf = y_gather_->gather(y);
  side.stamps.refresh(y_gather_->generation());
  if (!side.stamps.all_valid()) {
    PetscInt ignored = 0;
    loss_pass(side, Batch::all(), yf, nullptr, &ignored, false);
  }
  const PetscScalar* v = w_gather_->gather(w);
  PetscScalar* acc = detail::ensure(buffer_, static_cast<std::size_t>(dy_ + 2));
  std::fill(acc, acc + dy_, 0.0);
  const PetscReal inv = 1.0 / static_cast<PetscReal>(side.data.n_rows);
  if (side.data.format == DataFormat::Sparse) {
    detail::CsrView A(side.data.local);
    logistic_hvp_csr(
        A.rows, A.ia, A.ja, A.values, side.d.data(), inv, v, n_features_, options_.intercept, acc);
  } else {
    detail::DenseView A(side.data.local);
    const PetscBLASInt m_ = blas_int(side.data.local_rows()), n_ = blas_int(n_features_),
                       ld = blas_int(std::max<PetscInt>(A.lda, 1)), one = 1;
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

}  // namespace bilevel
