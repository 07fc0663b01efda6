/// \file `multitask`: the oracles and closed forms of include/bilevel/problems/multitask.hpp. Every task
/// lives on one rank with its head; W is gathered to every rank, the per-task kernels run on the local
/// tasks of the batch, and the p x r results are summed over the ranks.
#include "bilevel/problems/multitask.hpp"

#include <algorithm>
#include <cmath>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/data/idx.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "multitask_impl.hpp"

namespace bilevel {
namespace {

constexpr std::uint64_t kStartW = 161;  // stream of the starting W (problems use streams >= 100)

}  // namespace

void MultitaskOptions::validate() const {
  const std::string p = "option -bilevel_multitask_";
  if (tasks < 1) throw InputError(p + "tasks must be >= 1");
  if (ways < 2) throw InputError(p + "ways must be >= 2");
  if (shots < 1) throw InputError(p + "shots must be >= 1");
  if (queries < 1) throw InputError(p + "queries must be >= 1");
  if (width < 1) throw InputError(p + "width must be >= 1");
  if (!(ridge > 0)) throw InputError(p + "ridge must be > 0");
  if (features < 1) throw InputError(p + "features must be >= 1");
  if (source == EpisodeSource::Synthetic && classes < ways)
    throw InputError(p + "classes must be >= -bilevel_multitask_ways");
  if (source == EpisodeSource::FashionMnist && ways > 10)
    throw InputError(p + "ways must be <= 10 (Fashion-MNIST has 10 classes)");
  if (!(spread >= 0)) throw InputError(p + "spread must be >= 0");
  if (pool < 1) throw InputError(p + "pool must be >= 1");
}

MultitaskOptions MultitaskOptions::from(petsc::OptionsReader& opts, std::uint64_t seed) {
  MultitaskOptions o;
  o.tasks = opts.integer("tasks", o.tasks, "T, tasks (episodes)", 1);
  o.ways = opts.integer("ways", o.ways, "k, classes per task", 2);
  o.shots = opts.integer("shots", o.shots, "s, support examples per class (lower level)", 1);
  o.queries = opts.integer("queries", o.queries, "q, query examples per class (upper level)", 1);
  o.width = opts.integer("width", o.width, "r, width of the shared representation W (p x r)", 1);
  o.ridge = opts.real("ridge", o.ridge, "lambda of every head's ridge lambda/2 |Y_t|^2", 0.0);
  o.features = opts.integer("features", o.features, "p of the synthetic episodes", 1);
  o.classes = opts.integer("classes", o.classes, "classes of the synthetic episodes", 2);
  o.spread = opts.real("spread", o.spread, "sigma of the synthetic examples around their class", 0.0);
  o.pool = opts.integer("pool", o.pool, "Fashion-MNIST training images the episodes draw from", 1);
  o.seed = seed;
  return o;  // validated by the constructor, once the source is known
}

MultitaskProblem::MultitaskProblem(MPI_Comm comm, const MultitaskOptions& options)
    : comm_(comm), options_(options), impl_(std::make_unique<Impl>()) {
  options_.validate();
  Impl& m = *impl_;
  const auto [begin, end] = detail::ownership_range(comm_, options_.tasks);
  m.local = detail::LocalSamples(begin, end, options_.tasks);
  m.p = options_.features;
  if (options_.source == EpisodeSource::FashionMnist)
    m.episodes = image_episodes(comm_, options_, begin, end, &m.p);
  else
    m.episodes = synthetic_episodes(options_, begin, end);
  m.r = options_.width;
  m.k = options_.ways;
  m.ns = options_.ways * options_.shots;
  m.nq = options_.ways * options_.queries;
  m.tasks = options_.tasks;
  m.ridge = options_.ridge;
}

MultitaskProblem::~MultitaskProblem() = default;

PetscInt MultitaskProblem::features() const {
  return impl_->p;
}

petsc::VecHandle MultitaskProblem::create_upper_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, impl_->p * impl_->r, v.out()));
  return v;
}

petsc::VecHandle MultitaskProblem::create_lower_vec() const {
  const Impl& m = *impl_;
  petsc::VecHandle v;
  const PetscInt local = (m.local.end() - m.local.begin()) * m.r * m.k;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, local, m.tasks * m.r * m.k, v.out()));
  return v;
}

Capability MultitaskProblem::capabilities() const {
  return Capability::UpperValue | Capability::LowerValue | Capability::LowerGradX | Capability::Stochastic;
}

ProblemHints MultitaskProblem::hints() const {
  ProblemHints h;
  h.lower_strong_convexity = options_.ridge / static_cast<double>(options_.tasks);
  h.upper_stepper = UpperStepperType::Sgd;
  h.upper_step = 0.5;
  return h;
}

void MultitaskProblem::initial_point(Vec x, Vec y) {
  PetscInt begin = 0, end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(x, &begin, &end));
  {
    petsc::WriteView a(x);
    const double s = 1.0 / std::sqrt(static_cast<double>(impl_->p));
    for (PetscInt i = begin; i < end; ++i)
      a[i - begin] = s * counter_normal(options_.seed, kStartW, static_cast<std::uint64_t>(i));
  }
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

std::optional<PetscReal> MultitaskProblem::lower_lipschitz_bound(Vec x) {
  Impl& m = *impl_;
  m.gather(x);
  double l = 0;
  std::vector<double> a(static_cast<std::size_t>(m.r * m.r));
  for (PetscInt t = 0; t < static_cast<PetscInt>(m.episodes.size()); ++t) {
    m.load(t, false);
    std::fill(a.begin(), a.end(), 0.0);
    detail::matmul_tn_add(m.z.data(), m.z.data(), a.data(), m.ns, m.r, m.r, 1.0 / static_cast<double>(m.ns));
    l = std::max(l, detail::symmetric_eigen_range(a, m.r).second);
  }
  double global = 0;
  BILEVEL_PETSC_CALL(MPI_Allreduce(&l, &global, 1, MPI_DOUBLE, MPI_MAX, comm_));
  return (global + m.ridge) / static_cast<double>(m.tasks);
}

PetscReal MultitaskProblem::lower_value_impl(Vec x, Vec y, const Batch& batch) {
  Impl& m = *impl_;
  m.gather(x);
  m.local.select(batch, "multitask tasks");
  petsc::ReadView ya(y);
  double s = 0;
  for (PetscInt j = 0; j < m.local.count(); ++j) {
    const PetscInt t = m.local.local(j);
    const double* head = m.head(ya.data(), t);
    m.residual(t, false, head);
    double rr = 0, yy = 0;
    for (double v : m.res) rr += v * v;
    for (PetscInt i = 0; i < m.r * m.k; ++i) yy += head[i] * head[i];
    s += 0.5 * rr / static_cast<double>(m.ns) + 0.5 * m.ridge * yy;  // g_t
  }
  return detail::sum_over_ranks(comm_, s) / static_cast<double>(m.local.global_size());
}

void MultitaskProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) {
  Impl& m = *impl_;
  m.gather(x);
  m.local.select(batch, "multitask tasks");
  const double inv = 1.0 / static_cast<double>(m.local.global_size());
  BILEVEL_PETSC_CALL(VecSet(gy, 0.0));
  petsc::ReadView ya(y);
  petsc::WriteView ga(gy);
  for (PetscInt j = 0; j < m.local.count(); ++j) {
    const PetscInt t = m.local.local(j);
    const double* head = m.head(ya.data(), t);
    double* out = m.head(ga.data(), t);
    m.residual(t, false, head);
    detail::matmul_tn_add(m.z.data(), m.res.data(), out, m.ns, m.r, m.k, inv / static_cast<double>(m.ns));
    for (PetscInt i = 0; i < m.r * m.k; ++i) out[i] += inv * m.ridge * head[i];  // (ZᵀP/n + λY_t)/|B|
  }
}

void MultitaskProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx) {
  Impl& m = *impl_;
  m.gather(x);
  m.local.select(batch, "multitask tasks");
  const double inv = 1.0 / static_cast<double>(m.local.global_size());
  m.grad_w.assign(static_cast<std::size_t>(m.p * m.r), 0.0);
  {
    petsc::ReadView ya(y);
    for (PetscInt j = 0; j < m.local.count(); ++j) {
      const PetscInt t = m.local.local(j);
      const Episode& e = m.episodes[static_cast<std::size_t>(t)];
      const double* head = m.head(ya.data(), t);
      m.residual(t, false, head);
      m.m.assign(static_cast<std::size_t>(m.ns * m.r), 0.0);
      detail::matmul_nt_add(m.res.data(), head, m.m.data(), m.ns, m.r, m.k, 1.0);  // P Y_tᵀ
      detail::matmul_tn_add(
          e.support.data(), m.m.data(), m.grad_w.data(), m.ns, m.p, m.r, inv / static_cast<double>(m.ns));
    }
  }
  detail::sum_over_ranks(comm_, m.grad_w);
  detail::write_owned(gx, m.grad_w.data());  // Σ_t S_tᵀ P Y_tᵀ/(n|B|)
}

void MultitaskProblem::lower_hvp_impl(Vec x, Vec, const Batch& batch, Vec v, Vec out) {
  Impl& m = *impl_;
  m.gather(x);
  m.local.select(batch, "multitask tasks");
  const double inv = 1.0 / static_cast<double>(m.local.global_size());
  BILEVEL_PETSC_CALL(VecSet(out, 0.0));
  petsc::ReadView va(v);
  petsc::WriteView oa(out);
  for (PetscInt j = 0; j < m.local.count(); ++j) {
    const PetscInt t = m.local.local(j);
    const double* vt = m.head(va.data(), t);
    double* ot = m.head(oa.data(), t);
    m.load(t, false);
    m.zv.resize(static_cast<std::size_t>(m.ns * m.k));
    detail::matmul(m.z.data(), vt, m.zv.data(), m.ns, m.r, m.k);
    detail::matmul_tn_add(m.z.data(), m.zv.data(), ot, m.ns, m.r, m.k, inv / static_cast<double>(m.ns));
    for (PetscInt i = 0; i < m.r * m.k; ++i) ot[i] += inv * m.ridge * vt[i];  // (ZᵀZV/n + λV)/|B|
  }
}

void MultitaskProblem::lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec v, Vec out) {
  Impl& m = *impl_;
  m.gather(x);
  m.local.select(batch, "multitask tasks");
  const double inv = 1.0 / static_cast<double>(m.local.global_size());
  m.grad_w.assign(static_cast<std::size_t>(m.p * m.r), 0.0);
  {
    petsc::ReadView ya(y), va(v);
    for (PetscInt j = 0; j < m.local.count(); ++j) {
      const PetscInt t = m.local.local(j);
      const Episode& e = m.episodes[static_cast<std::size_t>(t)];
      const double *head = m.head(ya.data(), t), *vt = m.head(va.data(), t);
      m.residual(t, false, head);
      m.zv.resize(static_cast<std::size_t>(m.ns * m.k));
      detail::matmul(m.z.data(), vt, m.zv.data(), m.ns, m.r, m.k);  // S W V
      m.m.assign(static_cast<std::size_t>(m.ns * m.r), 0.0);
      detail::matmul_nt_add(m.res.data(), vt, m.m.data(), m.ns, m.r, m.k, 1.0);   // P Vᵀ
      detail::matmul_nt_add(m.zv.data(), head, m.m.data(), m.ns, m.r, m.k, 1.0);  // + S W V Y_tᵀ
      detail::matmul_tn_add(
          e.support.data(), m.m.data(), m.grad_w.data(), m.ns, m.p, m.r, inv / static_cast<double>(m.ns));
    }
  }
  detail::sum_over_ranks(comm_, m.grad_w);
  detail::write_owned(out, m.grad_w.data());  // J V = Σ_t S_tᵀ(P Vᵀ + S W V Y_tᵀ)/(n|B|)
}

PetscReal MultitaskProblem::upper_value_impl(Vec x, Vec y, const Batch& batch) {
  Impl& m = *impl_;
  m.gather(x);
  m.local.select(batch, "multitask tasks");
  petsc::ReadView ya(y);
  double s = 0;
  for (PetscInt j = 0; j < m.local.count(); ++j) {
    const PetscInt t = m.local.local(j);
    m.residual(t, true, m.head(ya.data(), t));
    double rr = 0;
    for (double r : m.res) rr += r * r;
    s += 0.5 * rr / static_cast<double>(m.nq);  // f_t
  }
  return detail::sum_over_ranks(comm_, s) / static_cast<double>(m.local.global_size());
}

void MultitaskProblem::upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  Impl& m = *impl_;
  m.gather(x);
  m.local.select(batch, "multitask tasks");
  const double inv = 1.0 / static_cast<double>(m.local.global_size()) / static_cast<double>(m.nq);
  m.grad_w.assign(static_cast<std::size_t>(m.p * m.r), 0.0);
  if (gy) BILEVEL_PETSC_CALL(VecSet(gy, 0.0));
  {
    petsc::ReadView ya(y);
    std::optional<petsc::WriteView> ga;
    if (gy) ga.emplace(gy);
    for (PetscInt j = 0; j < m.local.count(); ++j) {
      const PetscInt t = m.local.local(j);
      const Episode& e = m.episodes[static_cast<std::size_t>(t)];
      const double* head = m.head(ya.data(), t);
      m.residual(t, true, head);
      if (ga)  // ∇_{Y_t} f = (Q_t W)ᵀ P^q/(nq |B|)
        detail::matmul_tn_add(m.z.data(), m.res.data(), m.head(ga->data(), t), m.nq, m.r, m.k, inv);
      if (gx) {  // ∇_W f = Σ_t Q_tᵀ P^q Y_tᵀ/(nq |B|)
        m.m.assign(static_cast<std::size_t>(m.nq * m.r), 0.0);
        detail::matmul_nt_add(m.res.data(), head, m.m.data(), m.nq, m.r, m.k, 1.0);
        detail::matmul_tn_add(e.query.data(), m.m.data(), m.grad_w.data(), m.nq, m.p, m.r, inv);
      }
    }
  }
  if (gx) {
    detail::sum_over_ranks(comm_, m.grad_w);
    detail::write_owned(gx, m.grad_w.data());
  }
}

std::optional<PetscReal> MultitaskProblem::validation_accuracy(Vec x, Vec y) {
  Impl& m = *impl_;
  m.gather(x);
  petsc::ReadView ya(y);
  double right = 0;
  for (PetscInt t = 0; t < m.local.end() - m.local.begin(); ++t) {
    const Episode& e = m.episodes[static_cast<std::size_t>(t)];
    m.residual(t, true, m.head(ya.data(), t));
    for (PetscInt i = 0; i < m.nq; ++i) {  // scores = res + onehot
      const PetscInt label = e.query_label[static_cast<std::size_t>(i)];
      PetscInt best = 0;
      for (PetscInt c = 1; c < m.k; ++c) {
        const double sc = m.res[i * m.k + c] + (c == label ? 1 : 0);
        const double sb = m.res[i * m.k + best] + (best == label ? 1 : 0);
        if (sc > sb) best = c;
      }
      right += best == label ? 1 : 0;
    }
  }
  return detail::sum_over_ranks(comm_, right) / static_cast<double>(m.tasks * m.nq);
}

std::vector<std::pair<std::string, PetscReal>> MultitaskProblem::summary_extras(Vec x, Vec y) {
  return {{"query_accuracy", *validation_accuracy(x, y)}};
}

// ---- closed forms (full batches): per task, A = ZᵀZ/n + λI (r x r) ----

namespace {

/// Y_t* = A⁻¹ ZᵀE_t/n for task e at W, with the factor of A in chol; z must hold S_t W. Not collective.
void task_head(MultitaskProblem::Impl& m,
               PetscInt t,
               detail::SmallCholesky& chol,
               std::vector<double>& head) {
  const Episode& e = m.episodes[static_cast<std::size_t>(t)];
  m.load(t, false);
  std::vector<double> a(static_cast<std::size_t>(m.r * m.r), 0.0);
  detail::matmul_tn_add(m.z.data(), m.z.data(), a.data(), m.ns, m.r, m.r, 1.0 / static_cast<double>(m.ns));
  for (PetscInt i = 0; i < m.r; ++i) a[i * m.r + i] += m.ridge;
  if (!chol.factor(a, m.r)) throw Error("multitask: a task's lower Hessian is not positive definite");
  head.assign(static_cast<std::size_t>(m.r * m.k), 0.0);
  for (PetscInt i = 0; i < m.ns; ++i)
    for (PetscInt b = 0; b < m.r; ++b)
      head[b * m.k + e.support_label[static_cast<std::size_t>(i)]] +=
          m.z[i * m.r + b] / static_cast<double>(m.ns);
  std::vector<double> col(static_cast<std::size_t>(m.r));
  for (PetscInt c = 0; c < m.k; ++c) {  // solve column by column
    for (PetscInt b = 0; b < m.r; ++b) col[b] = head[b * m.k + c];
    chol.solve(col.data());
    for (PetscInt b = 0; b < m.r; ++b) head[b * m.k + c] = col[b];
  }
}

}  // namespace

void MultitaskProblem::exact_lower_solution(Vec x, Vec y_star) {
  Impl& m = *impl_;
  m.gather(x);
  petsc::WriteView ya(y_star);
  detail::SmallCholesky chol;
  std::vector<double> head;
  for (PetscInt t = 0; t < m.local.end() - m.local.begin(); ++t) {
    task_head(m, t, chol, head);
    std::copy(head.begin(), head.end(), m.head(ya.data(), t));
  }
}

PetscReal MultitaskProblem::exact_upper_objective(Vec x) {
  Impl& m = *impl_;
  m.gather(x);
  detail::SmallCholesky chol;
  std::vector<double> head;
  double s = 0;
  for (PetscInt t = 0; t < m.local.end() - m.local.begin(); ++t) {
    task_head(m, t, chol, head);
    m.residual(t, true, head.data());
    double rr = 0;
    for (double r : m.res) rr += r * r;
    s += 0.5 * rr / static_cast<double>(m.nq);
  }
  return detail::sum_over_ranks(comm_, s) / static_cast<double>(m.tasks);
}

void MultitaskProblem::exact_hypergradient(Vec x, Vec grad) {
  // ∇F = (1/T) Σ_t [Q_tᵀ P^q Y_t*ᵀ/nq − S_tᵀ(P v_tᵀ + S_t W v_t Y_t*ᵀ)/ns],  v_t = A_t⁻¹ (Q_t W)ᵀP^q/nq
  Impl& m = *impl_;
  m.gather(x);
  detail::SmallCholesky chol;
  std::vector<double> head, v(static_cast<std::size_t>(m.r * m.k)), col(static_cast<std::size_t>(m.r)),
      acc(static_cast<std::size_t>(m.p * m.r), 0.0);
  const double inv_t = 1.0 / static_cast<double>(m.tasks);
  for (PetscInt t = 0; t < m.local.end() - m.local.begin(); ++t) {
    const Episode& e = m.episodes[static_cast<std::size_t>(t)];
    task_head(m, t, chol, head);
    m.residual(t, true, head.data());  // z = Q W, res = P^q
    std::fill(v.begin(), v.end(), 0.0);
    detail::matmul_tn_add(
        m.z.data(), m.res.data(), v.data(), m.nq, m.r, m.k, 1.0 / static_cast<double>(m.nq));
    m.m.assign(static_cast<std::size_t>(m.nq * m.r), 0.0);
    detail::matmul_nt_add(m.res.data(), head.data(), m.m.data(), m.nq, m.r, m.k, 1.0);
    detail::matmul_tn_add(
        e.query.data(), m.m.data(), acc.data(), m.nq, m.p, m.r, inv_t / static_cast<double>(m.nq));
    for (PetscInt c = 0; c < m.k; ++c) {
      for (PetscInt b = 0; b < m.r; ++b) col[b] = v[b * m.k + c];
      chol.solve(col.data());
      for (PetscInt b = 0; b < m.r; ++b) v[b * m.k + c] = col[b];
    }
    m.residual(t, false, head.data());  // z = S W, res = P
    m.zv.resize(static_cast<std::size_t>(m.ns * m.k));
    detail::matmul(m.z.data(), v.data(), m.zv.data(), m.ns, m.r, m.k);
    m.m.assign(static_cast<std::size_t>(m.ns * m.r), 0.0);
    detail::matmul_nt_add(m.res.data(), v.data(), m.m.data(), m.ns, m.r, m.k, 1.0);
    detail::matmul_nt_add(m.zv.data(), head.data(), m.m.data(), m.ns, m.r, m.k, 1.0);
    detail::matmul_tn_add(
        e.support.data(), m.m.data(), acc.data(), m.ns, m.p, m.r, -inv_t / static_cast<double>(m.ns));
  }
  detail::sum_over_ranks(comm_, acc);
  detail::write_owned(grad, acc.data());
}

}  // namespace bilevel
