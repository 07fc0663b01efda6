/// \file `logreg`: l2-regularised binary logistic regression with per-feature (or scalar) log-regularisers.
/// Options: -bilevel_logreg_scalar, -bilevel_logreg_intercept, -bilevel_logreg_initial_x,
/// -bilevel_logreg_positive_classes, -bilevel_logreg_n_val, -bilevel_logreg_model_comm,
/// -bilevel_logreg_hvp_kernel, -bilevel_logreg_hvp_simd, -bilevel_logreg_preconditioner.
///
/// Notation: z_i = a_i·w + c, m_i = b_i z_i, ℓ_i = log(1 + e^{−m_i}), r_i = dℓ_i/dz_i = −b_i σ(−m_i),
/// d_i = d²ℓ_i/dz_i² = σ(z_i)(1 − σ(z_i)), λ_j = e^{x_j}.
///
/// The starting point x_j = log(1e−2) lies on the slope of the value function, between its two flat parts
/// (docs/benchmarks.md, "logreg's starting point", has the measurement).
#include "bilevel/problems/logreg.hpp"

#include "bilevel/core/lower_hessian.hpp"

// clang-format off
#include <petscsys.h>
#include <petscblaslapack.h>  // after petscsys.h, which it needs
// clang-format on

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/memory.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "data_files.hpp"
#include "data_parallel.hpp"
#include "logreg_side.hpp"

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

LogregOptions LogregOptions::from_options(MPI_Comm comm) {
  petsc::OptionsReader reader(
      comm, "bilevel_logreg_", "Problem logreg, logistic-regression hyperparameters (-bilevel_logreg_*)");
  LogregOptions o;
  o.scalar = reader.boolean("scalar", o.scalar, "one regulariser for all features (dx = 1)");
  o.intercept = reader.boolean("intercept", o.intercept, "unregularised intercept as the last entry of y");
  o.initial_x = reader.real("initial_x", o.initial_x, "starting log-regulariser x_j", -50.0, 50.0);
  o.positive_classes = reader.string(
      "positive_classes", "", "labels that become +1, the rest -1 (a list such as 10-19 or 1,3,5)");
  o.n_val = reader.integer("n_val", o.n_val, "validation rows taken from the end of the training file", 1);
  o.model_comm =
      reader.choice("model_comm",
                    o.model_comm,
                    {"auto", "gather", "owners"},
                    "how sparse rows get the model: owners (entries the rows use), gather (whole model)");
  o.hvp_kernel = reader.choice("hvp_kernel",
                               o.hvp_kernel,
                               {"auto", "fused", "interleaved", "panel"},
                               "sparse HVP pass: fused, interleaved (v, out) pairs, or panels of rows");
  o.hvp_simd =
      reader.boolean("hvp_simd",
                     o.hvp_simd,
                     "AVX-512 loops for the sparse HVP when the CPU has them (kernel auto: not on AMD, where "
                     "they measured slower)");
  o.preconditioner =
      reader.choice("preconditioner",
                    o.preconditioner,
                    {"jacobi", "none"},
                    "lower preconditioner offered to the methods: jacobi (diag(H)^-1) or none");
  o.format =
      reader.choice("format",
                    o.format,
                    {"auto", "dense", "sparse"},
                    "storage of the data read from files: auto (dense when at most 2x the CSR bytes and "
                    "512 MiB per rank), dense, sparse");
  return o;
}

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

  std::tie(y_begin_, y_end_) = detail::ownership_range(comm_, dy_);
  // Sparse sides address a compressed model: the columns their local rows use, then the intercept.
  const detail::ModelComm mode = options_.model_comm == "gather"   ? detail::ModelComm::Gather
                                 : options_.model_comm == "owners" ? detail::ModelComm::Owners
                                                                   : detail::ModelComm::Auto;
  petsc::VecHandle layout = create_lower_vec();
  const PetscInt intercept_row[1] = {n_features_};
  for (Side* side : {train_.get(), validation_.get(), test_.get()}) {
    if (!side) continue;
    side->sparse = side->data.format == DataFormat::Sparse;
    if (side->sparse) {
      side->cols.setup(side->data.local,
                       layout,
                       1,
                       std::span<const PetscInt>(intercept_row, options_.intercept ? 1 : 0),
                       mode);
      side->width = side->cols.size();
      side->c_pos = options_.intercept ? side->width - 1 : side->width;
      detail::CsrView A(side->data.local);
      side->strict_rows = detail::rows_strictly_increasing(A.rows, A.ia, A.ja);
    } else {
      side->width = dy_;
      side->c_pos = n_features_;
    }
  }
  y_gather_ = std::make_unique<detail::Gatherer>(true);
  w_gather_ = std::make_unique<detail::Gatherer>();
  lambda_ = std::make_unique<detail::ExpRegularisers>();
}

LogregProblem::~LogregProblem() = default;

std::unique_ptr<LogregProblem> LogregProblem::from_files(MPI_Comm comm,
                                                         const std::string& train,
                                                         const std::string& validation,
                                                         const std::string& test,
                                                         const LogregOptions& options) {
  const std::string list_option = "-bilevel_logreg_positive_classes";
  std::vector<double> positive;
  if (!options.positive_classes.empty())
    positive = detail::parse_class_list(options.positive_classes, list_option);
  const int base = detail::data_index_base_option(comm);
  Dataset tr, va;
  if (validation.empty()) {
    const PetscInt total = detail::count_rows(comm, train);
    if (options.n_val >= total)
      throw InputError(train + ": has " + std::to_string(total) +
                       " rows, not more than -bilevel_logreg_n_val (" + std::to_string(options.n_val) + ")");
    tr = detail::read_rows(comm, train, 0, total - options.n_val, DataFormat::Sparse, base);
    va = detail::read_rows(comm, train, total - options.n_val, options.n_val, DataFormat::Sparse, base);
  } else {
    tr = detail::read_rows(comm, train, 0, -1, DataFormat::Sparse, base);
    va = detail::read_rows(comm, validation, 0, -1, DataFormat::Sparse, base);
  }
  std::optional<Dataset> te;
  if (!test.empty()) te = detail::read_rows(comm, test, 0, -1, DataFormat::Sparse, base);
  detail::settle_files({&tr, &va, te ? &*te : nullptr}, base);
  if (!options.positive_classes.empty()) {
    detail::binarize_labels(tr, positive);
    detail::binarize_labels(va, positive);
    if (te) detail::binarize_labels(*te, positive);
  }
  if (detail::dense_storage(options.format, tr))
    for (Dataset* d : {&tr, &va, te ? &*te : nullptr})
      if (d) convert_format(*d, DataFormat::Dense);
  return std::make_unique<LogregProblem>(std::move(tr), std::move(va), std::move(te), options);
}

petsc::VecHandle LogregProblem::create_lower_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, y_end_ - y_begin_, dy_, v.out()));
  return v;
}

petsc::VecHandle LogregProblem::create_upper_vec() const {
  // Same layout as the first n_features entries of y: the regulariser terms need no communication.
  return detail::create_feature_vec(comm_, options_.scalar, y_begin_, y_end_, n_features_);
}

Capability LogregProblem::capabilities() const {
  const Capability c = detail::data_capabilities(test_ != nullptr);
  return options_.preconditioner == "jacobi" ? c | Capability::LowerPreconditioner : c;
}

DatasetSizes LogregProblem::dataset_sizes() const {
  return {train_->data.n_rows, validation_->data.n_rows};
}

std::int64_t LogregProblem::local_data_bytes() const {
  std::int64_t bytes = 0;
  for (const Side* s : {train_.get(), validation_.get(), test_.get()})
    if (s)
      bytes += petsc::matrix_storage_bytes(s->data.local) +
               static_cast<std::int64_t>(s->data.labels.size() * sizeof(PetscInt));
  return bytes;
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
  h.preconditioner_is_metric = false;  // Jacobi: a CG preconditioner, too crude a metric for steps on y
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

std::optional<SmoothnessConstants> LogregProblem::smoothness_constants(Vec x, Vec y) {
  check_layouts(x, y);
  if (!row_norms_) {
    std::array<PetscReal, 4> r{};  // max, sum (train), max, sum (validation)
    int k = 0;
    for (Side* side : {train_.get(), validation_.get()}) {
      for (PetscInt i = 0; i < side->data.local_rows(); ++i) {
        PetscInt nnz = 0;
        const PetscScalar* vals = nullptr;
        BILEVEL_PETSC_CALL(MatGetRow(side->data.local, i, &nnz, nullptr, &vals));
        PetscReal s = options_.intercept ? 1.0 : 0.0;
        for (PetscInt j = 0; j < nnz; ++j) s += vals[j] * vals[j];
        BILEVEL_PETSC_CALL(MatRestoreRow(side->data.local, i, &nnz, nullptr, &vals));
        r[k] = std::max(r[k], s);
        r[k + 1] += s;
      }
      k += 2;
    }
    const PetscReal max_local[2] = {r[0], r[2]}, sum_local[2] = {r[1], r[3]};
    PetscReal max_all[2], sum_all[2];
    MPI_Allreduce(max_local, max_all, 2, MPIU_REAL, MPI_MAX, comm_);
    MPI_Allreduce(sum_local, sum_all, 2, MPIU_REAL, MPI_SUM, comm_);
    row_norms_ = std::array<PetscReal, 4>{max_all[0],
                                          sum_all[0] / std::max<PetscInt>(1, train_->data.n_rows),
                                          max_all[1],
                                          sum_all[1] / std::max<PetscInt>(1, validation_->data.n_rows)};
  }
  const auto& rn = *row_norms_;
  PetscReal xmax = 0, xmin = 0;
  BILEVEL_PETSC_CALL(VecMax(x, nullptr, &xmax));
  BILEVEL_PETSC_CALL(VecMin(x, nullptr, &xmin));
  PetscReal cross = 0;
  if (options_.scalar) {
    PetscReal yn = 0;
    BILEVEL_PETSC_CALL(VecNorm(y, NORM_2, &yn));
    cross = std::exp(xmax) * yn;  // J = e^x wᵀ: ||J|| = e^x ||w|| <= e^x ||y||
  } else {
    PetscReal local = 0;
    petsc::ReadView xs(x), ys(y);  // x has the layout of y's first n_features entries
    for (PetscInt i = 0; i < xs.size(); ++i) local = std::max(local, std::exp(xs[i]) * std::abs(ys[i]));
    MPI_Allreduce(&local, &cross, 1, MPIU_REAL, MPI_MAX, comm_);
  }
  constexpr PetscReal kMaxSigma2 = 0.0962251;  // max |σ''| = 1/(6√3)
  SmoothnessConstants c;
  if (!options_.intercept) c.mu = std::exp(xmin);  // H >= diag(e^x)
  c.upper_grad_y_lipschitz = rn[3] / 4;            // λ_max(Âᵀ Â / m) / 4 <= trace / 4
  c.cross_norm = cross;                            // J = diag(e^{x_j} w_j)
  c.cross_lipschitz = std::exp(xmax);              // ||J(y) − J(y')|| <= max e^{x_j} ||w − w'||
  // |Δσ'_i| <= |σ''| ||â_i|| ||y − y'|| and ||Σ Δσ'_i â_i â_iᵀ/n|| <= max|Δσ'_i| λ_max(Âᵀ Â/n), where
  // λ_max(Âᵀ Â/n) = 4 L_data (lower_lipschitz_bound's SLEPc estimate, padded)
  lower_lipschitz_bound(x);
  c.hessian_lipschitz = kMaxSigma2 * std::sqrt(rn[0]) * std::min(rn[1], 4 * *data_lipschitz_);
  return c;
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
  return lambda_->of(x, options_.scalar);
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
  const PetscScalar c = icpt ? y_full[side.c_pos] : 0.0;
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
      const PetscBLASInt m_ = detail::blas_int(side.data.local_rows()), n_ = detail::blas_int(nf),
                         ld = detail::blas_int(std::max<PetscInt>(lda, 1)), one = 1;
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
  if (grad && icpt) grad[side.c_pos] += gc;
  return loss;
}

const PetscScalar* LogregProblem::model_of(Side& side, Vec y) {
  const PetscScalar* yf = side.sparse ? side.model.get(side.cols, y) : y_gather_->gather(y);
  if (side.caches_curvature)
    side.stamps.refresh(side.sparse ? side.model.generation() : y_gather_->generation());
  return yf;
}

void LogregProblem::sums_to(Side& side, const PetscScalar* acc, PetscReal scale, Vec out) {
  if (side.sparse) {
    BILEVEL_PETSC_CALL(VecSet(out, 0.0));
    side.cols.add(acc, out);  // Σ over ranks onto the owners
    BILEVEL_PETSC_CALL(VecScale(out, scale));
    return;
  }
  PetscScalar* buf = detail::ensure(reduce_, static_cast<std::size_t>(dy_));
  std::copy_n(acc, dy_, buf);
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(buf, static_cast<std::size_t>(dy_)));
  petsc::WriteView o(out);
  for (PetscInt j = 0; j < o.size(); ++j) o[j] = scale * buf[static_cast<std::size_t>(y_begin_ + j)];
}

PetscReal LogregProblem::upper_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  const PetscScalar* yf = model_of(*validation_, y);
  PetscInt n = 0;
  const PetscReal loss = detail::sum_over_ranks(comm_, loss_pass(*validation_, batch, yf, nullptr, &n, true));
  return loss / static_cast<PetscReal>(n);  // f = (1/m) Σ ℓ_i
}

void LogregProblem::upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  check_layouts(x, y);
  if (gx) BILEVEL_PETSC_CALL(VecSet(gx, 0.0));  // f does not depend on x
  if (!gy) return;
  Side& side = *validation_;
  const PetscScalar* yf = model_of(side, y);
  PetscScalar* acc =
      detail::ensure(side.sparse ? side.acc : buffer_, static_cast<std::size_t>(side.width + 2));
  std::fill(acc, acc + side.width, 0.0);
  PetscInt n = 0;
  loss_pass(side, batch, yf, acc, &n, false);
  sums_to(side, acc, 1.0 / static_cast<PetscReal>(n), gy);  // ∇_y f = (1/m) Σ r_i [a_i; 1]
}

PetscReal LogregProblem::lower_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  const PetscScalar* yf = model_of(*train_, y);
  PetscInt n = 0;
  const double loss = loss_pass(*train_, batch, yf, nullptr, &n, true);
  // 1/2 Σ_j λ_j w_j² over the local features
  const PetscScalar* lam = regularisers(x);
  double reg = 0;
  const PetscInt jend = std::min(y_end_, n_features_);
  {
    petsc::ReadView yv(y);
    for (PetscInt j = y_begin_; j < jend; ++j) {
      const PetscScalar w = yv[j - y_begin_];
      reg += (options_.scalar ? lam[0] : lam[j - y_begin_]) * w * w;
    }
  }
  PetscScalar sums[2] = {loss, 0.5 * reg};
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  return sums[0] / static_cast<PetscReal>(n) + sums[1];  // g = (1/n) Σ ℓ_i + 1/2 Σ λ_j w_j²
}

void LogregProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) {
  check_layouts(x, y);
  data_grad_y(y, batch, gy);
  add_regulariser_grad(x, y, gy);
}

void LogregProblem::data_grad_y(Vec y, const Batch& batch, Vec gy) {
  Side& side = *train_;
  const PetscScalar* yf = model_of(side, y);
  PetscScalar* acc =
      detail::ensure(side.sparse ? side.acc : buffer_, static_cast<std::size_t>(side.width + 2));
  std::fill(acc, acc + side.width, 0.0);
  PetscInt n = 0;
  loss_pass(side, batch, yf, acc, &n, false);
  sums_to(side, acc, 1.0 / static_cast<PetscReal>(n), gy);  // (1/n) Σ r_i [a_i; 1]
}

void LogregProblem::add_regulariser_grad(Vec x, Vec y, Vec gy) {
  const PetscScalar* lam = regularisers(x);
  petsc::ReadView yv(y);
  petsc::WriteView out(gy);
  const PetscInt jend = std::min(y_end_, n_features_) - y_begin_;
  for (PetscInt l = 0; l < jend; ++l) out[l] += (options_.scalar ? lam[0] : lam[l]) * yv[l];  // + λ_j w_j
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
  Side& side = *test_;
  const PetscScalar* yf = model_of(side, y);
  PetscInt n = 0;
  PetscScalar sums[2] = {loss_pass(side, Batch::all(), yf, nullptr, &n, true), correct_predictions(side, yf)};
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  TestMetrics m;
  m.loss = sums[0] / static_cast<PetscReal>(n);
  m.accuracy = sums[1] / static_cast<PetscReal>(n);
  return m;
}

std::optional<PetscReal> LogregProblem::validation_accuracy(Vec x, Vec y) {
  check_layouts(x, y);
  const PetscScalar* yf = model_of(*validation_, y);
  const double correct = detail::sum_over_ranks(comm_, correct_predictions(*validation_, yf));
  return correct / static_cast<PetscReal>(validation_->data.n_rows);
}

double LogregProblem::correct_predictions(Side& side, const PetscScalar* yf) {
  // prediction sign(a·w + c) (0 counts as −1) against b_i
  const PetscScalar c = options_.intercept ? yf[side.c_pos] : 0.0;
  std::vector<PetscScalar>& z = side.z;
  z.assign(static_cast<std::size_t>(side.data.local_rows()), c);
  if (side.sparse) {
    detail::CsrView A(side.data.local);
    for (PetscInt i = 0; i < A.rows; ++i)
      for (PetscInt p = A.ia[i]; p < A.ia[i + 1]; ++p)
        z[static_cast<std::size_t>(i)] += A.values[p] * yf[A.ja[p]];
  } else {
    petsc::VecHandle wv, zv;
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, n_features_, yf, wv.out()));
    BILEVEL_PETSC_CALL(VecCreateSeqWithArray(PETSC_COMM_SELF, 1, side.data.local_rows(), z.data(), zv.out()));
    BILEVEL_PETSC_CALL(MatMultAdd(side.data.local, wv, zv, zv));
  }
  double correct = 0;
  for (PetscInt i = 0; i < side.data.local_rows(); ++i)
    if ((z[static_cast<std::size_t>(i)] > 0 ? 1.0 : -1.0) == side.sign[static_cast<std::size_t>(i)])
      correct += 1;
  return correct;
}

}  // namespace bilevel
