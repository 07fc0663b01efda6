/// \file `softmax`: multinomial logistic regression with per-feature (or scalar) log-regularisers.
/// Options: -bilevel_softmax_{scalar, bias_weight, initial_x, n_val, format}.
///
/// Notation per row i: a'_i = [a_i; 1], z_i = [W; bᵀ]ᵀ a'_i, p_i = softmax(z_i), λ_j = e^{x_j}.
///   ∇_y g   = (1/n) Σ a'_i ⊗ (p_i − e_{l_i}) + λ_j W_j (rows j < n_features) + μ_b b
///   H V     = (1/n) Σ a'_i ⊗ s_i + λ_j V_j + μ_b V_b,   u_i = Vᵀ a'_i,  s_i = p_i ∘ (u_i − p_i·u_i)
///   ∇_x g_j = 1/2 λ_j ||W_j||²,   (J V)_j = λ_j W_j·V_j   (scalar x: the sums over j)
#include "bilevel/problems/softmax.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "bilevel/data/idx.hpp"
#include "bilevel/data/libsvm.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "multinomial.hpp"

namespace bilevel {

/// One data set: rows (sparse CSR, or our row-major copy of dense rows), labels, and on the training
/// side the cached probabilities p_i valid for the model generation of `stamps`.
struct SoftmaxProblem::Side {
  Dataset data;
  std::vector<PetscScalar> dense;
  std::vector<PetscScalar> p;
  detail::RowStamps stamps;
  detail::LocalRows rows;
  bool caches = false;
};

SoftmaxOptions SoftmaxOptions::from_options(MPI_Comm comm) {
  petsc::OptionsReader reader(
      comm, "bilevel_softmax_", "Problem softmax, multinomial logistic-regression hyperparameters (-bilevel_softmax_*)");
  SoftmaxOptions o;
  o.scalar = reader.boolean("scalar", o.scalar, "one regulariser for all features (dx = 1)");
  o.bias_weight = reader.real("bias_weight", o.bias_weight, "l2 weight on the bias", 0.0);
  o.initial_x = reader.real("initial_x", o.initial_x, "starting log-regulariser x_j", -50.0, 50.0);
  o.n_val = reader.integer("n_val", o.n_val, "validation rows taken from the end of the training file", 1);
  o.format = reader.choice("format", o.format, {"auto", "dense", "sparse"}, "storage of the data blocks");
  return o;
}

SoftmaxProblem::SoftmaxProblem(Dataset train,
                               Dataset validation,
                               std::optional<Dataset> test,
                               const SoftmaxOptions& options)
    : comm_(train.comm), options_(options) {
  std::vector<Dataset*> sets = {&train, &validation};
  if (test) sets.push_back(&*test);
  classes_ = detail::unify_classes(sets);
  if (classes_ < 2) throw InputError(train.source + ": the softmax problem needs at least 2 classes");
  n_features_ = std::max(train.n_features, validation.n_features);
  if (test) n_features_ = std::max(n_features_, test->n_features);
  for (Dataset* d : sets) reconcile_features(*d, n_features_);
  dy_ = (n_features_ + 1) * classes_;

  DataFormat fmt = DataFormat::Sparse;
  if (options_.format == "dense")
    fmt = DataFormat::Dense;
  else if (options_.format == "auto")
    fmt = detail::density(train) > 0.3 && detail::optimized_blas() ? DataFormat::Dense : DataFormat::Sparse;
  for (Dataset* d : sets)
    if (d->format != fmt) convert_format(*d, fmt);

  auto make_side = [this](Dataset&& data, bool caches) {
    auto side = std::make_unique<Side>();
    side->data = std::move(data);
    side->caches = caches;
    detail::adopt_dense(side->data, side->dense);
    if (caches) {
      side->p.assign(static_cast<std::size_t>(side->data.local_rows() * classes_), 0.0);
      side->stamps.resize(side->data.local_rows());
    }
    return side;
  };
  train_ = make_side(std::move(train), true);
  validation_ = make_side(std::move(validation), false);
  if (test) test_ = make_side(std::move(*test), false);

  // Whole rows of [W; bᵀ] per rank: row j's K entries and x_j live together.
  PetscInt local = PETSC_DECIDE, global = n_features_ + 1;
  BILEVEL_PETSC_CALL(PetscSplitOwnership(comm_, &local, &global));
  BILEVEL_PETSC_CALL(MPI_Scan(&local, &row_end_, 1, MPIU_INT, MPI_SUM, comm_));
  row_begin_ = row_end_ - local;
  work_ = std::make_unique<detail::MultinomialWorkspace>();
  y_gather_ = std::make_unique<detail::Gatherer>(true);
  w_gather_ = std::make_unique<detail::Gatherer>();
  x_gather_ = std::make_unique<detail::Gatherer>();
}

SoftmaxProblem::~SoftmaxProblem() = default;

std::unique_ptr<SoftmaxProblem> SoftmaxProblem::from_files(MPI_Comm comm,
                                                           const std::string& train,
                                                           const std::string& validation,
                                                           const std::string& test,
                                                           const SoftmaxOptions& options) {
  const DataFormat read_format = options.format == "sparse" ? DataFormat::Sparse : DataFormat::Dense;
  auto read_rows = [&](const std::string& path, PetscInt first, PetscInt count) {
    if (detail::is_idx(path)) {
      IdxReadOptions o;
      o.first_row = first;
      o.max_rows = count;
      o.format = read_format;
      return read_idx(comm, path, detail::idx_labels_for(path), o);
    }
    LibsvmReadOptions o;
    o.first_row = first;
    o.max_rows = count;
    return read_libsvm(comm, path, o);
  };
  Dataset tr, va;
  if (validation.empty()) {
    const PetscInt total =
        detail::is_idx(train) ? detail::idx_records(comm, train) : read_libsvm(comm, train).n_rows;
    if (options.n_val >= total)
      throw InputError(train + ": has " + std::to_string(total) +
                       " rows, not more than -bilevel_softmax_n_val (" + std::to_string(options.n_val) + ")");
    tr = read_rows(train, 0, total - options.n_val);
    va = read_rows(train, total - options.n_val, options.n_val);
  } else {
    tr = read_rows(train, 0, -1);
    va = read_rows(validation, 0, -1);
  }
  std::optional<Dataset> te;
  if (!test.empty()) te = read_rows(test, 0, -1);
  return std::make_unique<SoftmaxProblem>(std::move(tr), std::move(va), std::move(te), options);
}

petsc::VecHandle SoftmaxProblem::create_lower_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, classes_ * (row_end_ - row_begin_), dy_, v.out()));
  return v;
}

petsc::VecHandle SoftmaxProblem::create_upper_vec() const {
  petsc::VecHandle v;
  int rank = 0;
  MPI_Comm_rank(comm_, &rank);
  if (options_.scalar) {
    BILEVEL_PETSC_CALL(VecCreateMPI(comm_, rank == 0 ? 1 : 0, 1, v.out()));
  } else {
    const PetscInt local = std::max<PetscInt>(0, std::min(row_end_, n_features_) - row_begin_);
    BILEVEL_PETSC_CALL(VecCreateMPI(comm_, local, n_features_, v.out()));
  }
  return v;
}

Capability SoftmaxProblem::capabilities() const {
  Capability c =
      Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX | Capability::Stochastic;
  if (test_) c = c | Capability::TestSet;
  return c;
}

DatasetSizes SoftmaxProblem::dataset_sizes() const {
  return {train_->data.n_rows, validation_->data.n_rows};
}

ProblemHints SoftmaxProblem::hints() const {
  ProblemHints h;
  h.upper_stepper = "adam";
  h.upper_step = 0.2;
  h.x_lower_bound = -20.0;
  h.x_upper_bound = 10.0;
  return h;
}

void SoftmaxProblem::initial_point(Vec x, Vec y) {
  BILEVEL_PETSC_CALL(VecSet(x, options_.initial_x));
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

DataFormat SoftmaxProblem::format() const {
  return train_->data.format;
}

void SoftmaxProblem::check_layouts(Vec x, Vec y) const {
  PetscInt n = 0;
  if (y) {
    BILEVEL_PETSC_CALL(VecGetSize(y, &n));
    if (n != dy_)
      throw InputError("softmax: y has size " + std::to_string(n) + ", expected " + std::to_string(dy_));
  }
  if (x) {
    BILEVEL_PETSC_CALL(VecGetSize(x, &n));
    const PetscInt dx = options_.scalar ? 1 : n_features_;
    if (n != dx)
      throw InputError("softmax: x has size " + std::to_string(n) + ", expected " + std::to_string(dx));
  }
}

const PetscScalar* SoftmaxProblem::regularisers(Vec x) {
  if (options_.scalar) {
    exp_x_.assign(1, std::exp(x_gather_->gather(x)[0]));
    return exp_x_.data();
  }
  petsc::ReadView xv(x);
  exp_x_.resize(static_cast<std::size_t>(xv.size()));
  for (PetscInt j = 0; j < xv.size(); ++j)
    exp_x_[static_cast<std::size_t>(j)] = std::exp(xv[j]);  // λ_j = e^{x_j}
  return exp_x_.data();
}

PetscScalar SoftmaxProblem::weight_of(const PetscScalar* lam, PetscInt l) const {
  const PetscInt j = row_begin_ + l / classes_;
  if (j >= n_features_) return options_.bias_weight;
  return options_.scalar ? lam[0] : lam[j - row_begin_];
}

double SoftmaxProblem::loss_pass(
    Side& side, const Batch& batch, const PetscScalar* y_full, PetscScalar* grad, PetscInt* count) {
  side.rows.select(side.data, batch);
  *count = side.rows.global_size();
  const PetscInt K = classes_;
  const PetscInt* labels = side.data.labels.data();
  PetscScalar* ptmp = detail::ensure(work_->p, static_cast<std::size_t>(K));
  double loss = 0;
  detail::row_pass(side.data,
                   side.dense,
                   side.rows,
                   y_full,
                   K,
                   0,
                   grad,
                   *work_,
                   [&](PetscInt, PetscInt i, const PetscScalar* z, PetscScalar* s) {
                     PetscScalar* p = side.caches ? side.p.data() + i * K : ptmp;
                     const double lse = detail::softmax(z, K, p);  // p_i = softmax(z_i)
                     const PetscInt l = labels[i];
                     loss += lse - z[l];  // CE_i
                     if (side.caches) side.stamps.mark(i);
                     if (grad) {
                       for (PetscInt c = 0; c < K; ++c) s[c] = p[c];  // s = p_i − e_l
                       s[l] -= 1;
                     }
                   });
  if (side.caches && side.rows.full()) side.stamps.mark_all();
  return loss;
}

PetscReal SoftmaxProblem::upper_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  PetscInt n = 0;
  const double loss = detail::sum_over_ranks(comm_, loss_pass(*validation_, batch, yf, nullptr, &n));
  return loss / static_cast<PetscReal>(n);  // f = (1/m) Σ CE_i
}

void SoftmaxProblem::upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  check_layouts(x, y);
  if (gx) BILEVEL_PETSC_CALL(VecSet(gx, 0.0));  // f does not depend on x
  if (!gy) return;
  const PetscScalar* yf = y_gather_->gather(y);
  PetscScalar* acc = detail::ensure(work_->acc, static_cast<std::size_t>(dy_));
  std::fill(acc, acc + dy_, 0.0);
  PetscInt n = 0;
  loss_pass(*validation_, batch, yf, acc, &n);
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(acc, static_cast<std::size_t>(dy_)));
  const PetscReal inv = 1.0 / static_cast<PetscReal>(n);
  const PetscInt lo = classes_ * row_begin_;
  petsc::WriteView out(gy);
  for (PetscInt l = 0; l < out.size(); ++l) out[l] = inv * acc[lo + l];  // (1/m) Σ a'_i ⊗ (p_i − e_l)
}

PetscReal SoftmaxProblem::lower_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  train_->stamps.refresh(y_gather_->generation());
  PetscInt n = 0;
  const double loss = loss_pass(*train_, batch, yf, nullptr, &n);
  // 1/2 Σ_j λ_j ||W_j||² + μ_b/2 ||b||² over this rank's rows of [W; bᵀ]
  const PetscScalar* lam = regularisers(x);
  const PetscInt lo = classes_ * row_begin_, nl = classes_ * (row_end_ - row_begin_);
  double reg = 0;
  for (PetscInt l = 0; l < nl; ++l) reg += weight_of(lam, l) * yf[lo + l] * yf[lo + l];
  PetscScalar sums[2] = {loss, 0.5 * reg};
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  return sums[0] / static_cast<PetscReal>(n) + sums[1];
}

void SoftmaxProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) {
  check_layouts(x, y);
  const PetscScalar* yf = y_gather_->gather(y);
  train_->stamps.refresh(y_gather_->generation());
  PetscScalar* acc = detail::ensure(work_->acc, static_cast<std::size_t>(dy_));
  std::fill(acc, acc + dy_, 0.0);
  PetscInt n = 0;
  loss_pass(*train_, batch, yf, acc, &n);
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(acc, static_cast<std::size_t>(dy_)));
  const PetscScalar* lam = regularisers(x);
  const PetscReal inv = 1.0 / static_cast<PetscReal>(n);
  const PetscInt lo = classes_ * row_begin_;
  petsc::WriteView out(gy);
  for (PetscInt l = 0; l < out.size(); ++l) out[l] = inv * acc[lo + l] + weight_of(lam, l) * yf[lo + l];
}

void SoftmaxProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& /*batch*/, Vec gx) {
  check_layouts(x, y);
  const PetscScalar* lam = regularisers(x);
  const PetscInt K = classes_, jend = std::min(row_end_, n_features_);
  petsc::ReadView yv(y);
  // ∂g/∂x_j = 1/2 λ_j ||W_j||² (scalar: summed over j)
  double total = 0;
  petsc::WriteView out(gx);
  for (PetscInt j = row_begin_; j < jend; ++j) {
    double s = 0;
    for (PetscInt k = 0; k < K; ++k) s += yv[(j - row_begin_) * K + k] * yv[(j - row_begin_) * K + k];
    if (options_.scalar)
      total += s;
    else
      out[j - row_begin_] = 0.5 * lam[j - row_begin_] * s;
  }
  if (options_.scalar) {
    const double lam0 = lam[0];
    total = detail::sum_over_ranks(comm_, total);
    if (out.size() > 0) out[0] = 0.5 * lam0 * total;
  }
}

void SoftmaxProblem::lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) {
  const Vec ws[1] = {w};
  const Vec os[1] = {out};
  lower_hvp_multi_impl(x, y, batch, std::span<const Vec>(ws, 1), std::span<const Vec>(os, 1));
}

void SoftmaxProblem::lower_hvp_multi_impl(
    Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out) {
  check_layouts(x, y);
  BILEVEL_ASSERT(w.size() == out.size());
  const PetscInt m = static_cast<PetscInt>(w.size());
  if (m == 0) return;
  Side& side = *train_;
  const PetscInt K = classes_, nf = n_features_, mK = m * K;
  const PetscScalar* yf = y_gather_->gather(y);
  side.stamps.refresh(y_gather_->generation());
  side.rows.select(side.data, batch);
  const detail::LocalRows& rows = side.rows;
  // Cached p_i valid for every row of the batch? If not, W rides along as an extra block and p_i is
  // recomputed in the same pass (decided per rank: the products are local).
  bool stale = false;
  if (rows.full())
    stale = !side.stamps.all_valid();
  else
    for (PetscInt k = 0; k < rows.count() && !stale; ++k) stale = !side.stamps.valid(rows.row(k));
  const PetscInt wb = stale ? 1 : 0, width = (m + wb) * K;
  const PetscScalar* B = nullptr;
  if (m == 1 && !wb) {
    B = w_gather_->gather(w[0]);
  } else {
    PetscScalar* stack = detail::ensure(work_->stack, static_cast<std::size_t>((nf + 1) * width));
    if (wb)
      for (PetscInt j = 0; j <= nf; ++j)
        for (PetscInt c = 0; c < K; ++c) stack[j * width + c] = yf[j * K + c];
    for (PetscInt q = 0; q < m; ++q) {
      const PetscScalar* v = w_gather_->gather(w[q]);
      for (PetscInt j = 0; j <= nf; ++j)
        for (PetscInt c = 0; c < K; ++c) stack[j * width + (wb + q) * K + c] = v[j * K + c];
    }
    B = stack;
  }
  const std::size_t n_acc = static_cast<std::size_t>((nf + 1) * mK);
  PetscScalar* acc = detail::ensure(work_->acc, n_acc);
  std::fill(acc, acc + n_acc, 0.0);
  detail::row_pass(side.data,
                   side.dense,
                   rows,
                   B,
                   width,
                   wb * K,
                   acc,
                   *work_,
                   [&](PetscInt, PetscInt i, const PetscScalar* z, PetscScalar* s) {
                     PetscScalar* p = side.p.data() + i * K;
                     if (wb) {
                       detail::softmax(z, K, p);
                       side.stamps.mark(i);
                     }
                     for (PetscInt q = 0; q < m; ++q) {
                       const PetscScalar* u = z + (wb + q) * K;
                       PetscScalar* sq = s + (wb + q) * K;
                       double pu = 0;
                       for (PetscInt c = 0; c < K; ++c) pu += p[c] * u[c];
                       for (PetscInt c = 0; c < K; ++c) sq[c] = p[c] * (u[c] - pu);  // s = p ∘ (u − p·u)
                     }
                   });
  if (rows.full()) side.stamps.mark_all();
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(acc, n_acc));
  // out_q = (1/n) Σ a'_i ⊗ s_i + λ_j V_j + μ_b V_b
  const PetscScalar* lam = regularisers(x);
  const PetscReal inv = 1.0 / static_cast<PetscReal>(rows.global_size());
  const PetscInt lo = K * row_begin_;
  for (PetscInt q = 0; q < m; ++q) {
    petsc::ReadView v(w[q]);
    petsc::WriteView o(out[q]);
    for (PetscInt l = 0; l < o.size(); ++l) {
      const PetscInt j = lo + l, feat = j / K, c = j % K;
      o[l] = inv * acc[feat * mK + q * K + c] + weight_of(lam, l) * v[l];
    }
  }
}

void SoftmaxProblem::lower_jvp_impl(Vec x, Vec y, const Batch& /*batch*/, Vec w, Vec out) {
  check_layouts(x, y);
  const PetscScalar* lam = regularisers(x);
  const PetscInt K = classes_, jend = std::min(row_end_, n_features_);
  petsc::ReadView yv(y), wv(w);
  petsc::WriteView o(out);
  // (J w)_j = λ_j W_j·V_j (scalar: Σ_j λ W_j·V_j)
  double total = 0;
  for (PetscInt j = row_begin_; j < jend; ++j) {
    double s = 0;
    for (PetscInt k = 0; k < K; ++k) s += yv[(j - row_begin_) * K + k] * wv[(j - row_begin_) * K + k];
    if (options_.scalar)
      total += s;
    else
      o[j - row_begin_] = lam[j - row_begin_] * s;
  }
  if (options_.scalar) {
    const double lam0 = lam[0];
    total = detail::sum_over_ranks(comm_, total);
    if (o.size() > 0) o[0] = lam0 * total;
  }
}

TestMetrics SoftmaxProblem::evaluate(Side& side, Vec y) {
  const PetscScalar* yf = y_gather_->gather(y);
  side.rows.select(side.data, Batch::all());
  const PetscInt K = classes_;
  PetscScalar* p = detail::ensure(work_->p, static_cast<std::size_t>(K));
  PetscScalar sums[2] = {0, 0};
  detail::row_pass(side.data,
                   side.dense,
                   side.rows,
                   yf,
                   K,
                   0,
                   nullptr,
                   *work_,
                   [&](PetscInt, PetscInt i, const PetscScalar* z, PetscScalar*) {
                     const PetscInt l = side.data.labels[static_cast<std::size_t>(i)];
                     sums[0] += detail::softmax(z, K, p) - z[l];
                     if (std::max_element(z, z + K) - z == l) sums[1] += 1;
                   });
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  TestMetrics m;
  m.loss = sums[0] / static_cast<PetscReal>(side.data.n_rows);
  m.accuracy = sums[1] / static_cast<PetscReal>(side.data.n_rows);
  return m;
}

TestMetrics SoftmaxProblem::evaluate_test(Vec x, Vec y) {
  if (!test_) throw NotImplemented("softmax: no test set was given");
  check_layouts(x, y);
  return evaluate(*test_, y);
}

std::optional<PetscReal> SoftmaxProblem::validation_accuracy(Vec x, Vec y) {
  check_layouts(x, y);
  return evaluate(*validation_, y).accuracy;
}

}  // namespace bilevel
