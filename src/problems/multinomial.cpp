/// \file The private multinomial engine (see multinomial.hpp): data-set preparation, file reading, and the
/// passes shared by hyperclean and softmax.
#include "multinomial.hpp"

#include <dlfcn.h>
#include <zlib.h>

#include <climits>
#include <cstdlib>

#include "bilevel/data/idx.hpp"
#include "bilevel/data/libsvm.hpp"
#include "bilevel/petsc/memory.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel::detail {

void adopt_dense(Dataset& data, std::vector<PetscScalar>& dense) {
  if (data.format != DataFormat::Dense) return;
  const PetscInt m = data.local_rows(), nf = data.n_features;
  dense.resize(static_cast<std::size_t>(m * nf));
  {
    DenseView A(data.local);
    for (PetscInt j = 0; j < nf; ++j)
      for (PetscInt i = 0; i < m; ++i) dense[static_cast<std::size_t>(i * nf + j)] = A.values[i + j * A.lda];
  }
  data.local.reset();
}

bool optimized_blas() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&BLASgemm_), &info) || !info.dli_fname) return false;
  char resolved[PATH_MAX];
  const std::string path =
      realpath(info.dli_fname, resolved) ? std::string(resolved) : std::string(info.dli_fname);
  return path.find("openblas") != std::string::npos || path.find("blis") != std::string::npos ||
         path.find("mkl") != std::string::npos;
}

double density(const Dataset& data) {
  double nz = 0;
  if (data.format == DataFormat::Sparse) {
    MatInfo info;
    BILEVEL_PETSC_CALL(MatGetInfo(data.local, MAT_LOCAL, &info));
    nz = info.nz_used;
  } else {
    DenseView A(data.local);
    for (PetscInt j = 0; j < data.n_features; ++j)
      for (PetscInt i = 0; i < data.local_rows(); ++i) nz += A.values[i + j * A.lda] != 0 ? 1 : 0;
  }
  nz = sum_over_ranks(data.comm, nz);
  const double total =
      static_cast<double>(data.n_rows) * static_cast<double>(std::max<PetscInt>(data.n_features, 1));
  return total > 0 ? nz / total : 0;
}

PetscInt idx_records(MPI_Comm comm, const std::string& path) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  long long count = -1;
  if (rank == 0) {
    if (gzFile f = gzopen(path.c_str(), "rb")) {
      unsigned char header[8];
      if (gzread(f, header, 8) == 8)
        count = (static_cast<long long>(header[4]) << 24) | (header[5] << 16) | (header[6] << 8) | header[7];
      gzclose(f);
    }
  }
  BILEVEL_PETSC_CALL(MPI_Bcast(&count, 1, MPI_LONG_LONG, 0, comm));
  if (count < 0) throw InputError(path + ": cannot read the IDX header");
  return static_cast<PetscInt>(count);
}

std::string idx_labels_for(const std::string& images) {
  std::string labels = images;
  const auto pos = labels.find("images-idx3");
  if (pos == std::string::npos)
    throw InputError(images + ": cannot derive the label file (expected 'images-idx3' in the name)");
  labels.replace(pos, 11, "labels-idx1");
  return labels;
}

PetscInt unify_classes(std::vector<Dataset*> sets) {
  std::vector<double> all;
  PetscInt max_classes = 0;
  for (Dataset* d : sets) {
    all.insert(all.end(), d->class_values.begin(), d->class_values.end());
    max_classes = std::max(max_classes, d->n_classes);
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  if (all.empty()) return max_classes;
  for (Dataset* d : sets) {
    if (d->class_values.empty()) continue;
    std::vector<PetscInt> map(d->class_values.size());
    for (std::size_t c = 0; c < map.size(); ++c)
      map[c] =
          static_cast<PetscInt>(std::lower_bound(all.begin(), all.end(), d->class_values[c]) - all.begin());
    for (PetscInt& l : d->labels) l = map[static_cast<std::size_t>(l)];
    d->class_values = all;
    d->n_classes = static_cast<PetscInt>(all.size());
  }
  return static_cast<PetscInt>(all.size());
}

MultinomialEngine::MultinomialEngine(Dataset train,
                                     Dataset validation,
                                     std::optional<Dataset> test,
                                     const std::string& format,
                                     ModelLayout layout,
                                     const std::string& problem,
                                     std::optional<ModelComm> compress)
    : comm_(train.comm), problem_(problem) {
  std::vector<Dataset*> sets = {&train, &validation};
  if (test) sets.push_back(&*test);
  classes_ = unify_classes(sets);
  if (classes_ < 2) throw InputError(train.source + ": the " + problem + " problem needs at least 2 classes");
  n_features_ = std::max(train.n_features, validation.n_features);
  if (test) n_features_ = std::max(n_features_, test->n_features);
  for (Dataset* d : sets) reconcile_features(*d, n_features_);
  dy_ = (n_features_ + 1) * classes_;

  // Storage: dense when the data are dense enough and the BLAS is an optimised one.
  DataFormat fmt = DataFormat::Sparse;
  if (format == "dense")
    fmt = DataFormat::Dense;
  else if (format == "auto")
    fmt = density(train) > 0.3 && optimized_blas() ? DataFormat::Dense : DataFormat::Sparse;
  for (Dataset* d : sets)
    if (d->format != fmt) convert_format(*d, fmt);

  auto make_side = [this](Dataset&& data, bool caches) {
    auto side = std::make_unique<MultinomialSide>();
    side->data = std::move(data);
    side->caches = caches;
    adopt_dense(side->data, side->dense);  // one copy of the data: ours, row-major
    if (caches) {
      // 1/K: the probabilities at y = 0, and a neutral guess for rows no pass has reached yet (a
      // preconditioner's curvature may read them before a minibatch method has visited every row)
      side->p.assign(static_cast<std::size_t>(side->data.local_rows() * classes_),
                     1.0 / static_cast<double>(classes_));
      side->stamps.resize(side->data.local_rows());
    }
    return side;
  };
  train_ = make_side(std::move(train), true);
  validation_ = make_side(std::move(validation), false);
  if (test) test_ = make_side(std::move(*test), false);

  // Entries: PETSC_DECIDE over the dy entries; Rows: over the nf + 1 rows of [W; bᵀ], K entries each.
  const PetscInt unit = layout == ModelLayout::Rows ? classes_ : 1;
  const auto [begin, end] = ownership_range(comm_, dy_ / unit);
  y_begin_ = unit * begin;
  y_end_ = unit * end;

  // Compressed sparse sides: the columns their rows use, then the bias row (model row n_features).
  petsc::VecHandle layout_vec = create_lower_vec();
  const PetscInt bias_row[1] = {n_features_};
  for (MultinomialSide* side : {train_.get(), validation_.get(), test_.get()}) {
    if (!side) continue;
    side->bias_row = n_features_;
    if (!compress || side->data.format != DataFormat::Sparse) continue;
    side->compressed = true;
    side->cols.setup(
        side->data.local, layout_vec, classes_, std::span<const PetscInt>(bias_row, 1), *compress);
    side->bias_row = side->cols.size() - 1;
  }
}

petsc::VecHandle MultinomialEngine::create_lower_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, y_end_ - y_begin_, dy_, v.out()));
  return v;
}

void MultinomialEngine::check_lower(Vec y) const {
  PetscInt n = 0;
  BILEVEL_PETSC_CALL(VecGetSize(y, &n));
  if (n != dy_)
    throw InputError(problem_ + ": y has size " + std::to_string(n) + ", expected " + std::to_string(dy_));
}

void MultinomialEngine::reset_probabilities() {
  std::fill(train_->p.begin(), train_->p.end(), 1.0 / static_cast<double>(classes_));
  train_->stamps.invalidate();
}

const PetscScalar* MultinomialEngine::gather_model(Vec y) {
  const PetscScalar* yf = y_gather_.gather(y);
  train_->stamps.refresh(y_gather_.generation());
  return yf;
}

const PetscScalar* MultinomialEngine::gather_direction(Vec w) {
  return w_gather_.gather(w);
}

const PetscScalar* MultinomialEngine::model(MultinomialSide& side, Vec y) {
  if (!side.compressed) return side.caches ? gather_model(y) : y_gather_.gather(y);
  const PetscScalar* ym = side.model.get(side.cols, y);
  if (side.caches) side.stamps.refresh(side.model.generation());
  return ym;
}

const PetscScalar* MultinomialEngine::direction(Vec w) {
  MultinomialSide& side = *train_;
  if (!side.compressed) return w_gather_.gather(w);
  PetscScalar* d = ensure(work_.dir, static_cast<std::size_t>(side.cols.entries()));
  side.cols.gather(w, d);
  return d;
}

PetscInt MultinomialEngine::gradient(MultinomialSide& side,
                                     Vec y,
                                     const Batch& batch,
                                     const PetscReal* weights,
                                     std::span<const PetscScalar> ridge,
                                     Vec out) {
  PetscInt n = 0;
  const PetscScalar* ym = model(side, y);
  if (!side.compressed) {
    const PetscScalar* acc = sums(side, batch, ym, weights, true, false, &n);
    petsc::ReadView yl(y);
    write_local(out, acc, 1, 0, 1.0 / static_cast<PetscReal>(n), ridge, yl.data());
    return n;
  }
  const auto entries = static_cast<std::size_t>(side.cols.entries());
  PetscScalar* acc = ensure(work_.acc, entries);
  std::fill(acc, acc + entries, 0.0);
  loss_pass(side, batch, ym, weights, acc, &n);
  BILEVEL_PETSC_CALL(VecSet(out, 0.0));
  side.cols.add(acc, out);  // Σ over ranks onto the owners
  const PetscReal scale = 1.0 / static_cast<PetscReal>(n);
  petsc::WriteView o(out);
  if (ridge.empty()) {
    for (PetscInt l = 0; l < o.size(); ++l) o[l] *= scale;
  } else {
    petsc::ReadView yl(y);
    for (PetscInt l = 0; l < o.size(); ++l) o[l] = scale * o[l] + ridge[static_cast<std::size_t>(l)] * yl[l];
  }
  return n;
}

double MultinomialEngine::loss_pass(MultinomialSide& side,
                                    const Batch& batch,
                                    const PetscScalar* y_full,
                                    const PetscReal* weights,
                                    PetscScalar* grad,
                                    PetscInt* count) {
  side.rows.select(side.data, batch);
  *count = side.rows.global_size();
  const PetscInt K = classes_;
  const PetscInt* labels = side.data.labels.data();
  PetscScalar* ptmp = ensure(work_.p, static_cast<std::size_t>(K));
  double loss = 0;
  row_pass(
      side.data,
      side.dense,
      side.rows,
      y_full,
      K,
      0,
      grad,
      work_,
      [&](PetscInt, PetscInt i, const PetscScalar* z, PetscScalar* s) {
        PetscScalar* p = side.caches ? side.p.data() + i * K : ptmp;
        const double lse = softmax(z, K, p);  // p_i = softmax(z_i)
        const PetscInt l = labels[i];
        const double w = weights ? weights[i] : 1.0;
        loss += w * (lse - z[l]);  // ω_i CE_i
        if (side.caches) side.stamps.mark(i);
        if (grad) {
          for (PetscInt c = 0; c < K; ++c) s[c] = w * p[c];  // s = ω_i (p_i − e_l)
          s[l] -= w;
        }
      },
      -1,
      side.bias_row);
  if (side.caches && side.rows.full()) side.stamps.mark_all();
  return loss;
}

const PetscScalar* MultinomialEngine::sums(MultinomialSide& side,
                                           const Batch& batch,
                                           const PetscScalar* y_full,
                                           const PetscReal* weights,
                                           bool gradient,
                                           bool value,
                                           PetscInt* count) {
  BILEVEL_ASSERT(!(gradient && side.compressed));
  const std::size_t n_acc = static_cast<std::size_t>(dy_) + 1;
  PetscScalar* acc = ensure(work_.acc, n_acc);
  if (gradient) std::fill(acc, acc + n_acc, 0.0);
  acc[dy_] = loss_pass(side, batch, y_full, weights, gradient ? acc : nullptr, count);
  if (gradient)
    sum_over_ranks(comm_, std::span<PetscScalar>(acc, value ? n_acc : n_acc - 1));
  else if (value)
    acc[dy_] = sum_over_ranks(comm_, acc[dy_]);
  return acc;
}

PetscInt MultinomialEngine::select_train(const Batch& batch) {
  train_->rows.select(train_->data, batch);
  return train_->rows.global_size();
}

bool MultinomialEngine::probabilities_stale() const {
  const LocalRows& rows = train_->rows;
  if (rows.full()) return !train_->stamps.all_valid();
  for (PetscInt k = 0; k < rows.count(); ++k)
    if (!train_->stamps.valid(rows.row(k))) return true;
  return false;
}

const PetscScalar* MultinomialEngine::stack(const PetscScalar* y_full,
                                            std::span<const Vec> w,
                                            bool with_model) {
  const auto m = static_cast<PetscInt>(w.size());
  if (m == 1 && !with_model) return direction(w[0]);
  const PetscInt K = classes_, np = train_->positions(), wb = with_model ? 1 : 0, width = (m + wb) * K;
  PetscScalar* B = ensure(work_.stack, static_cast<std::size_t>(np * width));
  if (wb)
    for (PetscInt j = 0; j < np; ++j)
      for (PetscInt c = 0; c < K; ++c) B[j * width + c] = y_full[j * K + c];
  for (PetscInt q = 0; q < m; ++q) {
    const PetscScalar* v = direction(w[static_cast<std::size_t>(q)]);
    for (PetscInt j = 0; j < np; ++j)
      for (PetscInt c = 0; c < K; ++c) B[j * width + (wb + q) * K + c] = v[j * K + c];
  }
  return B;
}

const PetscScalar* MultinomialEngine::hvp_sums(const Batch& batch,
                                               const PetscScalar* y_full,
                                               const PetscReal* weights,
                                               std::span<const Vec> w,
                                               PetscInt* count) {
  const auto m = static_cast<PetscInt>(w.size());
  const PetscInt K = classes_;
  const std::size_t n_acc = static_cast<std::size_t>(train_->positions() * m * K);
  PetscScalar* acc = ensure(work_.acc, n_acc);
  std::fill(acc, acc + n_acc, 0.0);
  *count = select_train(batch);
  direction_pass(y_full, w, acc, [&](PetscInt i, const PetscScalar* p, const PetscScalar* u, PetscScalar* s) {
    const double om = weights ? weights[i] : 1.0;
    for (PetscInt q = 0; q < m; ++q) {
      const PetscScalar* uq = u + q * K;
      PetscScalar* sq = s + q * K;
      double pu = 0;
      for (PetscInt c = 0; c < K; ++c) pu += p[c] * uq[c];
      for (PetscInt c = 0; c < K; ++c) sq[c] = om * p[c] * (uq[c] - pu);  // s = ω_i p ∘ (u − p·u)
    }
  });
  if (!train_->compressed) sum_over_ranks(comm_, std::span<PetscScalar>(acc, n_acc));
  return acc;
}

PetscReal MultinomialEngine::upper_value(Vec y, const Batch& batch) {
  PetscInt n = 0;
  const PetscScalar* acc = sums(*validation_, batch, model(*validation_, y), nullptr, false, true, &n);
  return acc[dy_] / static_cast<PetscReal>(n);  // f = (1/m) Σ CE_i
}

void MultinomialEngine::upper_gradient(Vec y, const Batch& batch, Vec gy) {
  gradient(*validation_, y, batch, nullptr, {}, gy);  // (1/m) Σ a'_i ⊗ (p_i − e_l)
}

void MultinomialEngine::hvp(Vec y,
                            const Batch& batch,
                            const PetscReal* weights,
                            std::span<const Vec> w,
                            std::span<const Vec> out,
                            std::span<const PetscScalar> ridge) {
  BILEVEL_ASSERT(w.size() == out.size());
  const auto m = static_cast<PetscInt>(w.size());
  if (m == 0) return;
  PetscInt n = 0;
  const PetscScalar* acc = hvp_sums(batch, model(*train_, y), weights, w, &n);
  const PetscReal scale = 1.0 / static_cast<PetscReal>(n);
  if (!train_->compressed) {
    for (PetscInt q = 0; q < m; ++q) {  // out_q = (1/n) Σ ω_i a'_i ⊗ s_iq + ridge ∘ w_q
      petsc::ReadView v(w[static_cast<std::size_t>(q)]);
      write_local(out[static_cast<std::size_t>(q)], acc, m, q, scale, ridge, v.data());
    }
    return;
  }
  const PetscInt K = classes_, np = train_->positions(), mK = m * K;
  for (PetscInt q = 0; q < m; ++q) {
    const PetscScalar* block = acc;
    if (m > 1) {  // direction q's block of the side-by-side sums
      PetscScalar* one = ensure(work_.one, static_cast<std::size_t>(np * K));
      for (PetscInt j = 0; j < np; ++j) std::copy_n(acc + j * mK + q * K, K, one + j * K);
      block = one;
    }
    Vec o_q = out[static_cast<std::size_t>(q)];
    BILEVEL_PETSC_CALL(VecSet(o_q, 0.0));
    train_->cols.add(block, o_q);  // Σ over ranks onto the owners
    petsc::ReadView v(w[static_cast<std::size_t>(q)]);
    petsc::WriteView o(o_q);
    for (PetscInt l = 0; l < o.size(); ++l)
      o[l] = ridge.empty() ? scale * o[l] : scale * o[l] + ridge[static_cast<std::size_t>(l)] * v[l];
  }
}

void MultinomialEngine::write_local(Vec out,
                                    const PetscScalar* acc,
                                    PetscInt m,
                                    PetscInt q,
                                    PetscReal scale,
                                    std::span<const PetscScalar> ridge,
                                    const PetscScalar* src) const {
  const PetscInt K = classes_, mK = m * K;
  petsc::WriteView o(out);
  for (PetscInt l = 0; l < o.size(); ++l) {
    const PetscInt e = y_begin_ + l, row = e / K, c = e % K;
    const PetscScalar sum = acc[row * mK + q * K + c];
    o[l] = ridge.empty() ? scale * sum : scale * sum + ridge[static_cast<std::size_t>(l)] * src[l];
  }
}

TestMetrics MultinomialEngine::evaluate(MultinomialSide& side, Vec y) {
  const PetscScalar* yf = model(side, y);
  side.rows.select(side.data, Batch::all());
  const PetscInt K = classes_;
  PetscScalar* p = ensure(work_.p, static_cast<std::size_t>(K));
  PetscScalar sums[2] = {0, 0};
  row_pass(
      side.data,
      side.dense,
      side.rows,
      yf,
      K,
      0,
      nullptr,
      work_,
      [&](PetscInt, PetscInt i, const PetscScalar* z, PetscScalar*) {
        const PetscInt l = side.data.labels[static_cast<std::size_t>(i)];
        sums[0] += softmax(z, K, p) - z[l];
        if (std::max_element(z, z + K) - z == l) sums[1] += 1;
      },
      -1,
      side.bias_row);
  sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  TestMetrics m;
  m.loss = sums[0] / static_cast<PetscReal>(side.data.n_rows);
  m.accuracy = sums[1] / static_cast<PetscReal>(side.data.n_rows);
  return m;
}

std::int64_t MultinomialEngine::local_data_bytes() const {
  std::int64_t bytes = 0;
  for (const MultinomialSide* s : {train_.get(), validation_.get(), test_.get()})
    if (s)
      bytes += petsc::matrix_storage_bytes(s->data.local) +
               static_cast<std::int64_t>(s->dense.size() * sizeof(PetscScalar) +
                                         s->data.labels.size() * sizeof(PetscInt));
  return bytes;
}

}  // namespace bilevel::detail
