/// \file `hyper_representation`: the linear hyper-representation problem of
/// include/bilevel/problems/hyper_representation.hpp (algorithms.md §5.4). Each rank keeps its rows of the
/// two sets; H and w are gathered to every rank (p·d + d numbers), the local rows give p-sized sums that
/// one reduction completes, and the p x d outputs are written on the owners of their entries.
#include "bilevel/problems/hyper_representation.hpp"

#include <cmath>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "data_parallel.hpp"
#include "small_dense.hpp"

namespace bilevel {
namespace {

// Streams of the counter-based generator (problems use streams >= 100).
constexpr std::uint64_t kTrainRows = 141, kTrainNoise = 142, kValRows = 143, kValNoise = 144, kTruthH = 145,
                        kTruthW = 146, kStartH = 147;

}  // namespace

void HyperRepresentationOptions::validate() const {
  const std::string p = "option -bilevel_hyper_representation_";
  if (features < 1) throw InputError(p + "features must be >= 1");
  if (width < 1) throw InputError(p + "width must be >= 1");
  if (n_train < 1) throw InputError(p + "n_train must be >= 1");
  if (n_validation < 1) throw InputError(p + "n_validation must be >= 1");
  if (!(noise >= 0)) throw InputError(p + "noise must be >= 0");
  if (!(ridge > 0)) throw InputError(p + "ridge must be > 0");
}

HyperRepresentationOptions HyperRepresentationOptions::from(petsc::OptionsReader& opts, std::uint64_t seed) {
  HyperRepresentationOptions o;
  o.features = opts.integer("features", o.features, "p, input dimension (H is p x d)", 1);
  o.width = opts.integer("width", o.width, "d, width of the representation (dim y)", 1);
  o.n_train = opts.integer("n_train", o.n_train, "training rows (lower level)", 1);
  o.n_validation = opts.integer("n_validation", o.n_validation, "validation rows (upper level)", 1);
  o.noise = opts.real("noise", o.noise, "noise sigma of the targets", 0.0);
  o.ridge = opts.real("ridge", o.ridge, "lambda of the ridge head lambda/2 |w|^2", 0.0);
  o.seed = seed;
  o.validate();
  return o;
}

struct HyperRepresentationProblem::Impl {
  PetscInt p = 0, d = 0;
  double ridge = 0;
  detail::LocalSamples train, val;
  std::vector<double> xg, tg, xf, tf;            // local rows (row-major, p columns) and targets
  std::vector<double> gram_g, b_g, gram_f, b_f;  // replicated X ᵀX/n (p x p) and Xᵀt/n (p)
  double c_f = 0;                                // tᵀt/(2m) of the validation set
  detail::Gatherer gx, gy, gv;
  std::vector<double> hw, hv, sums, out;

  /// out = H w (p) for H row-major p x d.
  void h_times(const double* h, const double* w, std::vector<double>& o) const {
    o.assign(static_cast<std::size_t>(p), 0.0);
    for (PetscInt a = 0; a < p; ++a) {
      double s = 0;
      for (PetscInt b = 0; b < d; ++b) s += h[a * d + b] * w[b];
      o[a] = s;
    }
  }
  /// o = Hᵀ a (d).
  void ht_times(const double* h, const double* a, std::vector<double>& o) const {
    o.assign(static_cast<std::size_t>(d), 0.0);
    for (PetscInt r = 0; r < p; ++r)
      for (PetscInt b = 0; b < d; ++b) o[b] += h[r * d + b] * a[r];
  }
  static double dot(const double* a, const double* b, PetscInt n) {
    double s = 0;
    for (PetscInt k = 0; k < n; ++k) s += a[k] * b[k];
    return s;
  }
  /// sums[0..p) = Σ_{i ∈ B} r_i a_i with r_i = a_iᵀ(Hw) − t_i and, when hv is given, sums[p..2p) =
  /// Σ (a_iᵀ Hv) a_i; both over the ranks. Returns Σ r_i² (summed over ranks) and sets |B|.
  double batch_sums(MPI_Comm comm,
                    detail::LocalSamples& s,
                    const std::vector<double>& rows,
                    const std::vector<double>& t,
                    const double* hv_or_null,
                    PetscInt* global) {
    const int parts = hv_or_null ? 2 : 1;
    sums.assign(static_cast<std::size_t>(parts * p + 1), 0.0);
    for (PetscInt k = 0; k < s.count(); ++k) {
      const PetscInt i = s.local(k);
      const double* a = rows.data() + static_cast<std::size_t>(i * p);
      const double r = dot(a, hw.data(), p) - t[i];
      const double q = hv_or_null ? dot(a, hv_or_null, p) : 0.0;
      for (PetscInt j = 0; j < p; ++j) sums[j] += r * a[j];
      if (hv_or_null)
        for (PetscInt j = 0; j < p; ++j) sums[p + j] += q * a[j];
      sums[parts * p] += r * r;
    }
    detail::sum_over_ranks(comm, sums);
    *global = s.global_size();
    return sums[parts * p];
  }
  /// out's owned entries (α, β) <- (a_α w_β + b_α v_β) · scale (b may be null).
  void write_outer(Vec o, const double* a, const double* w, const double* b, const double* v, double scale) {
    PetscInt begin = 0, end = 0;
    BILEVEL_PETSC_CALL(VecGetOwnershipRange(o, &begin, &end));
    petsc::WriteView ov(o);
    for (PetscInt k = begin; k < end; ++k) {
      const PetscInt al = k / d, be = k % d;
      ov[k - begin] = scale * (a[al] * w[be] + (b ? b[al] * v[be] : 0.0));
    }
  }
  /// A = HᵀG_g H + λI (d x d, row-major).
  std::vector<double> lower_hessian(const double* h) const {
    std::vector<double> gh(static_cast<std::size_t>(p * d), 0.0), a(static_cast<std::size_t>(d * d), 0.0);
    for (PetscInt r = 0; r < p; ++r)
      for (PetscInt k = 0; k < p; ++k) {
        const double g = gram_g[r * p + k];
        for (PetscInt b = 0; b < d; ++b) gh[r * d + b] += g * h[k * d + b];
      }
    for (PetscInt r = 0; r < p; ++r)
      for (PetscInt b1 = 0; b1 < d; ++b1) {
        const double hr = h[r * d + b1];
        for (PetscInt b2 = 0; b2 < d; ++b2) a[b1 * d + b2] += hr * gh[r * d + b2];
      }
    for (PetscInt b = 0; b < d; ++b) a[b * d + b] += ridge;
    return a;
  }
  /// w*(H) = (HᵀG_g H + λI)⁻¹ Hᵀb_g and the factor of A = HᵀG_g H + λI into chol.
  std::vector<double> lower_solution(const double* h, detail::SmallCholesky& chol) const {
    if (!chol.factor(lower_hessian(h), d))
      throw Error("hyper_representation: H^T G H + ridge I is not positive definite");
    std::vector<double> w;
    ht_times(h, b_g.data(), w);
    chol.solve(w.data());
    return w;
  }
};

HyperRepresentationProblem::HyperRepresentationProblem(MPI_Comm comm,
                                                       const HyperRepresentationOptions& options)
    : comm_(comm), options_(options), impl_(std::make_shared<Impl>()) {
  options_.validate();
  Impl& m = *impl_;
  m.p = options_.features;
  m.d = options_.width;
  m.ridge = options_.ridge;
  const PetscInt p = m.p, d = m.d;
  const std::uint64_t seed = options_.seed;
  // ground truth u₀ = H₀ w₀ (p), replicated
  std::vector<double> u0(static_cast<std::size_t>(p), 0.0);
  for (PetscInt a = 0; a < p; ++a)
    for (PetscInt b = 0; b < d; ++b)
      u0[a] += counter_normal(seed, kTruthH, static_cast<std::uint64_t>(a * d + b)) / std::sqrt(double(d)) *
               counter_normal(seed, kTruthW, static_cast<std::uint64_t>(b));
  auto make = [&](PetscInt n,
                  std::uint64_t rows_stream,
                  std::uint64_t noise_stream,
                  detail::LocalSamples& s,
                  std::vector<double>& rows,
                  std::vector<double>& t,
                  std::vector<double>& gram,
                  std::vector<double>& b) {
    const auto [begin, end] = detail::ownership_range(comm_, n);
    s = detail::LocalSamples(begin, end, n);
    rows.assign(static_cast<std::size_t>((end - begin) * p), 0.0);
    t.assign(static_cast<std::size_t>(end - begin), 0.0);
    gram.assign(static_cast<std::size_t>(p * p + p + 1), 0.0);  // then split into gram, b and tᵀt
    for (PetscInt i = begin; i < end; ++i) {
      double* a = rows.data() + static_cast<std::size_t>((i - begin) * p);
      for (PetscInt j = 0; j < p; ++j)
        a[j] =
            counter_normal(seed, rows_stream, static_cast<std::uint64_t>(i * p + j)) / std::sqrt(double(p));
      const double ti = Impl::dot(a, u0.data(), p) +
                        options_.noise * counter_normal(seed, noise_stream, static_cast<std::uint64_t>(i));
      t[i - begin] = ti;
      for (PetscInt r = 0; r < p; ++r) {
        for (PetscInt k = 0; k < p; ++k) gram[r * p + k] += a[r] * a[k];
        gram[p * p + r] += a[r] * ti;
      }
      gram[p * p + p] += ti * ti;
    }
    detail::sum_over_ranks(comm_, gram);
    for (auto& v : gram) v /= static_cast<double>(n);
    b.assign(gram.begin() + p * p, gram.begin() + p * p + p);
    const double tt = gram[p * p + p];
    gram.resize(static_cast<std::size_t>(p * p));
    return tt;
  };
  make(options_.n_train, kTrainRows, kTrainNoise, m.train, m.xg, m.tg, m.gram_g, m.b_g);
  m.c_f = 0.5 * make(options_.n_validation, kValRows, kValNoise, m.val, m.xf, m.tf, m.gram_f, m.b_f);
}

petsc::VecHandle HyperRepresentationProblem::create_upper_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, options_.features * options_.width, v.out()));
  return v;
}

petsc::VecHandle HyperRepresentationProblem::create_lower_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, options_.width, v.out()));
  return v;
}

Capability HyperRepresentationProblem::capabilities() const {
  return Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX | Capability::Stochastic;
}

ProblemHints HyperRepresentationProblem::hints() const {
  ProblemHints h;
  h.lower_strong_convexity = options_.ridge;
  h.upper_stepper = UpperStepperType::Sgd;
  h.upper_step = 0.5;
  return h;
}

void HyperRepresentationProblem::initial_point(Vec x, Vec y) {
  PetscInt begin = 0, end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(x, &begin, &end));
  {
    petsc::WriteView a(x);
    const double s = 1.0 / std::sqrt(static_cast<double>(options_.width));
    for (PetscInt k = begin; k < end; ++k)
      a[k - begin] = s * counter_normal(options_.seed, kStartH, static_cast<std::uint64_t>(k));
  }
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

std::shared_ptr<BilevelProblem> HyperRepresentationProblem::clone_on(MPI_Comm comm) const {
  return std::make_shared<HyperRepresentationProblem>(comm, options_);
}

std::optional<PetscReal> HyperRepresentationProblem::lower_lipschitz_bound(Vec x) {
  return detail::symmetric_eigen_range(impl_->lower_hessian(impl_->gx.gather(x)), impl_->d).second;
}

PetscReal HyperRepresentationProblem::lower_value_impl(Vec x, Vec y, const Batch& batch) {
  Impl& m = *impl_;
  const double *h = m.gx.gather(x), *w = m.gy.gather(y);
  m.h_times(h, w, m.hw);
  m.train.select(batch, "hyper_representation training rows");
  PetscInt n = 0;
  const double rr = m.batch_sums(comm_, m.train, m.xg, m.tg, nullptr, &n);
  return 0.5 * rr / static_cast<double>(n) + 0.5 * m.ridge * Impl::dot(w, w, m.d);
}

void HyperRepresentationProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) {
  Impl& m = *impl_;
  const double *h = m.gx.gather(x), *w = m.gy.gather(y);
  m.h_times(h, w, m.hw);
  m.train.select(batch, "hyper_representation training rows");
  PetscInt n = 0;
  m.batch_sums(comm_, m.train, m.xg, m.tg, nullptr, &n);
  m.ht_times(h, m.sums.data(), m.out);
  for (PetscInt b = 0; b < m.d; ++b) m.out[b] = m.out[b] / static_cast<double>(n) + m.ridge * w[b];
  detail::write_owned(gy, m.out.data());  // ∇_w g = Hᵀ(Σ r_i a_i)/|B| + λ w
}

void HyperRepresentationProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) {
  Impl& m = *impl_;
  const double *h = m.gx.gather(x), *w = m.gy.gather(y);
  m.h_times(h, w, m.hw);
  m.train.select(batch, "hyper_representation training rows");
  PetscInt n = 0;
  m.batch_sums(comm_, m.train, m.xg, m.tg, nullptr, &n);
  m.write_outer(gx, m.sums.data(), w, nullptr, nullptr, 1.0 / static_cast<double>(n));  // (Σ r_i a_i) wᵀ/|B|
}

void HyperRepresentationProblem::lower_hvp_impl(Vec x, Vec, const Batch& batch, Vec v, Vec out) {
  Impl& m = *impl_;
  const double *h = m.gx.gather(x), *va = m.gv.gather(v);
  m.h_times(h, va, m.hw);  // the "residual" of the HVP is a_iᵀHv with no target
  m.train.select(batch, "hyper_representation training rows");
  double s = 0;
  std::vector<double>& acc = m.sums;
  acc.assign(static_cast<std::size_t>(m.p), 0.0);
  for (PetscInt k = 0; k < m.train.count(); ++k) {
    const double* a = m.xg.data() + static_cast<std::size_t>(m.train.local(k) * m.p);
    s = Impl::dot(a, m.hw.data(), m.p);
    for (PetscInt j = 0; j < m.p; ++j) acc[j] += s * a[j];
  }
  detail::sum_over_ranks(comm_, acc);
  m.ht_times(h, acc.data(), m.out);
  const double inv = 1.0 / static_cast<double>(m.train.global_size());
  for (PetscInt b = 0; b < m.d; ++b) m.out[b] = m.out[b] * inv + m.ridge * va[b];
  detail::write_owned(out, m.out.data());  // Hᵀ(Σ (a_iᵀHv) a_i)/|B| + λ v
}

void HyperRepresentationProblem::lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec v, Vec out) {
  Impl& m = *impl_;
  const double *h = m.gx.gather(x), *w = m.gy.gather(y), *va = m.gv.gather(v);
  m.h_times(h, w, m.hw);
  m.h_times(h, va, m.hv);
  m.train.select(batch, "hyper_representation training rows");
  PetscInt n = 0;
  m.batch_sums(comm_, m.train, m.xg, m.tg, m.hv.data(), &n);
  // J v = ((Σ (a_iᵀHv) a_i) wᵀ + (Σ r_i a_i) vᵀ)/|B|
  m.write_outer(out, m.sums.data() + m.p, w, m.sums.data(), va, 1.0 / static_cast<double>(n));
}

PetscReal HyperRepresentationProblem::upper_value_impl(Vec x, Vec y, const Batch& batch) {
  Impl& m = *impl_;
  m.h_times(m.gx.gather(x), m.gy.gather(y), m.hw);
  m.val.select(batch, "hyper_representation validation rows");
  PetscInt n = 0;
  return 0.5 * m.batch_sums(comm_, m.val, m.xf, m.tf, nullptr, &n) / static_cast<double>(n);
}

void HyperRepresentationProblem::upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  Impl& m = *impl_;
  const double *h = m.gx.gather(x), *w = m.gy.gather(y);
  m.h_times(h, w, m.hw);
  m.val.select(batch, "hyper_representation validation rows");
  PetscInt n = 0;
  m.batch_sums(comm_, m.val, m.xf, m.tf, nullptr, &n);
  const double inv = 1.0 / static_cast<double>(n);
  if (gx) m.write_outer(gx, m.sums.data(), w, nullptr, nullptr, inv);  // ∇_H f = (Σ r_j a_j) wᵀ/|B|
  if (gy) {
    m.ht_times(h, m.sums.data(), m.out);
    for (auto& o : m.out) o *= inv;
    detail::write_owned(gy, m.out.data());  // ∇_w f = Hᵀ(Σ r_j a_j)/|B|
  }
}

void HyperRepresentationProblem::exact_lower_solution(Vec x, Vec y_star) {
  detail::SmallCholesky chol;
  const std::vector<double> w = impl_->lower_solution(impl_->gx.gather(x), chol);
  detail::write_owned(y_star, w.data());
}

PetscReal HyperRepresentationProblem::exact_upper_objective(Vec x) {
  Impl& m = *impl_;
  detail::SmallCholesky chol;
  const double* h = m.gx.gather(x);
  const std::vector<double> w = m.lower_solution(h, chol);
  m.h_times(h, w.data(), m.hw);  // F = 1/2 (Hw)ᵀG_f(Hw) − b_fᵀHw + tᵀt/(2m)
  double quad = 0;
  for (PetscInt a = 0; a < m.p; ++a) quad += m.hw[a] * Impl::dot(m.gram_f.data() + a * m.p, m.hw.data(), m.p);
  return 0.5 * quad - Impl::dot(m.b_f.data(), m.hw.data(), m.p) + m.c_f;
}

void HyperRepresentationProblem::exact_hypergradient(Vec x, Vec grad) {
  Impl& m = *impl_;
  detail::SmallCholesky chol;
  const double* h = m.gx.gather(x);
  const std::vector<double> w = m.lower_solution(h, chol);
  const PetscInt p = m.p;
  m.h_times(h, w.data(), m.hw);
  std::vector<double> rf(static_cast<std::size_t>(p)), rg(static_cast<std::size_t>(p)),
      gv(static_cast<std::size_t>(p));
  for (PetscInt a = 0; a < p; ++a) {  // G_f Hw − b_f and G_g Hw − b_g
    rf[a] = Impl::dot(m.gram_f.data() + a * p, m.hw.data(), p) - m.b_f[a];
    rg[a] = Impl::dot(m.gram_g.data() + a * p, m.hw.data(), p) - m.b_g[a];
  }
  std::vector<double> v;
  m.ht_times(h, rf.data(), v);  // ∇_w f = Hᵀ(G_f Hw − b_f)
  chol.solve(v.data());         // v* = A⁻¹ ∇_w f
  m.h_times(h, v.data(), m.hv);
  for (PetscInt a = 0; a < p; ++a) gv[a] = -Impl::dot(m.gram_g.data() + a * p, m.hv.data(), p);
  for (auto& r : rg) r = -r;
  // ∇F = (G_f Hw − b_f) wᵀ − (G_g H v*) wᵀ − (G_g Hw − b_g) v*ᵀ
  for (PetscInt a = 0; a < p; ++a) gv[a] += rf[a];
  m.write_outer(grad, gv.data(), w.data(), rg.data(), v.data(), 1.0);
}

}  // namespace bilevel
