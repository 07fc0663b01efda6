/// \file `spectral_logsumexp`: the synthetic problem of include/bilevel/problems/spectral_logsumexp.hpp
/// (algorithms.md §5.2). x and y share one layout; every term is elementwise on the local entries except
/// s = xᵀD₁y, the softmax's max and sum, pᵀ(x∘w) and the reflections of Q (one reduction each).
#include "bilevel/problems/spectral_logsumexp.hpp"

#include <algorithm>
#include <cmath>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {
namespace {

// Streams of the counter-based generator (problems use streams >= 100).
constexpr std::uint64_t kC = 121, kD = 122, kD3 = 123, kReflection = 130;

PetscReal allreduce_sum(MPI_Comm comm, PetscReal v) {
  PetscReal out = 0;
  BILEVEL_PETSC_CALL(MPI_Allreduce(&v, &out, 1, MPIU_REAL, MPIU_SUM, comm));
  return out;
}

PetscReal dot(Vec a, Vec b) {
  PetscReal d = 0;
  BILEVEL_PETSC_CALL(VecDot(a, b, &d));
  return d;
}

}  // namespace

void SpectralLogsumexpOptions::validate() const {
  const std::string p = "option -bilevel_spectral_logsumexp_";
  if (dim < 2) throw InputError(p + "dim must be >= 2");
  if (!(condition >= 1)) throw InputError(p + "condition must be >= 1");
  if (!(gamma >= 0 && gamma < 1)) throw InputError(p + "gamma must be in [0, 1)");
  if (reflections < 0) throw InputError(p + "reflections must be >= 0");
}

SpectralLogsumexpOptions SpectralLogsumexpOptions::from(petsc::OptionsReader& opts, std::uint64_t seed) {
  SpectralLogsumexpOptions o;
  o.dim = opts.integer("dim", o.dim, "n = dim x = dim y", 2);
  o.condition = opts.real("condition", o.condition, "kappa: eigenvalues of G are linspace(1, kappa, n)", 1.0);
  o.gamma = opts.real("gamma", o.gamma, "gamma in [0,1): weight of the sine term (mu = 1 - gamma)", 0.0, 1.0);
  o.reflections = opts.integer(
      "reflections", o.reflections, "Householder reflections whose product is Q in G = Q L Q^T", 0);
  o.initial_x = opts.real("initial_x", o.initial_x, "every entry of the starting x (y starts at 0)");
  o.seed = seed;
  o.validate();
  return o;
}

SpectralLogsumexpProblem::SpectralLogsumexpProblem(MPI_Comm comm, const SpectralLogsumexpOptions& options)
    : comm_(comm), options_(options) {
  options_.validate();
  const PetscInt n = options_.dim;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, n, c_.out()));
  for (auto* v : {&d_, &d3_, &lambda_, &p_, &work_}) *v = petsc::duplicate(c_);
  PetscInt begin = 0, end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(c_, &begin, &end));
  const std::uint64_t seed = options_.seed;
  {
    petsc::WriteView c(c_), d(d_), d3(d3_), l(lambda_);
    for (PetscInt i = begin; i < end; ++i) {
      const auto k = static_cast<std::uint64_t>(i);
      c[i - begin] = -5 + 10 * counter_uniform(seed, kC, k);           // c_i ~ U(−5, 5)
      d[i - begin] = 0.1 + counter_uniform(seed, kD, k);               // d_i ~ U(0.1, 1.1)
      d3[i - begin] = options_.gamma * counter_uniform(seed, kD3, k);  // D₃ ~ U(0, γ)
      l[i - begin] = 1 + (options_.condition - 1) * static_cast<double>(i) / static_cast<double>(n - 1);
    }
  }
  for (PetscInt r = 0; r < options_.reflections; ++r) {
    petsc::VecHandle u = petsc::duplicate(c_);
    {
      petsc::WriteView a(u);
      for (PetscInt i = begin; i < end; ++i)
        a[i - begin] =
            counter_normal(seed, kReflection + static_cast<std::uint64_t>(r), static_cast<std::uint64_t>(i));
    }
    BILEVEL_PETSC_CALL(VecNormalize(u, nullptr));
    reflections_.push_back(std::move(u));
  }
}

petsc::VecHandle SpectralLogsumexpProblem::create_upper_vec() const {
  return petsc::duplicate(c_);
}

petsc::VecHandle SpectralLogsumexpProblem::create_lower_vec() const {
  return petsc::duplicate(c_);
}

Capability SpectralLogsumexpProblem::capabilities() const {
  return Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX;
}

ProblemHints SpectralLogsumexpProblem::hints() const {
  ProblemHints h;
  h.lower_strong_convexity = 1 - options_.gamma;
  h.lower_lipschitz = options_.condition + 2 * options_.gamma + options_.initial_x * options_.initial_x;
  h.lower_update = "newton";
  h.upper_stepper = UpperStepperType::Sgd;
  h.upper_step = 1.0;  // §5.2's x step
  return h;
}

void SpectralLogsumexpProblem::initial_point(Vec x, Vec y) {
  BILEVEL_PETSC_CALL(VecSet(x, options_.initial_x));
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

std::optional<PetscReal> SpectralLogsumexpProblem::lower_lipschitz_bound(Vec x) {
  PetscReal xmax = 0;
  BILEVEL_PETSC_CALL(VecNorm(x, NORM_INFINITY, &xmax));
  return options_.condition + 2 * options_.gamma + xmax * xmax;
}

std::shared_ptr<BilevelProblem> SpectralLogsumexpProblem::clone_on(MPI_Comm comm) const {
  return std::make_shared<SpectralLogsumexpProblem>(comm, options_);
}

void SpectralLogsumexpProblem::apply_g(Vec w, Vec out) {
  // out = H₁⋯H_k Λ H_k⋯H₁ w,  H_r = I − 2 u_r u_rᵀ
  BILEVEL_PETSC_CALL(VecCopy(w, out));
  for (const auto& u : reflections_) BILEVEL_PETSC_CALL(VecAXPY(out, -2.0 * dot(u, out), u));
  BILEVEL_PETSC_CALL(VecPointwiseMult(out, out, lambda_));
  for (auto it = reflections_.rbegin(); it != reflections_.rend(); ++it)
    BILEVEL_PETSC_CALL(VecAXPY(out, -2.0 * dot(*it, out), *it));
}

PetscReal SpectralLogsumexpProblem::softmax(Vec x, Vec y) {
  PetscReal local_max = -INFINITY, gmax = 0, local_sum = 0;
  {
    petsc::ReadView xa(x), ya(y);
    for (PetscInt i = 0; i < xa.size(); ++i) local_max = std::max<PetscReal>(local_max, xa[i] * ya[i]);
  }
  BILEVEL_PETSC_CALL(MPI_Allreduce(&local_max, &gmax, 1, MPIU_REAL, MPIU_MAX, comm_));
  {
    petsc::ReadView xa(x), ya(y);
    petsc::WriteView p(p_);
    for (PetscInt i = 0; i < xa.size(); ++i) local_sum += (p[i] = std::exp(xa[i] * ya[i] - gmax));
  }
  const PetscReal sum = allreduce_sum(comm_, local_sum);
  BILEVEL_PETSC_CALL(VecScale(p_, 1.0 / sum));
  return gmax + std::log(sum);  // log Σ exp(x_i y_i)
}

PetscReal SpectralLogsumexpProblem::coupling(Vec x, Vec y) {
  BILEVEL_PETSC_CALL(VecPointwiseMult(work_, c_, x));
  return dot(work_, y);  // s = xᵀD₁y
}

PetscReal SpectralLogsumexpProblem::upper_value_impl(Vec x, Vec y, const Batch&) {
  const PetscReal s = coupling(x, y);
  BILEVEL_PETSC_CALL(VecPointwiseMult(work_, d_, x));
  BILEVEL_PETSC_CALL(VecAXPY(work_, -1.0, y));
  PetscReal r = 0;
  BILEVEL_PETSC_CALL(VecNorm(work_, NORM_2, &r));
  return 0.1 * std::cos(s) + 0.5 * r * r;  // f = 0.1 cos(xᵀD₁y) + 1/2 |D₂x − y|²
}

void SpectralLogsumexpProblem::upper_grad_impl(Vec x, Vec y, const Batch&, Vec gx, Vec gy) {
  const PetscReal a = -0.1 * std::sin(coupling(x, y));
  petsc::ReadView xa(x), ya(y), c(c_), d(d_);
  if (gx) {  // ∇_x f = −0.1 sin(s) c∘y + d∘(d∘x − y)
    petsc::WriteView o(gx);
    for (PetscInt i = 0; i < xa.size(); ++i) o[i] = a * c[i] * ya[i] + d[i] * (d[i] * xa[i] - ya[i]);
  }
  if (gy) {  // ∇_y f = −0.1 sin(s) c∘x − (d∘x − y)
    petsc::WriteView o(gy);
    for (PetscInt i = 0; i < xa.size(); ++i) o[i] = a * c[i] * xa[i] - (d[i] * xa[i] - ya[i]);
  }
}

PetscReal SpectralLogsumexpProblem::lower_value_impl(Vec x, Vec y, const Batch&) {
  const PetscReal lse = softmax(x, y);
  apply_g(y, work_);
  PetscReal local = 0;
  {
    petsc::ReadView xa(x), ya(y), d3(d3_), gyv(work_);
    for (PetscInt i = 0; i < xa.size(); ++i)
      local += options_.gamma * std::sin(xa[i] + ya[i]) + 0.5 * ya[i] * (d3[i] * ya[i] + gyv[i]);
  }
  return allreduce_sum(comm_, local) + lse;  // g = γ Σ sin(x + y) + LSE(x∘y) + 1/2 yᵀ(D₃ + G)y
}

void SpectralLogsumexpProblem::lower_grad_y_impl(Vec x, Vec y, const Batch&, Vec gy) {
  softmax(x, y);
  apply_g(y, gy);
  petsc::ReadView xa(x), ya(y), p(p_), d3(d3_);
  petsc::WriteView o(gy);  // ∇_y g = γ cos(x + y) + x∘p + D₃y + G y
  for (PetscInt i = 0; i < xa.size(); ++i)
    o[i] += options_.gamma * std::cos(xa[i] + ya[i]) + xa[i] * p[i] + d3[i] * ya[i];
}

void SpectralLogsumexpProblem::lower_grad_x_impl(Vec x, Vec y, const Batch&, Vec gx) {
  softmax(x, y);
  petsc::ReadView xa(x), ya(y), p(p_);
  petsc::WriteView o(gx);  // ∇_x g = γ cos(x + y) + y∘p
  for (PetscInt i = 0; i < xa.size(); ++i) o[i] = options_.gamma * std::cos(xa[i] + ya[i]) + ya[i] * p[i];
}

void SpectralLogsumexpProblem::lower_hvp_impl(Vec x, Vec y, const Batch&, Vec w, Vec out) {
  softmax(x, y);
  PetscReal local = 0;
  {
    petsc::ReadView xa(x), wa(w), p(p_);
    for (PetscInt i = 0; i < xa.size(); ++i) local += p[i] * xa[i] * wa[i];
  }
  const PetscReal pxw = allreduce_sum(comm_, local);  // pᵀ(x∘w)
  apply_g(w, out);
  petsc::ReadView xa(x), ya(y), wa(w), p(p_), d3(d3_);
  petsc::WriteView o(out);  // H w = −γ sin(x + y)∘w + x∘(p∘(x∘w) − p pᵀ(x∘w)) + D₃w + G w
  for (PetscInt i = 0; i < xa.size(); ++i)
    o[i] += -options_.gamma * std::sin(xa[i] + ya[i]) * wa[i] + xa[i] * p[i] * (xa[i] * wa[i] - pxw) +
            d3[i] * wa[i];
}

void SpectralLogsumexpProblem::lower_jvp_impl(Vec x, Vec y, const Batch&, Vec w, Vec out) {
  softmax(x, y);
  PetscReal local = 0;
  {
    petsc::ReadView xa(x), wa(w), p(p_);
    for (PetscInt i = 0; i < xa.size(); ++i) local += p[i] * xa[i] * wa[i];
  }
  const PetscReal pxw = allreduce_sum(comm_, local);
  petsc::ReadView xa(x), ya(y), wa(w), p(p_);
  petsc::WriteView o(out);  // J w = (p − γ sin(x + y))∘w + y∘(p∘(x∘w) − p pᵀ(x∘w))
  for (PetscInt i = 0; i < xa.size(); ++i)
    o[i] = (p[i] - options_.gamma * std::sin(xa[i] + ya[i])) * wa[i] + ya[i] * p[i] * (xa[i] * wa[i] - pxw);
}

}  // namespace bilevel
