/// \file `finite_sum_quadratic`: the sample average quadratic of
/// include/bilevel/problems/finite_sum_quadratic.hpp (algorithms.md §5.1). A sample's residual is ρ_i = r_iᵀu
/// with u = (y, x, 1) and r_i = (z_i, w_i, −c_i); on a batch B every gradient is (1/|B|) Σ_{i∈B} ρ_i r_i
/// restricted to y or x, the HVP (1/|B|) Σ (z_iᵀv) z_i + λ_g v, the JVP J v = ∇_x <∇_y g, v> = (1/|B|) Σ
/// (z_iᵀv) w_i.
#include "bilevel/problems/finite_sum_quadratic.hpp"

#include <cmath>
#include <cstdio>
#include <string>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "data_parallel.hpp"
#include "small_dense.hpp"

namespace bilevel {
namespace {

// Streams of the counter-based generator (problems use streams >= 100).
constexpr std::uint64_t kXiLower = 111, kCLower = 112, kXiUpper = 113, kEUpper = 114, kReflect = 115,
                        kCrossUpper = 116;

/// x in %g form ("1e-17", not to_string's "0.000000").
std::string general(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

/// logspace(lo, hi, k)_i = lo (hi/lo)^{i/(k−1)}.
double logspace(double lo, double hi, PetscInt i, PetscInt k) {
  return k > 1 ? lo * std::pow(hi / lo, static_cast<double>(i) / static_cast<double>(k - 1)) : hi;
}

}  // namespace

void FiniteSumQuadraticOptions::validate() const {
  const std::string p = "option -bilevel_finite_sum_quadratic_";
  if (dim_lower < 1) throw InputError(p + "dim_lower must be >= 1");
  if (dim_upper < 1) throw InputError(p + "dim_upper must be >= 1");
  if (n_lower < 1) throw InputError(p + "n_lower must be >= 1");
  if (n_upper < 1) throw InputError(p + "n_upper must be >= 1");
  if (!(mu > 0)) throw InputError(p + "mu must be > 0");
  if (!(lipschitz >= mu)) throw InputError(p + "lipschitz must be >= mu");
  if (!(cross > 0)) throw InputError(p + "cross must be > 0");
  if (!(lower_reg >= 0)) throw InputError(p + "lower_reg must be >= 0");
  if (!(upper_reg >= 0)) throw InputError(p + "upper_reg must be >= 0");
}

FiniteSumQuadraticOptions FiniteSumQuadraticOptions::from(petsc::OptionsReader& opts, std::uint64_t seed) {
  FiniteSumQuadraticOptions o;
  o.dim_lower = opts.integer("dim_lower", o.dim_lower, "dimension of y", 1);
  o.dim_upper = opts.integer("dim_upper", o.dim_upper, "dimension of x", 1);
  o.n_lower = opts.integer("n_lower", o.n_lower, "samples of the lower objective g", 1);
  o.n_upper = opts.integer("n_upper", o.n_upper, "samples of the upper objective f", 1);
  o.mu = opts.real("mu", o.mu, "smallest population eigenvalue of the lower Hessian", 0.0);
  o.lipschitz =
      opts.real("lipschitz", o.lipschitz, "largest population eigenvalue of the lower Hessian", 0.0);
  o.cross = opts.real("cross", o.cross, "largest variance of the cross rows w_i (L_cross)", 0.0);
  o.lower_reg = opts.real("lower_reg", o.lower_reg, "ridge lambda_g/2 |y|^2 in every lower sample", 0.0);
  o.upper_reg = opts.real("upper_reg", o.upper_reg, "ridge lambda_f/2 |x|^2 in every upper sample", 0.0);
  o.seed = seed;
  o.validate();
  return o;
}

struct FiniteSumQuadraticProblem::Impl {
  PetscInt dy = 0, dx = 0, d = 0;  // d = dy + dx + 1, the length of a row r_i
  detail::LocalSamples lower, upper;
  std::vector<double> lower_rows, upper_rows;  // local samples' r_i, row-major
  std::vector<double> mg, mf;                  // replicated second moments, d x d
  detail::SmallCholesky h;                     // H = M_g,yy + λ_g I
  std::vector<double> x_star;
  std::optional<double> f_star;
  detail::Gatherer gx, gy, gw;
  std::vector<double> u, acc;

  /// u = (y, x, 1) from gathered x and y.
  void point(const double* x, const double* y) {
    u.resize(static_cast<std::size_t>(d));
    std::copy(y, y + dy, u.begin());
    std::copy(x, x + dx, u.begin() + dy);
    u[static_cast<std::size_t>(d - 1)] = 1.0;
  }
  static double dot(const double* a, const double* b, PetscInt n) {
    double s = 0;
    for (PetscInt k = 0; k < n; ++k) s += a[k] * b[k];
    return s;
  }
  /// acc = Σ_{i ∈ batch, local} coef_i r_i (all d entries), summed over ranks; returns |B|.
  template <typename Coef>
  PetscInt accumulate(MPI_Comm comm, detail::LocalSamples& s, const std::vector<double>& rows, Coef coef) {
    acc.assign(static_cast<std::size_t>(d), 0.0);
    for (PetscInt k = 0; k < s.count(); ++k) {
      const double* r = rows.data() + static_cast<std::size_t>(s.local(k) * d);
      const double c = coef(r);
      for (PetscInt j = 0; j < d; ++j) acc[static_cast<std::size_t>(j)] += c * r[j];
    }
    detail::sum_over_ranks(comm, acc);
    return s.global_size();
  }
  /// (1/|B|) Σ 1/2 ρ_i² over the batch.
  double mean_half_square(MPI_Comm comm, detail::LocalSamples& s, const std::vector<double>& rows) {
    double v = 0;
    for (PetscInt k = 0; k < s.count(); ++k) {
      const double rho = dot(rows.data() + static_cast<std::size_t>(s.local(k) * d), u.data(), d);
      v += 0.5 * rho * rho;
    }
    return detail::sum_over_ranks(comm, v) / static_cast<double>(s.global_size());
  }
  /// (M u) for a replicated d x d moment matrix.
  std::vector<double> times(const std::vector<double>& m, const std::vector<double>& v) const {
    std::vector<double> out(static_cast<std::size_t>(d));
    for (PetscInt i = 0; i < d; ++i) out[i] = dot(m.data() + static_cast<std::size_t>(i * d), v.data(), d);
    return out;
  }
  /// y*(x) = −H⁻¹ (M_g,yx x + M_g,y1) into u's y block (u holds x already).
  void solve_lower(std::vector<double>& uu) const {
    std::vector<double> b(static_cast<std::size_t>(dy));
    for (PetscInt i = 0; i < dy; ++i)
      b[i] = -dot(mg.data() + static_cast<std::size_t>(i * d + dy), uu.data() + dy, dx + 1);
    h.solve(b.data());
    std::copy(b.begin(), b.end(), uu.begin());
  }
};

FiniteSumQuadraticProblem::FiniteSumQuadraticProblem(MPI_Comm comm, const FiniteSumQuadraticOptions& options)
    : comm_(comm), options_(options), impl_(std::make_shared<Impl>()) {
  options_.validate();
  Impl& m = *impl_;
  m.dy = options_.dim_lower;
  m.dx = options_.dim_upper;
  m.d = m.dy + m.dx + 1;
  const PetscInt dy = m.dy, dx = m.dx, d = m.d;
  const std::uint64_t seed = options_.seed;
  std::vector<double> sqrt_sigma(static_cast<std::size_t>(dy)), sqrt_s(static_cast<std::size_t>(dx));
  for (PetscInt k = 0; k < dy; ++k)
    sqrt_sigma[k] = std::sqrt(logspace(options_.mu, options_.lipschitz, k, dy));
  for (PetscInt k = 0; k < dx; ++k) sqrt_s[k] = std::sqrt(logspace(options_.mu, options_.cross, k, dx));
  // R = I − 2 u uᵀ couples the lower rows: w_i = T z_i with T = diag(√s) R_{1..dx} diag(1/√σ), so
  // y*(x) = y*(0) − Tᵀx when λ_g = 0. The upper cross rows are independent of p_j (were they T p_j too, F
  // would not depend on x at all).
  std::vector<double> reflect(static_cast<std::size_t>(dy));
  double nr = 0;
  for (PetscInt k = 0; k < dy; ++k) nr += (reflect[k] = counter_normal(seed, kReflect, k)) * reflect[k];
  for (auto& v : reflect) v /= std::sqrt(nr);

  // r = (diag(√σ) ξ, diag(√s) (R ξ)_{1..dx} (lower) or diag(√s) η (upper), −c) for sample i of a level,
  // ξ drawn on (stream, i dy + k)
  std::vector<double> xi(static_cast<std::size_t>(dy));
  auto make_rows = [&](PetscInt n,
                       bool coupled,
                       std::uint64_t xi_stream,
                       std::uint64_t c_stream,
                       detail::LocalSamples& s,
                       std::vector<double>& rows,
                       std::vector<double>& moment) {
    const auto [begin, end] = detail::ownership_range(comm_, n);
    s = detail::LocalSamples(begin, end, n);
    rows.assign(static_cast<std::size_t>((end - begin) * d), 0.0);
    moment.assign(static_cast<std::size_t>(d * d), 0.0);
    for (PetscInt i = begin; i < end; ++i) {
      double* r = rows.data() + static_cast<std::size_t>((i - begin) * d);
      double ux = 0;
      for (PetscInt k = 0; k < dy; ++k) {
        xi[k] = counter_normal(seed, xi_stream, static_cast<std::uint64_t>(i) * dy + k);
        ux += reflect[k] * xi[k];
      }
      for (PetscInt k = 0; k < dy; ++k) r[k] = sqrt_sigma[k] * xi[k];
      for (PetscInt k = 0; k < dx; ++k)
        r[dy + k] =
            sqrt_s[k] * (coupled ? xi[k % dy] - 2 * reflect[k % dy] * ux
                                 : counter_normal(seed, kCrossUpper, static_cast<std::uint64_t>(i) * dx + k));
      r[d - 1] = -counter_normal(seed, c_stream, static_cast<std::uint64_t>(i));
      for (PetscInt a = 0; a < d; ++a)
        for (PetscInt b = 0; b <= a; ++b) moment[a * d + b] += r[a] * r[b];
    }
    detail::sum_over_ranks(comm_, moment);
    for (PetscInt a = 0; a < d; ++a)
      for (PetscInt b = 0; b <= a; ++b) moment[b * d + a] = (moment[a * d + b] /= static_cast<double>(n));
  };
  make_rows(options_.n_lower, true, kXiLower, kCLower, m.lower, m.lower_rows, m.mg);
  make_rows(options_.n_upper, false, kXiUpper, kEUpper, m.upper, m.upper_rows, m.mf);

  // H = M_g,yy + λ_g I: its spectrum gives μ and L; it must be positive definite
  std::vector<double> hm(static_cast<std::size_t>(dy * dy));
  for (PetscInt a = 0; a < dy; ++a)
    for (PetscInt b = 0; b < dy; ++b) hm[a * dy + b] = m.mg[a * d + b] + (a == b ? options_.lower_reg : 0.0);
  std::tie(lower_mu_, lower_l_) = detail::symmetric_eigen_range(hm, dy);
  if (!(lower_mu_ > 1e-12) || !m.h.factor(hm, dy))
    throw InputError("finite_sum_quadratic: the mean lower Hessian is singular (smallest eigenvalue " +
                     general(lower_mu_) +
                     "); raise -bilevel_finite_sum_quadratic_n_lower above dim_lower or set "
                     "-bilevel_finite_sum_quadratic_lower_reg");

  // F(x) = 1/2 (P x + u0)ᵀ M_f (P x + u0) + λ_f/2 |x|², P = (S; I; 0), S = −H⁻¹ M_g,yx, u0 = (y*(0), 0, 1)
  std::vector<double> p(static_cast<std::size_t>(d * dx), 0.0), u0(static_cast<std::size_t>(d), 0.0),
      col(static_cast<std::size_t>(dy));
  for (PetscInt j = 0; j < dx; ++j) {
    for (PetscInt i = 0; i < dy; ++i) col[i] = -m.mg[i * d + dy + j];
    m.h.solve(col.data());
    for (PetscInt i = 0; i < dy; ++i) p[i * dx + j] = col[i];
    p[(dy + j) * dx + j] = 1.0;
  }
  u0[d - 1] = 1.0;
  m.solve_lower(u0);
  std::vector<double> mp(static_cast<std::size_t>(d * dx), 0.0), r(static_cast<std::size_t>(dx * dx), 0.0),
      b(static_cast<std::size_t>(dx), 0.0);
  for (PetscInt i = 0; i < d; ++i)
    for (PetscInt k = 0; k < d; ++k) {
      const double a = m.mf[i * d + k];
      if (a != 0)
        for (PetscInt j = 0; j < dx; ++j) mp[i * dx + j] += a * p[k * dx + j];
    }
  for (PetscInt i = 0; i < d; ++i)
    for (PetscInt a = 0; a < dx; ++a) {
      if (p[i * dx + a] == 0) continue;
      for (PetscInt c = 0; c < dx; ++c) r[a * dx + c] += p[i * dx + a] * mp[i * dx + c];
    }
  const std::vector<double> mfu0 = m.times(m.mf, u0);
  for (PetscInt a = 0; a < dx; ++a) {
    r[a * dx + a] += options_.upper_reg;
    for (PetscInt i = 0; i < d; ++i) b[a] += p[i * dx + a] * mfu0[i];
  }
  for (PetscInt a = 0; a < dx; ++a)  // symmetrise against rounding
    for (PetscInt c = 0; c < a; ++c) r[a * dx + c] = r[c * dx + a] = 0.5 * (r[a * dx + c] + r[c * dx + a]);
  const auto [value_mu, value_l] = detail::symmetric_eigen_range(r, dx);
  value_l_ = value_l;
  detail::SmallCholesky rc;
  if (!(value_mu > 1e-12) || !rc.factor(r, dx))
    throw InputError(
        "finite_sum_quadratic: the value function F is not strongly convex (smallest Hessian eigenvalue " +
        general(value_mu) +
        "); set -bilevel_finite_sum_quadratic_upper_reg > 0 or raise -bilevel_finite_sum_quadratic_n_upper");
  rc.solve(b.data());
  m.x_star.resize(static_cast<std::size_t>(dx));
  for (PetscInt a = 0; a < dx; ++a) m.x_star[a] = -b[a];  // x* = −(PᵀM_f P + λ_f I)⁻¹ PᵀM_f u0
}

petsc::VecHandle FiniteSumQuadraticProblem::create_upper_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, options_.dim_upper, v.out()));
  return v;
}

petsc::VecHandle FiniteSumQuadraticProblem::create_lower_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, options_.dim_lower, v.out()));
  return v;
}

Capability FiniteSumQuadraticProblem::capabilities() const {
  return Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX | Capability::Stochastic |
         Capability::ClosedForm;
}

ProblemHints FiniteSumQuadraticProblem::hints() const {
  ProblemHints h;
  h.lower_lipschitz = lower_l_;
  h.lower_strong_convexity = lower_mu_;
  h.upper_stepper = UpperStepperType::Sgd;
  h.upper_step = 1.0 / value_l_;
  return h;
}

std::shared_ptr<BilevelProblem> FiniteSumQuadraticProblem::clone_on(MPI_Comm comm) const {
  return std::make_shared<FiniteSumQuadraticProblem>(comm, options_);
}

PetscReal FiniteSumQuadraticProblem::lower_value_impl(Vec x, Vec y, const Batch& batch) {
  Impl& m = *impl_;
  m.point(m.gx.gather(x), m.gy.gather(y));
  m.lower.select(batch, "finite_sum_quadratic lower samples");
  const double yy = Impl::dot(m.u.data(), m.u.data(), m.dy);
  return m.mean_half_square(comm_, m.lower, m.lower_rows) + 0.5 * options_.lower_reg * yy;
}

void FiniteSumQuadraticProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) {
  Impl& m = *impl_;
  m.point(m.gx.gather(x), m.gy.gather(y));
  m.lower.select(batch, "finite_sum_quadratic lower samples");
  const double inv =
      1.0 / static_cast<double>(m.accumulate(comm_, m.lower, m.lower_rows, [&](const double* r) {
        return Impl::dot(r, m.u.data(), m.d);  // ρ_i
      }));
  for (PetscInt k = 0; k < m.dy; ++k) m.acc[k] = m.acc[k] * inv + options_.lower_reg * m.u[k];
  detail::write_owned(gy, m.acc.data());  // ∇_y g = (1/|B|) Σ ρ_i z_i + λ_g y
}

void FiniteSumQuadraticProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) {
  Impl& m = *impl_;
  m.point(m.gx.gather(x), m.gy.gather(y));
  m.lower.select(batch, "finite_sum_quadratic lower samples");
  const double inv =
      1.0 / static_cast<double>(m.accumulate(comm_, m.lower, m.lower_rows, [&](const double* r) {
        return Impl::dot(r, m.u.data(), m.d);
      }));
  for (PetscInt k = 0; k < m.dx; ++k) m.acc[m.dy + k] *= inv;
  detail::write_owned(gx, m.acc.data() + m.dy);  // ∇_x g = (1/|B|) Σ ρ_i w_i
}

void FiniteSumQuadraticProblem::lower_hvp_impl(Vec, Vec, const Batch& batch, Vec w, Vec out) {
  Impl& m = *impl_;
  const double* wa = m.gw.gather(w);
  m.lower.select(batch, "finite_sum_quadratic lower samples");
  const double inv =
      1.0 / static_cast<double>(m.accumulate(
                comm_, m.lower, m.lower_rows, [&](const double* r) { return Impl::dot(r, wa, m.dy); }));
  for (PetscInt k = 0; k < m.dy; ++k) m.acc[k] = m.acc[k] * inv + options_.lower_reg * wa[k];
  detail::write_owned(out, m.acc.data());  // H w = (1/|B|) Σ (z_iᵀw) z_i + λ_g w
}

void FiniteSumQuadraticProblem::lower_jvp_impl(Vec, Vec, const Batch& batch, Vec w, Vec out) {
  Impl& m = *impl_;
  const double* wa = m.gw.gather(w);
  m.lower.select(batch, "finite_sum_quadratic lower samples");
  const double inv =
      1.0 / static_cast<double>(m.accumulate(
                comm_, m.lower, m.lower_rows, [&](const double* r) { return Impl::dot(r, wa, m.dy); }));
  for (PetscInt k = 0; k < m.dx; ++k) m.acc[m.dy + k] *= inv;
  detail::write_owned(out, m.acc.data() + m.dy);  // J w = (1/|B|) Σ (z_iᵀw) w_i
}

PetscReal FiniteSumQuadraticProblem::upper_value_impl(Vec x, Vec y, const Batch& batch) {
  Impl& m = *impl_;
  m.point(m.gx.gather(x), m.gy.gather(y));
  m.upper.select(batch, "finite_sum_quadratic upper samples");
  const double xx = Impl::dot(m.u.data() + m.dy, m.u.data() + m.dy, m.dx);
  return m.mean_half_square(comm_, m.upper, m.upper_rows) + 0.5 * options_.upper_reg * xx;
}

void FiniteSumQuadraticProblem::upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  Impl& m = *impl_;
  m.point(m.gx.gather(x), m.gy.gather(y));
  m.upper.select(batch, "finite_sum_quadratic upper samples");
  const double inv =
      1.0 / static_cast<double>(m.accumulate(comm_, m.upper, m.upper_rows, [&](const double* r) {
        return Impl::dot(r, m.u.data(), m.d);
      }));
  for (PetscInt k = 0; k < m.dy; ++k) m.acc[k] *= inv;  // ∇_y f = (1/|B|) Σ ρ_j p_j
  for (PetscInt k = 0; k < m.dx; ++k)                   // ∇_x f = (1/|B|) Σ ρ_j q_j + λ_f x
    m.acc[m.dy + k] = m.acc[m.dy + k] * inv + options_.upper_reg * m.u[m.dy + k];
  if (gy) detail::write_owned(gy, m.acc.data());
  if (gx) detail::write_owned(gx, m.acc.data() + m.dy);
}

void FiniteSumQuadraticProblem::exact_lower_solution(Vec x, Vec y_star) {
  Impl& m = *impl_;
  std::vector<double> u(static_cast<std::size_t>(m.d), 0.0);
  const double* xa = m.gx.gather(x);
  std::copy(xa, xa + m.dx, u.begin() + m.dy);
  u[m.d - 1] = 1.0;
  m.solve_lower(u);
  detail::write_owned(y_star, u.data());
}

void FiniteSumQuadraticProblem::exact_hypergradient(Vec x, Vec grad) {
  // ∇F = ∇_x f(x, y*) − M_g,xy v*,  v* = H⁻¹ ∇_y f(x, y*), ∇f = (M_f u)_{y,x} (+ λ_f x)
  Impl& m = *impl_;
  std::vector<double> u(static_cast<std::size_t>(m.d), 0.0);
  const double* xa = m.gx.gather(x);
  std::copy(xa, xa + m.dx, u.begin() + m.dy);
  u[m.d - 1] = 1.0;
  m.solve_lower(u);
  std::vector<double> fu = m.times(m.mf, u);
  m.h.solve(fu.data());  // v* in fu's first dy entries
  std::vector<double> g(static_cast<std::size_t>(m.dx));
  for (PetscInt a = 0; a < m.dx; ++a)
    g[a] = fu[m.dy + a] + options_.upper_reg * xa[a] -
           Impl::dot(m.mg.data() + static_cast<std::size_t>((m.dy + a) * m.d), fu.data(), m.dy);
  detail::write_owned(grad, g.data());
}

PetscReal FiniteSumQuadraticProblem::exact_upper_objective(Vec x) {
  Impl& m = *impl_;
  std::vector<double> u(static_cast<std::size_t>(m.d), 0.0);
  const double* xa = m.gx.gather(x);
  std::copy(xa, xa + m.dx, u.begin() + m.dy);
  u[m.d - 1] = 1.0;
  m.solve_lower(u);
  const std::vector<double> fu = m.times(m.mf, u);
  return 0.5 * Impl::dot(u.data(), fu.data(), m.d) + 0.5 * options_.upper_reg * Impl::dot(xa, xa, m.dx);
}

void FiniteSumQuadraticProblem::optimal_upper_point(Vec x_star) {
  detail::write_owned(x_star, impl_->x_star.data());
}

PetscReal FiniteSumQuadraticProblem::optimal_upper_objective() {
  if (!impl_->f_star) {
    petsc::VecHandle xs = create_upper_vec();
    optimal_upper_point(xs);
    impl_->f_star = exact_upper_objective(xs);
  }
  return *impl_->f_star;
}

}  // namespace bilevel
