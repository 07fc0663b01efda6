#include "bilevel/problems/quadratic.hpp"

#include <algorithm>
#include <cmath>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {
namespace {

// Streams of the counter-based generator, one per random object.
constexpr std::uint64_t kStreamU1 = 101, kStreamU2 = 102, kStreamB = 103, kStreamTarget = 104;

void fill_normal(Vec v, std::uint64_t seed, std::uint64_t stream) {
  PetscInt begin = 0, end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &begin, &end));
  petsc::WriteView a(v);
  for (PetscInt i = begin; i < end; ++i)
    a[i - begin] = counter_normal(seed, stream, static_cast<std::uint64_t>(i));
}

}  // namespace

void QuadraticOptions::validate() const {
  if (dim_lower < 1) throw InputError("option -bilevel_quadratic_dim_lower must be >= 1");
  if (dim_upper < 1) throw InputError("option -bilevel_quadratic_dim_upper must be >= 1");
  if (!(condition >= 1)) throw InputError("option -bilevel_quadratic_condition must be >= 1");
  if (!(upper_reg > 0)) throw InputError("option -bilevel_quadratic_upper_reg must be > 0");
  if (!(preconditioner_error < 1))
    throw InputError("option -bilevel_quadratic_preconditioner_error must be < 1 (negative: none)");
}

QuadraticOptions QuadraticOptions::from(petsc::OptionsReader& opts, std::uint64_t seed) {
  QuadraticOptions o;
  o.dim_lower = opts.integer("dim_lower", o.dim_lower, "dimension of y", 1);
  o.dim_upper = opts.integer("dim_upper", o.dim_upper, "dimension of x", 1);
  o.condition = opts.real("condition", o.condition, "condition number of the lower Hessian", 1.0);
  o.upper_reg = opts.real("upper_reg", o.upper_reg, "r in f = 1/2|y-t|^2 + r/2|x|^2", 0.0);
  o.preconditioner_error =
      opts.real("preconditioner_error",
                o.preconditioner_error,
                "offer M = inexact inverse of A with relative error eps in [0,1) (negative: none)");
  o.seed = seed;
  o.validate();
  return o;
}

QuadraticProblem::QuadraticProblem(MPI_Comm comm, const QuadraticOptions& options)
    : comm_(comm), options_(options) {
  options_.validate();
  const PetscInt n = options_.dim_lower, m = options_.dim_upper;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, n, u1_.out()));
  PetscInt end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(u1_, &y_begin_, &end));
  y_local_ = end - y_begin_;
  u2_ = petsc::duplicate(u1_);
  lambda_ = petsc::duplicate(u1_);
  target_ = petsc::duplicate(u1_);
  work_ = petsc::duplicate(u1_);
  work2_ = petsc::duplicate(u1_);
  for (auto [v, stream] : {std::pair{u1_.get(), kStreamU1}, std::pair{u2_.get(), kStreamU2}}) {
    fill_normal(v, options_.seed, stream);
    BILEVEL_PETSC_CALL(VecNormalize(v, nullptr));
  }
  fill_normal(target_, options_.seed, kStreamTarget);
  {
    // Λ_i = κ^{i/(n-1)}: eigenvalues from 1 to κ.
    petsc::WriteView l(lambda_);
    for (PetscInt i = 0; i < y_local_; ++i) {
      const PetscReal t = n > 1 ? static_cast<PetscReal>(y_begin_ + i) / static_cast<PetscReal>(n - 1) : 0;
      l[i] = std::pow(options_.condition, t);
    }
  }
  if (options_.preconditioner_error >= 0) {
    // Λ̃_i = Λ_i (1 + ε cos i): M = U Λ̃⁻¹ Uᵀ, so M A = U diag(1/(1 + ε cos i)) Uᵀ
    lambda_pc_ = petsc::duplicate(u1_);
    petsc::ReadView l(lambda_);
    petsc::WriteView lp(lambda_pc_);
    for (PetscInt i = 0; i < y_local_; ++i)
      lp[i] = l[i] * (1 + options_.preconditioner_error * std::cos(static_cast<PetscReal>(y_begin_ + i)));
  }
  b_local_.resize(static_cast<std::size_t>(y_local_ * m));
  const PetscReal scale = 1.0 / std::sqrt(static_cast<PetscReal>(n));
  for (PetscInt i = 0; i < y_local_; ++i)
    for (PetscInt j = 0; j < m; ++j)
      b_local_[static_cast<std::size_t>(i * m + j)] =
          scale * counter_normal(options_.seed, kStreamB, static_cast<std::uint64_t>((y_begin_ + i) * m + j));
  reduce_.resize(static_cast<std::size_t>(m));
  partial_.resize(static_cast<std::size_t>(m));
  petsc::VecHandle x = create_upper_vec();
  BILEVEL_PETSC_CALL(VecScatterCreateToAll(x, x_to_all_.out(), x_all_.out()));
}

petsc::VecHandle QuadraticProblem::create_upper_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, options_.dim_upper, v.out()));
  return v;
}

petsc::VecHandle QuadraticProblem::create_lower_vec() const {
  return petsc::duplicate(u1_);
}

Capability QuadraticProblem::capabilities() const {
  const Capability c =
      Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX | Capability::ClosedForm;
  return options_.preconditioner_error >= 0 ? c | Capability::LowerPreconditioner : c;
}

void QuadraticProblem::lower_preconditioner_setup_impl(Vec, Vec, PreconditionerKind) {
  if (!lambda_pc_)
    throw NotImplemented("quadratic: no preconditioner (set -bilevel_quadratic_preconditioner_error)");
}

void QuadraticProblem::lower_precondition_impl(Vec r, Vec out) {
  if (!lambda_pc_)
    throw NotImplemented("quadratic: no preconditioner (set -bilevel_quadratic_preconditioner_error)");
  apply_spectral(r, out, lambda_pc_, -1);  // out = H₁ H₂ Λ̃⁻¹ H₂ H₁ r
}

ProblemHints QuadraticProblem::hints() const {
  ProblemHints h;
  h.lower_lipschitz = options_.condition;
  h.lower_strong_convexity = 1.0;
  h.upper_stepper = "sgd";
  h.upper_step = 0.5;
  return h;
}

std::shared_ptr<BilevelProblem> QuadraticProblem::clone_on(MPI_Comm comm) const {
  return std::make_shared<QuadraticProblem>(comm, options_);
}

void QuadraticProblem::initial_point(Vec x, Vec y) {
  BILEVEL_PETSC_CALL(VecSet(x, 1.0));
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

void QuadraticProblem::reflect(Vec u, Vec w) {
  PetscReal d = 0;
  BILEVEL_PETSC_CALL(VecDot(u, w, &d));
  BILEVEL_PETSC_CALL(VecAXPY(w, -2.0 * d, u));  // w <- w − 2 u (uᵀw)
}

void QuadraticProblem::apply_a(Vec w, Vec out, int diag_power) {
  apply_spectral(w, out, lambda_, diag_power);
}

void QuadraticProblem::apply_spectral(Vec w, Vec out, Vec diag, int diag_power) {
  // out = H₁ H₂ D^p H₂ H₁ w  (p = ±1)
  BILEVEL_PETSC_CALL(VecCopy(w, out));
  reflect(u1_, out);
  reflect(u2_, out);
  if (diag_power > 0)
    BILEVEL_PETSC_CALL(VecPointwiseMult(out, out, diag));
  else
    BILEVEL_PETSC_CALL(VecPointwiseDivide(out, out, diag));
  reflect(u2_, out);
  reflect(u1_, out);
}

void QuadraticProblem::apply_inverse(Vec w, Vec out) {
  apply_a(w, out, -1);
}

std::optional<SmoothnessConstants> QuadraticProblem::smoothness_constants(Vec, Vec) {
  PetscReal local = 0, sum = 0;
  for (const PetscReal b : b_local_) local += b * b;
  MPI_Allreduce(&local, &sum, 1, MPIU_REAL, MPI_SUM, comm_);
  SmoothnessConstants c;
  c.mu = 1.0;                      // λ_min(A) = Λ_0 = 1
  c.upper_grad_y_lipschitz = 1.0;  // ∇_y f = y − t
  c.cross_norm = std::sqrt(sum);   // ||B||_2 <= ||B||_F; J and H do not depend on y
  return c;
}

void QuadraticProblem::b_times(Vec x, Vec out) {
  BILEVEL_PETSC_CALL(VecScatterBegin(x_to_all_, x, x_all_, INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterEnd(x_to_all_, x, x_all_, INSERT_VALUES, SCATTER_FORWARD));
  const PetscInt m = options_.dim_upper;
  petsc::ReadView xa(x_all_);
  petsc::WriteView o(out);
  for (PetscInt i = 0; i < y_local_; ++i) {
    PetscReal s = 0;
    for (PetscInt j = 0; j < m; ++j) s += b_local_[static_cast<std::size_t>(i * m + j)] * xa[j];
    o[i] = s;  // (B x)_i
  }
}

void QuadraticProblem::bt_times(Vec w, Vec out) {
  const PetscInt m = options_.dim_upper;
  std::vector<PetscReal>& partial = partial_;
  std::fill(partial.begin(), partial.end(), 0.0);
  {
    petsc::ReadView wa(w);
    for (PetscInt i = 0; i < y_local_; ++i)
      for (PetscInt j = 0; j < m; ++j) partial[j] += b_local_[static_cast<std::size_t>(i * m + j)] * wa[i];
  }
  MPI_Allreduce(partial.data(), reduce_.data(), static_cast<int>(m), MPIU_REAL, MPI_SUM, comm_);
  PetscInt begin = 0, end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(out, &begin, &end));
  petsc::WriteView o(out);
  for (PetscInt j = begin; j < end; ++j) o[j - begin] = reduce_[static_cast<std::size_t>(j)];  // (Bᵀ w)_j
}

PetscReal QuadraticProblem::upper_value_impl(Vec x, Vec y, const Batch&) {
  PetscReal dy = 0, xx = 0;
  BILEVEL_PETSC_CALL(VecWAXPY(work_, -1.0, target_, y));
  BILEVEL_PETSC_CALL(VecNorm(work_, NORM_2, &dy));
  BILEVEL_PETSC_CALL(VecNorm(x, NORM_2, &xx));
  return 0.5 * dy * dy + 0.5 * options_.upper_reg * xx * xx;  // f = 1/2|y−t|² + r/2|x|²
}

void QuadraticProblem::upper_grad_impl(Vec x, Vec y, const Batch&, Vec gx, Vec gy) {
  if (gx) BILEVEL_PETSC_CALL(VecAXPBY(gx, options_.upper_reg, 0.0, x));  // ∇_x f = r x
  if (gy) BILEVEL_PETSC_CALL(VecWAXPY(gy, -1.0, target_, y));            // ∇_y f = y − t
}

PetscReal QuadraticProblem::lower_value_impl(Vec x, Vec y, const Batch&) {
  apply_a(y, work_, 1);
  b_times(x, work2_);
  PetscReal yay = 0, ybx = 0;
  BILEVEL_PETSC_CALL(VecDot(y, work_, &yay));
  BILEVEL_PETSC_CALL(VecDot(y, work2_, &ybx));
  return 0.5 * yay - ybx;  // g = 1/2 yᵀAy − yᵀBx
}

void QuadraticProblem::lower_grad_y_impl(Vec x, Vec y, const Batch&, Vec gy) {
  apply_a(y, gy, 1);
  b_times(x, work2_);
  BILEVEL_PETSC_CALL(VecAXPY(gy, -1.0, work2_));  // ∇_y g = A y − B x
}

void QuadraticProblem::lower_grad_x_impl(Vec, Vec y, const Batch&, Vec gx) {
  bt_times(y, gx);
  BILEVEL_PETSC_CALL(VecScale(gx, -1.0));  // ∇_x g = −Bᵀ y
}

void QuadraticProblem::lower_hvp_impl(Vec, Vec, const Batch&, Vec w, Vec out) {
  apply_a(w, out, 1);
}

void QuadraticProblem::lower_jvp_impl(Vec, Vec, const Batch&, Vec w, Vec out) {
  bt_times(w, out);
  BILEVEL_PETSC_CALL(VecScale(out, -1.0));  // J w = ∇_x <∇_y g, w> = −Bᵀ w
}

void QuadraticProblem::exact_lower_solution(Vec x, Vec y_star) {
  b_times(x, work2_);
  apply_a(work2_, y_star, -1);  // y* = A⁻¹ B x
}

void QuadraticProblem::exact_hypergradient(Vec x, Vec grad) {
  exact_lower_solution(x, work_);
  BILEVEL_PETSC_CALL(VecAXPY(work_, -1.0, target_));         // y* − t
  apply_a(work_, work2_, -1);                                // v* = A⁻¹ (y* − t)
  bt_times(work2_, grad);                                    // Bᵀ v*
  BILEVEL_PETSC_CALL(VecAXPY(grad, options_.upper_reg, x));  // ∇F = r x + Bᵀ v*
}

PetscReal QuadraticProblem::exact_upper_objective(Vec x) {
  petsc::VecHandle ys = create_lower_vec();
  exact_lower_solution(x, ys);
  PetscReal dy = 0, xx = 0;
  BILEVEL_PETSC_CALL(VecAXPY(ys, -1.0, target_));
  BILEVEL_PETSC_CALL(VecNorm(ys, NORM_2, &dy));
  BILEVEL_PETSC_CALL(VecNorm(x, NORM_2, &xx));
  return 0.5 * dy * dy + 0.5 * options_.upper_reg * xx * xx;
}

void QuadraticProblem::optimal_upper_point(Vec x_star) {
  // Columns M e_j = A⁻¹ B e_j; Gram G = MᵀM + r I and c = Mᵀ t, replicated; Cholesky solve on every rank.
  const PetscInt m = options_.dim_upper;
  std::vector<petsc::VecHandle> cols;
  std::vector<Vec> raw;
  petsc::VecHandle e = create_upper_vec();
  for (PetscInt j = 0; j < m; ++j) {
    BILEVEL_PETSC_CALL(VecSet(e, 0.0));
    BILEVEL_PETSC_CALL(VecSetValue(e, j, 1.0, INSERT_VALUES));
    BILEVEL_PETSC_CALL(VecAssemblyBegin(e));
    BILEVEL_PETSC_CALL(VecAssemblyEnd(e));
    cols.push_back(create_lower_vec());
    exact_lower_solution(e, cols.back());
    raw.push_back(cols.back());
  }
  std::vector<PetscReal> G(static_cast<std::size_t>(m * m)), c(static_cast<std::size_t>(m));
  for (PetscInt j = 0; j < m; ++j) {
    BILEVEL_PETSC_CALL(VecMDot(raw[j], m, raw.data(), &G[static_cast<std::size_t>(j * m)]));
    G[static_cast<std::size_t>(j * m + j)] += options_.upper_reg;
  }
  BILEVEL_PETSC_CALL(VecMDot(target_, m, raw.data(), c.data()));
  // Cholesky G = L Lᵀ (in place, lower triangle), then two triangular solves.
  for (PetscInt j = 0; j < m; ++j) {
    PetscReal d = G[j * m + j];
    for (PetscInt k = 0; k < j; ++k) d -= G[j * m + k] * G[j * m + k];
    BILEVEL_ASSERT(d > 0);
    G[j * m + j] = std::sqrt(d);
    for (PetscInt i = j + 1; i < m; ++i) {
      PetscReal s = G[i * m + j];
      for (PetscInt k = 0; k < j; ++k) s -= G[i * m + k] * G[j * m + k];
      G[i * m + j] = s / G[j * m + j];
    }
  }
  for (PetscInt i = 0; i < m; ++i) {
    for (PetscInt k = 0; k < i; ++k) c[i] -= G[i * m + k] * c[k];
    c[i] /= G[i * m + i];
  }
  for (PetscInt i = m - 1; i >= 0; --i) {
    for (PetscInt k = i + 1; k < m; ++k) c[i] -= G[k * m + i] * c[k];
    c[i] /= G[i * m + i];
  }
  PetscInt begin = 0, end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(x_star, &begin, &end));
  petsc::WriteView xs(x_star);
  for (PetscInt j = begin; j < end; ++j) xs[j - begin] = c[static_cast<std::size_t>(j)];
}

PetscReal QuadraticProblem::optimal_upper_objective() {
  if (!f_star_) {
    petsc::VecHandle xs = create_upper_vec();
    optimal_upper_point(xs);
    f_star_ = exact_upper_objective(xs);
  }
  return *f_star_;
}

}  // namespace bilevel
