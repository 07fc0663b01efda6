#include "bilevel/blocks/zeroth_order/paths.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

void BatchSequence::setup(PetscInt steps, PetscInt size) {
  size_ = size;
  indices_.assign(static_cast<std::size_t>(size * steps), 0);
  batches_.assign(static_cast<std::size_t>(steps), Batch::all());
  for (PetscInt t = 0; size > 0 && t < steps; ++t)
    batches_[static_cast<std::size_t>(t)] = Batch::of(std::span<const PetscInt>(indices_).subspan(
        static_cast<std::size_t>(t * size), static_cast<std::size_t>(size)));
}

void BatchSequence::draw(BatchSampler& sampler, PetscInt n) {
  if (size_ == 0) return;
  for (std::size_t t = 0; t < batches_.size(); ++t) {
    const Batch b = sampler.next(n, size_);
    std::copy(b.indices.begin(), b.indices.end(), indices_.begin() + static_cast<std::ptrdiff_t>(t) * size_);
  }
}

PathParameters derive_path_parameters(BilevelProblem& p,
                                      Vec x,
                                      Vec y,
                                      PathParameters given,
                                      bool precondition,
                                      PetscInt batch_size,
                                      std::uint64_t seed) {
  PathParameters out = given;
  if (precondition) {
    out.derived = given.a <= 0;
    if (out.derived) out.a = 1.0 / estimate_preconditioned_lipschitz_minibatch(p, x, y, batch_size, seed);
    out.beta = std::max<PetscReal>(given.beta, 0);
    if (out.steps <= 0) out.steps = 10;
    return out;
  }
  const bool need_l = given.a <= 0 || given.beta < 0 || given.steps <= 0;
  if (!need_l) return out;
  return path_parameters_from_spectrum(
      given, resolve_lower_lipschitz(p, x, y), p.hints().lower_strong_convexity.value_or(0));
}

PathParameters path_parameters_from_spectrum(PathParameters given, PetscReal L, PetscReal mu_g) {
  PathParameters out = given;
  const bool have_mu = mu_g > 0 && mu_g < L;
  const PetscReal sqrt_kappa = have_mu ? std::sqrt(L / mu_g) : 0;
  out.derived = given.beta < 0 && have_mu;
  if (given.beta < 0) out.beta = have_mu ? std::pow((sqrt_kappa - 1) / (sqrt_kappa + 1), 2) : 0;
  const bool heavy_ball = have_mu && out.beta > 0;
  if (given.a <= 0) out.a = heavy_ball ? 4.0 / std::pow(std::sqrt(L) + std::sqrt(mu_g), 2) : 1.0 / L;
  if (given.steps <= 0)
    out.steps =
        heavy_ball ? std::clamp<PetscInt>(static_cast<PetscInt>(std::ceil(2 * sqrt_kappa)), 10, 200) : 10;
  return out;
}

/// The vectors of the main path and of this communicator's perturbed paths ("slots").
struct PerturbedPaths::Space {
  BilevelProblem* problem = nullptr;
  std::vector<PetscInt> slots;                               // j of each perturbed path here (0-based)
  petsc::VecHandle x0, y0, y0_prev, y_main, y_main_prev, v;  // x0, y0, y0_prev, v: blocks only
  std::vector<petsc::VecHandle> u, x, ends, ends_prev;       // u: all Q directions (blocks only)
  std::vector<petsc::VecHandle> g, mg;                       // ∇_y g and M ∇_y g of every path here
  std::vector<Vec> g_raw, mg_raw, u_raw, xs;
  std::vector<std::pair<petsc::VecHandle*, petsc::VecHandle*>> state;  // (y_t, y_{t−1}) of each path

  Space(BilevelProblem& p, PetscInt q, PetscInt groups, int group, bool grouped) : problem(&p) {
    for (PetscInt j = 0; j < q; ++j)
      if ((j + 1) % groups == group) slots.push_back(j);
    const std::size_t n = slots.size(), paths = n + (group == 0 ? 1 : 0);
    auto make = [](std::vector<petsc::VecHandle>& v, std::size_t count, auto create) {
      for (std::size_t j = 0; j < count; ++j) v.push_back(create());
    };
    auto upper = [&] { return p.create_upper_vec(); };
    auto lower = [&] { return p.create_lower_vec(); };
    make(x, n, upper);
    make(ends, n, lower);
    make(ends_prev, n, lower);
    make(g, paths, lower);
    make(mg, paths, lower);
    y_main = p.create_lower_vec();
    y_main_prev = p.create_lower_vec();
    if (grouped) {
      make(u, static_cast<std::size_t>(q), upper);
      x0 = p.create_upper_vec();
      y0 = p.create_lower_vec();
      y0_prev = p.create_lower_vec();
      v = p.create_lower_vec();
    }
    g_raw.assign(g.begin(), g.end());
    mg_raw.assign(mg.begin(), mg.end());
    u_raw.assign(u.begin(), u.end());
    xs.reserve(paths);
    state.reserve(paths);
  }

  /// Runs the main path (when here) from (y0, y0_prev) at x0 into (y_main, y_main_prev), and each slot's
  /// path at x0 + μ u_j into (ends, ends_prev); returns ||∇_y g|| of the first path's last step (−1 when
  /// there is no path). Collective on the problem's communicator.
  PetscReal run(Vec x_at,
                Vec y_start,
                Vec y_start_prev,
                std::span<const Vec> dirs,
                PetscReal mu,
                const PathSteps& s,
                bool main) {
    BilevelProblem& p = *problem;
    xs.clear();
    state.clear();
    if (main) {
      xs.push_back(x_at);
      state.emplace_back(&y_main, &y_main_prev);
    }
    for (std::size_t k = 0; k < slots.size(); ++k) {
      BILEVEL_PETSC_CALL(VecWAXPY(x[k], mu, dirs[static_cast<std::size_t>(slots[k])], x_at));  // x + μ u_j
      xs.push_back(x[k]);
      state.emplace_back(&ends[k], &ends_prev[k]);
    }
    for (auto& [y, y_prev] : state) {
      BILEVEL_PETSC_CALL(VecCopy(y_start, *y));
      BILEVEL_PETSC_CALL(VecCopy(y_start_prev, *y_prev));
    }
    const std::size_t m = state.size();
    if (m == 0) return -1;
    if (s.precondition)
      p.lower_preconditioner_setup(x_at, y_start, PreconditionerKind::Cheap);  // M at (x, y⁰)
    const auto gs = std::span<const Vec>(g_raw).first(m), mgs = std::span<const Vec>(mg_raw).first(m);
    for (std::size_t t = 0; t < s.batches.size(); ++t) {
      const Batch& b = s.batches[t];
      if (t == 0)
        p.lower_grad_y_multi(xs, y_start, b, gs);  // ∇_y g(x_j, y⁰; B_1), one shared y⁰
      else
        for (std::size_t j = 0; j < m; ++j)
          p.lower_grad_y(xs[j], *state[j].first, b, gs[j]);     // ∇_y g(x, y_t; B_t)
      if (s.precondition) p.lower_precondition_multi(gs, mgs);  // M ∇_y g
      const std::span<const Vec> step = s.precondition ? mgs : gs;
      for (std::size_t j = 0; j < m; ++j) {
        petsc::VecHandle& y = *state[j].first;
        petsc::VecHandle& y_prev = *state[j].second;
        BILEVEL_PETSC_CALL(
            VecAXPBYPCZ(y_prev, 1.0 + s.beta, -s.a, -s.beta, y, step[j]));  // (1+β)y_t − aM∇ − βy_{t−1}
        std::swap(y, y_prev);
      }
    }
    PetscReal norm = -1;
    if (!s.batches.empty()) BILEVEL_PETSC_CALL(VecNorm(gs[0], NORM_2, &norm));
    return norm;
  }

  /// c[j] = (ends_j − y)ᵀ v / μ for this space's slots (ends are overwritten). Collective.
  void differences(Vec y, Vec w, PetscReal mu, std::span<PetscReal> c) {
    for (std::size_t k = 0; k < slots.size(); ++k) {
      BILEVEL_PETSC_CALL(VecAXPY(ends[k], -1.0, y));  // μ δ_j = y_N(x + μ u_j) − y_N(x)
      PetscReal dot = 0;
      BILEVEL_PETSC_CALL(VecDot(ends[k], w, &dot));
      c[static_cast<std::size_t>(slots[k])] = dot / mu;
    }
  }
};

PerturbedPaths::PerturbedPaths() = default;
PerturbedPaths::~PerturbedPaths() = default;

void PerturbedPaths::setup(BilevelProblem& p, PetscInt q, PetscInt groups) {
  problem_ = &p;
  q_ = q;
  int size = 1;
  MPI_Comm_size(p.comm(), &size);
  groups_ = std::min<PetscInt>({std::max<PetscInt>(groups, 1), static_cast<PetscInt>(size), q + 1});
  space_.reset();
  sub_problem_.reset();
  subcomm_.reset();
  group_ = group_rank_ = 0;
  if (groups_ > 1) {
    group_ = subcomm_.split_contiguous(p.comm(), static_cast<int>(groups_));
    sub_problem_ = p.clone_on(subcomm_.get());
    int ok = sub_problem_ ? 1 : 0, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, p.comm());
    if (all_ok) {
      MPI_Comm_rank(subcomm_.get(), &group_rank_);
      space_ = std::make_unique<Space>(*sub_problem_, q, groups_, group_, true);
      upper_copy_.setup(p.create_upper_vec(), space_->x0, group_);
      lower_copy_.setup(p.create_lower_vec(), space_->y0, group_);
      sub_problem_->reset_counts();
      return;
    }
    sub_problem_.reset();
    subcomm_.reset();
    group_ = 0;
  }
  groups_ = 1;
  space_ = std::make_unique<Space>(p, q, 1, 0, false);
}

PetscReal PerturbedPaths::run(Vec x,
                              Vec y0,
                              Vec y0_prev,
                              Directions& dirs,
                              std::span<const Vec> u,
                              PetscReal mu,
                              const PathSteps& steps,
                              Vec y,
                              Vec y_prev) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  Space& s = *space_;
  if (groups_ == 1) {
    const PetscReal norm = s.run(x, y0, y0_prev, u, mu, steps, true);
    BILEVEL_PETSC_CALL(VecCopy(s.y_main, y));
    BILEVEL_PETSC_CALL(VecCopy(s.y_main_prev, y_prev));
    return norm;
  }
  upper_copy_.copy(x, s.x0);  // the start to every block
  lower_copy_.copy(y0, s.y0);
  lower_copy_.copy(y0_prev, s.y0_prev);
  if (q_ > 0) dirs.form(s.u_raw);  // u_1..u_Q on the block
  PetscReal norm = s.run(s.x0, s.y0, s.y0_prev, s.u_raw, mu, steps, group_ == 0);
  lower_copy_.copy_back(s.y_main, y);  // block 0's main path to the full communicator
  lower_copy_.copy_back(s.y_main_prev, y_prev);
  MPI_Bcast(&norm, 1, MPIU_REAL, 0, problem_->comm());  // rank 0 is block 0's first rank
  // The blocks' oracle calls, counted once per block.
  OracleCounts blocks = group_rank_ == 0 ? sub_problem_->counts() : OracleCounts{};
  allreduce(blocks, problem_->comm());
  OracleCounts total = problem_->counts();
  total += blocks;
  problem_->set_counts(total);
  sub_problem_->reset_counts();
  return norm;
}

void PerturbedPaths::differences(Vec y, Vec v, PetscReal mu, std::span<PetscReal> c) {
  BILEVEL_ASSERT(static_cast<PetscInt>(c.size()) == q_);
  Space& s = *space_;
  if (groups_ == 1) {
    s.differences(y, v, mu, c);
    return;
  }
  lower_copy_.copy(y, s.y_main);  // (y_N(x), v) to every block
  lower_copy_.copy(v, s.v);
  std::fill(c.begin(), c.end(), 0.0);
  s.differences(s.y_main, s.v, mu, c);
  if (group_rank_ != 0) std::fill(c.begin(), c.end(), 0.0);  // each block's numbers once
  MPI_Allreduce(MPI_IN_PLACE, c.data(), static_cast<int>(c.size()), MPIU_REAL, MPI_SUM, problem_->comm());
}

}  // namespace bilevel
