/// PZOBO / PZOBO-S: Hessian-free hypergradients from a zeroth-order estimate of the response Jacobian
/// (Sow, Ji & Liang, "On the convergence theory for Hessian-free bilevel algorithms", NeurIPS 2022,
/// arXiv 2110.07004, Alg. 1; algorithms.md §2.3).
///
/// Per outer iteration k, from the warm start (y⁰, y⁻¹) = (y_k, y_{k-1}) and one minibatch sequence
/// B_1..B_N shared by every path (PZOBO-S; full batches for PZOBO):
///   main path       y_N(x_k): N steps y_{t+1} = y_t − a ∇_y g(x_k, y_t; B_t) + β (y_t − y_{t−1});
///   Q paths         y_N(x_k + μ u_j), the same N steps from the same start, u_j ~ N(0, I_dx);
///   δ_j = (y_N(x_k + μ u_j) − y_N(x_k)) / μ,   h_k = ∇_x f(x_k, y_N) + (1/Q) Σ_j u_j (δ_jᵀ ∇_y f(x_k, y_N));
///   x_{k+1} = P(x_k − ξ h_k) (the upper stepper),  y_{k+1} = y_N(x_k).
/// u_j's entries are counter_normal(seed, stream 7, (k Q + j − 1) dx + i) of the global index i, so the
/// directions do not depend on the rank count. Cost per iteration: N (Q + 1) ∇_y g + 1 ∇f; no HVP/JVP.
///
/// Inner solver. The paper's analysis uses gradient descent (β = 0); its experiments use momentum SGD.
/// The bias of the N-step Jacobian decays like (1 − aμ_g)^N for gradient descent and like
/// (1 − 2/√κ)^N for heavy ball, so with μ_g known (ProblemHints::lower_strong_convexity) the defaults take
/// the optimal heavy-ball pair a = 4/(√L + √μ_g)², β = ((√κ − 1)/(√κ + 1))², κ = L/μ_g, and
/// N = ⌈2√κ⌉ clamped to [10, 200]; the heavy-ball state (y_k, y_{k-1}) carries over between outer
/// iterations (restarting it every N steps amplifies y for N ≲ 2√κ). Without μ_g: gradient descent with
/// a = 1/L and N = 10 (the paper's setting).
///
/// Parallelism. With -bilevel_pzobo_path_groups G > 1 (default: as many as the ranks and Q + 1 allow, when
/// the problem can be rebuilt on a sub-communicator, BilevelProblem::clone_on) the Q + 1 paths run side by
/// side on G sub-communicators (contiguous rank blocks; the main path on group 0, path j on group j mod G):
/// (x, y⁰, y⁻¹) go to the groups, (y_N, y_{N−1}) come back from group 0, (y_N, ∇_y f) go out again and the
/// Q numbers δ_jᵀ∇_y f come back in one reduction; no path communicates outside its group. Otherwise the
/// paths run one after another on the full communicator.
/// Limit. The estimate (1/Q) Σ u_j u_jᵀ h has per-coordinate signal-to-noise ≈ √(Q/dx): with dx = 50,000
/// sample weights (default hyperclean) and Q = 10 it is 0.014 per iteration, and the measured detection F1
/// of the corrupted samples stays at chance (0.50) (docs/benchmarks.md). The method is for few hyperparameters.
/// Options (-bilevel_pzobo_*): inner_steps, inner_step, inner_momentum, directions, direction_type, smoothing,
/// batch_size, path_groups.
#include <petscviewer.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/blocks/hessian_shell.hpp"
#include "bilevel/blocks/upper_stepper.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {
namespace {

constexpr std::uint64_t kStreamDirections = 7;  // counter_normal stream of the directions u_j

/// Settings of Pzobo. 0 / −1 mean "derived" as the file comment says. Options database keys in brackets.
struct PzoboOptions {
  PetscInt inner_steps = 0;       ///< [-bilevel_pzobo_inner_steps] N steps per path; 0: derived
  PetscReal inner_step = 0;       ///< [-bilevel_pzobo_inner_step] a; 0: derived from L (and μ_g)
  PetscReal inner_momentum = -1;  ///< [-bilevel_pzobo_inner_momentum] heavy-ball β; −1: derived, 0: plain GD
  PetscInt directions = 10;       ///< [-bilevel_pzobo_directions] Q Gaussian directions per iteration
  /// [-bilevel_pzobo_direction_type gaussian|orthogonal] u_j i.i.d. N(0, I) (the paper), or Gaussian rows
  /// orthonormalised in blocks of min(Q, dx) and scaled to norm √dx (still E[u_j u_jᵀ] = I, smaller variance;
  /// exact J_Nᵀ∇_y f when Q is a multiple of dx)
  std::string direction_type = "gaussian";
  PetscReal smoothing = 0.01;     ///< [-bilevel_pzobo_smoothing] μ of the finite difference
  PetscInt batch_size = 256;      ///< [-bilevel_pzobo_batch_size] PZOBO-S minibatch when -bilevel_batch_size is unset
  PetscInt path_groups = 0;       ///< [-bilevel_pzobo_path_groups] sub-communicators for the Q paths; 0: auto
};

/// An MPI communicator from MPI_Comm_split, freed on destruction (declare it before the objects on it).
class OwnedComm {
 public:
  OwnedComm() = default;
  OwnedComm(const OwnedComm&) = delete;
  OwnedComm& operator=(const OwnedComm&) = delete;
  ~OwnedComm() { reset(); }
  void reset() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }
  MPI_Comm* out() {
    reset();
    return &comm_;
  }
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// Copies a Vec of the full communicator into the Vec of the same global size on this rank's group
/// (every group receives the whole vector): one VecScatter into a full-communicator Vec that lays the
/// groups' copies side by side (the pattern of PCREDUNDANT), then a local copy. Collective on the full
/// communicator.
class GroupCopy {
 public:
  void setup(Vec full, Vec sub, PetscInt group) {
    PetscInt n_sub = 0, lo = 0, hi = 0, n_global = 0, s_lo = 0, s_hi = 0;
    BILEVEL_PETSC_CALL(VecGetSize(full, &n_global));
    BILEVEL_PETSC_CALL(VecGetLocalSize(sub, &n_sub));
    BILEVEL_PETSC_CALL(VecGetOwnershipRange(sub, &lo, &hi));
    MPI_Comm comm = PetscObjectComm(reinterpret_cast<PetscObject>(full));
    BILEVEL_PETSC_CALL(VecCreateMPI(comm, n_sub, PETSC_DETERMINE, stacked_.out()));
    BILEVEL_PETSC_CALL(VecGetOwnershipRange(stacked_, &s_lo, &s_hi));
    // Groups are contiguous rank blocks, so group g's copy occupies [g N, (g + 1) N) of the stacked Vec.
    BILEVEL_ASSERT(s_lo == group * n_global + lo);
    petsc::IsHandle from, to;
    BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, n_sub, lo, 1, from.out()));
    BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, n_sub, s_lo, 1, to.out()));
    BILEVEL_PETSC_CALL(VecScatterCreate(full, from, stacked_, to, scatter_.out()));
    // Back: the full Vec's entries [f_lo, f_hi) from group 0's copy, the block [0, N) of the stacked Vec.
    PetscInt f_lo = 0, f_hi = 0;
    BILEVEL_PETSC_CALL(VecGetOwnershipRange(full, &f_lo, &f_hi));
    petsc::IsHandle back_from, back_to;
    BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, f_hi - f_lo, f_lo, 1, back_from.out()));
    BILEVEL_PETSC_CALL(ISCreateStride(PETSC_COMM_SELF, f_hi - f_lo, f_lo, 1, back_to.out()));
    BILEVEL_PETSC_CALL(VecScatterCreate(stacked_, back_from, full, back_to, back_.out()));
  }
  /// Group 0's `sub` into `full` (every rank passes its group's Vec; only group 0's values are read).
  void copy_back(Vec sub, Vec full) {
    {
      petsc::ReadView s(sub);
      petsc::WriteView d(stacked_);
      std::copy(s.data(), s.data() + s.size(), d.data());
    }
    BILEVEL_PETSC_CALL(VecScatterBegin(back_, stacked_, full, INSERT_VALUES, SCATTER_FORWARD));
    BILEVEL_PETSC_CALL(VecScatterEnd(back_, stacked_, full, INSERT_VALUES, SCATTER_FORWARD));
  }
  void copy(Vec full, Vec sub) {
    BILEVEL_PETSC_CALL(VecScatterBegin(scatter_, full, stacked_, INSERT_VALUES, SCATTER_FORWARD));
    BILEVEL_PETSC_CALL(VecScatterEnd(scatter_, full, stacked_, INSERT_VALUES, SCATTER_FORWARD));
    petsc::ReadView s(stacked_);
    petsc::WriteView d(sub);
    std::copy(s.data(), s.data() + s.size(), d.data());
  }

 private:
  petsc::VecHandle stacked_;
  petsc::ScatterHandle scatter_, back_;
};

/// What the perturbed paths need, on one communicator (the full one, or this rank's group).
struct PathSpace {
  BilevelProblem* problem = nullptr;
  petsc::VecHandle x0, x;                                   // upper layout
  std::vector<petsc::VecHandle> directions;                 // u_1..u_Q (groups only; else the full ones)
  petsc::VecHandle y0, y0_prev, ya, yb, g, y_main, y_main_prev, fy;  // lower layout
  std::vector<petsc::VecHandle> ends;                       // endpoints of this group's perturbed paths
  /// q directions and `paths` stored endpoints (both 0 on the full communicator). Collective.
  void setup(BilevelProblem& p, PetscInt q, PetscInt paths) {
    problem = &p;
    for (petsc::VecHandle* v : {&x0, &x}) *v = p.create_upper_vec();
    directions.clear();
    for (PetscInt j = 0; j < q; ++j) directions.push_back(p.create_upper_vec());
    ends.clear();
    for (PetscInt j = 0; j < paths; ++j) ends.push_back(p.create_lower_vec());
    for (petsc::VecHandle* v : {&y0, &y0_prev, &ya, &yb, &g, &y_main, &y_main_prev, &fy}) *v = p.create_lower_vec();
  }
};

/// The Q directions of outer iteration k: entry i (global) of u_j is counter_normal(seed, 7, (k Q + j) dx + i)
/// (j 0-based); with `orthogonal`, each block of min(Q, dx) consecutive directions is orthonormalised
/// (modified Gram-Schmidt) and scaled to norm √dx. Collective on the directions' communicator.
void make_directions(std::span<petsc::VecHandle> u, std::uint64_t seed, PetscInt k, bool orthogonal) {
  const auto q = static_cast<PetscInt>(u.size());
  PetscInt lo = 0, hi = 0, n = 0;
  BILEVEL_PETSC_CALL(VecGetSize(u[0], &n));
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(u[0], &lo, &hi));
  for (PetscInt j = 0; j < q; ++j) {
    const auto base = (static_cast<std::uint64_t>(k) * static_cast<std::uint64_t>(q) + static_cast<std::uint64_t>(j)) *
                      static_cast<std::uint64_t>(n);
    petsc::WriteView w(u[static_cast<std::size_t>(j)]);
    for (PetscInt i = lo; i < hi; ++i) w[i - lo] = counter_normal(seed, kStreamDirections, base + static_cast<std::uint64_t>(i));
  }
  if (!orthogonal) return;
  const PetscInt block = std::min(q, n);
  const PetscReal radius = std::sqrt(static_cast<PetscReal>(n));
  for (PetscInt j = 0; j < q; ++j) {
    Vec uj = u[static_cast<std::size_t>(j)];
    for (PetscInt i = j - j % block; i < j; ++i) {  // earlier directions of the same block
      PetscReal c = 0;
      BILEVEL_PETSC_CALL(VecDot(u[static_cast<std::size_t>(i)], uj, &c));
      BILEVEL_PETSC_CALL(VecAXPY(uj, -c / static_cast<PetscReal>(n), u[static_cast<std::size_t>(i)]));  // |u_i|² = dx
    }
    PetscReal norm = 0;
    BILEVEL_PETSC_CALL(VecNorm(uj, NORM_2, &norm));
    if (norm > 0) BILEVEL_PETSC_CALL(VecScale(uj, radius / norm));
  }
}

/// N steps y_{t+1} = y_t − a ∇_y g(x, y_t; B_t) + β (y_t − y_{t−1}) from (y, y_prev), in place (the handles
/// are swapped so that y holds y_N and y_prev y_{N−1}). Returns ||∇_y g|| of the last step. Collective.
PetscReal run_path(BilevelProblem& p, Vec x, petsc::VecHandle& y, petsc::VecHandle& y_prev, Vec g,
                   std::span<const Batch> batches, PetscReal a, PetscReal beta) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  PetscReal norm = -1;
  for (const Batch& b : batches) {
    p.lower_grad_y(x, y, b, g);                                                 // ∇_y g(x, y_t; B_t)
    BILEVEL_PETSC_CALL(VecAXPBYPCZ(y_prev, 1.0 + beta, -a, -beta, y, g));      // y_{t+1} = (1+β)y_t − a∇ − βy_{t−1}
    std::swap(y, y_prev);
  }
  if (!batches.empty()) BILEVEL_PETSC_CALL(VecNorm(g, NORM_2, &norm));
  return norm;
}

void add_counts(OracleCounts& into, const std::int64_t* d) {
  into.grad_f += d[0];
  into.grad_g += d[1];
  into.hvp += d[2];
  into.jvp += d[3];
  into.samples += d[4];
  into.value_f += d[5];
  into.value_g += d[6];
}

class Pzobo : public Algorithm {
 public:
  std::string_view type() const override { return "pzobo"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.inner_steps = opts.integer("inner_steps", o_.inner_steps, "steps N per path (0: derived from L, mu)", 0);
    o_.inner_step = opts.real("inner_step", o_.inner_step, "step a of the paths (0: derived from L, mu)", 0.0);
    o_.inner_momentum = opts.real("inner_momentum", o_.inner_momentum,
                                  "heavy-ball momentum of the paths (-1: derived from L, mu; 0: plain GD)", -1.0, 1.0);
    o_.directions = opts.integer("directions", o_.directions, "Gaussian directions Q per outer iteration", 1);
    o_.direction_type = opts.choice("direction_type", o_.direction_type, {"gaussian", "orthogonal"},
                                    "directions: i.i.d. Gaussian (paper) or orthogonal blocks of norm sqrt(dx)");
    o_.smoothing = opts.real("smoothing", o_.smoothing, "finite-difference step mu", 0.0);
    if (!(o_.smoothing > 0)) throw InputError("option -bilevel_pzobo_smoothing must be > 0");
    o_.batch_size = opts.integer("batch_size", o_.batch_size,
                                 "PZOBO-S minibatch used when -bilevel_batch_size is not set (0: full)", 0);
    o_.path_groups = opts.integer("path_groups", o_.path_groups,
                                  "sub-communicators running the Q paths side by side (0: auto, 1: none)", 0);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    derive_inner_solver(p, ctx);
    q_ = o_.directions;
    mu_ = o_.smoothing;
    const bool stochastic = has(p.capabilities(), Capability::Stochastic);
    batch_ = stochastic ? (ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size) : 0;
    const DatasetSizes n = p.dataset_sizes();
    if (batch_ >= n.lower) batch_ = 0;
    upper_batch_ = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    if (!stochastic || upper_batch_ >= n.upper) upper_batch_ = 0;
    // Storage of one minibatch sequence B_1..B_N, replayed by every path.
    batch_indices_.assign(static_cast<std::size_t>(batch_ * n_), 0);
    batches_.assign(static_cast<std::size_t>(n_), Batch::all());
    for (PetscInt t = 0; batch_ > 0 && t < n_; ++t)
      batches_[static_cast<std::size_t>(t)] =
          Batch::of(std::span<const PetscInt>(batch_indices_).subspan(static_cast<std::size_t>(t * batch_),
                                                                       static_cast<std::size_t>(batch_)));
    inner_ = BatchSampler(ctx.seed, 1);
    outer_ = BatchSampler(ctx.seed, 4);
    seed_ = ctx.seed;

    y_prev_ = p.create_lower_vec();
    main_y_ = p.create_lower_vec();
    main_y_prev_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    directions_.clear();
    for (PetscInt j = 0; j < q_; ++j) directions_.push_back(p.create_upper_vec());
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, y_prev_));  // zero initial velocity
    c_.assign(static_cast<std::size_t>(q_ + 1), 0.0);
    setup_groups(p, ctx.comm);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    StepResult r;
    const DatasetSizes n = p.dataset_sizes();
    // One minibatch sequence for the main and the perturbed paths (PZOBO-S, Alg. 1 stochastic variant).
    for (PetscInt t = 0; batch_ > 0 && t < n_; ++t) {
      const Batch b = inner_.next(n.lower, batch_);
      std::copy(b.indices.begin(), b.indices.end(), batch_indices_.begin() + t * batch_);
    }
    const Batch ub = upper_batch_ > 0 ? outer_.next(n.upper, upper_batch_) : Batch::all();
    const bool orthogonal = o_.direction_type == "orthogonal";
    make_directions(directions_, seed_, ctx.iteration, orthogonal);  // u_1..u_Q (full communicator)
    std::fill(c_.begin(), c_.end(), 0.0);
    if (grouped_) r.lower_residual = grouped_paths(ctx, ub, orthogonal);
    else r.lower_residual = sequential_paths(ctx, ub);
    // h_k = ∇_x f + (1/Q) Σ_j (δ_jᵀ ∇_y f) u_j  (Alg. 1, hypergradient estimate)
    for (PetscInt j = 0; j < q_; ++j)
      BILEVEL_PETSC_CALL(VecAXPY(fx_, c_[static_cast<std::size_t>(j)] / static_cast<PetscReal>(q_),
                                 directions_[static_cast<std::size_t>(j)]));
    BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &r.hypergradient_norm));
    r.inner_iterations = n_ * (q_ + 1);
    BILEVEL_PETSC_CALL(VecCopy(main_y_, ctx.y));        // y_{k+1} = y_N(x_k)  (warm start)
    BILEVEL_PETSC_CALL(VecCopy(main_y_prev_, y_prev_));  // heavy-ball state carried over
    ctx.upper.step(ctx.x, fx_);                          // x_{k+1} = P(x_k − ξ h_k)
    return r;
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "pzobo: zeroth-order response-Jacobian hypergradient (Sow, Ji & Liang, NeurIPS 2022, arXiv 2110.07004, "
        "Alg. 1)\n"
        "  inner_steps %d, inner_step %g, inner_momentum %g (%s), directions %d %s, smoothing %g,\n"
        "  batch %d (upper %d), paths %s\n",
        static_cast<int>(n_ > 0 ? n_ : o_.inner_steps), a_ > 0 ? a_ : o_.inner_step,
        beta_ >= 0 ? beta_ : o_.inner_momentum, derived_ ? "derived from L and mu_g" : "given or gradient descent",
        static_cast<int>(o_.directions), o_.direction_type.c_str(), o_.smoothing, static_cast<int>(batch_), static_cast<int>(upper_batch_),
        grouped_ ? "side by side on sub-communicators" : "one after another on the full communicator"));
    if (grouped_)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, "  path groups %d\n", static_cast<int>(groups_)));
  }

 private:
  /// All Q + 1 paths on the full communicator, one after another: main_y_ = y_N(x_k), fx_/fy_ = ∇f there,
  /// c_j = δ_jᵀ ∇_y f. Returns ||∇_y g|| of the main path's last step. Collective.
  PetscReal sequential_paths(AlgorithmContext& ctx, const Batch& ub) {
    BilevelProblem& p = ctx.problem;
    PathSpace& s = full_space_;
    // Main path y_N(x_k) from (y_k, y_{k-1}) (Alg. 1, inner loop).
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, main_y_));
    BILEVEL_PETSC_CALL(VecCopy(y_prev_, main_y_prev_));
    const PetscReal residual = run_path(p, ctx.x, main_y_, main_y_prev_, s.g, batches_, a_, beta_);
    p.upper_grad(ctx.x, main_y_, ub, fx_, fy_);  // ∇_x f, ∇_y f at (x_k, y_N(x_k))
    for (PetscInt j = 0; j < q_; ++j) {
      BILEVEL_PETSC_CALL(VecWAXPY(s.x, mu_, directions_[static_cast<std::size_t>(j)], ctx.x));  // x_k + μ u_j
      BILEVEL_PETSC_CALL(VecCopy(ctx.y, s.ya));
      BILEVEL_PETSC_CALL(VecCopy(y_prev_, s.yb));
      run_path(p, s.x, s.ya, s.yb, s.g, batches_, a_, beta_);      // y_N(x_k + μ u_j), same batches
      BILEVEL_PETSC_CALL(VecAXPY(s.ya, -1.0, main_y_));             // μ δ_j = y_N(x_k + μ u_j) − y_N(x_k)
      PetscReal dot = 0;
      BILEVEL_PETSC_CALL(VecDot(s.ya, fy_, &dot));
      c_[static_cast<std::size_t>(j)] = dot / mu_;                  // δ_jᵀ ∇_y f
    }
    return residual;
  }

  /// The same with the Q + 1 paths side by side on the groups (path 0, the main one, on group 0; path j on
  /// group j mod G): the groups receive (x_k, y_k, y_{k-1}), run their paths, group 0 returns
  /// (y_N, y_{N-1}), the full communicator evaluates ∇f, the groups receive (y_N, ∇_y f) and form their δ_jᵀ
  /// ∇_y f, and one reduction gathers them. Collective.
  PetscReal grouped_paths(AlgorithmContext& ctx, const Batch& ub, bool orthogonal) {
    BilevelProblem& p = ctx.problem;
    PathSpace& s = group_space_;
    upper_copy_.copy(ctx.x, s.x0);
    lower_copy_.copy(ctx.y, s.y0);
    lower_copy_.copy(y_prev_, s.y0_prev);
    make_directions(s.directions, seed_, ctx.iteration, orthogonal);  // u_1..u_Q on the group
    PetscReal residual = 0;
    if (group_ == 0) {  // main path y_N(x_k) (Alg. 1, inner loop)
      BILEVEL_PETSC_CALL(VecCopy(s.y0, s.y_main));
      BILEVEL_PETSC_CALL(VecCopy(s.y0_prev, s.y_main_prev));
      residual = run_path(*s.problem, s.x0, s.y_main, s.y_main_prev, s.g, batches_, a_, beta_);
    }
    std::size_t slot = 0;
    for (PetscInt j = 0; j < q_; ++j) {
      if ((j + 1) % groups_ != group_) continue;
      BILEVEL_PETSC_CALL(VecWAXPY(s.x, mu_, s.directions[static_cast<std::size_t>(j)], s.x0));  // x_k + μ u_j
      BILEVEL_PETSC_CALL(VecCopy(s.y0, s.ends[slot]));
      BILEVEL_PETSC_CALL(VecCopy(s.y0_prev, s.yb));
      run_path(*s.problem, s.x, s.ends[slot], s.yb, s.g, batches_, a_, beta_);  // y_N(x_k + μ u_j)
      ++slot;
    }
    lower_copy_.copy_back(s.y_main, main_y_);  // y_N and y_{N-1} from group 0 to the full communicator
    lower_copy_.copy_back(s.y_main_prev, main_y_prev_);
    p.upper_grad(ctx.x, main_y_, ub, fx_, fy_);  // ∇_x f, ∇_y f at (x_k, y_N(x_k))
    lower_copy_.copy(main_y_, s.y_main);
    lower_copy_.copy(fy_, s.fy);
    slot = 0;
    for (PetscInt j = 0; j < q_; ++j) {
      if ((j + 1) % groups_ != group_) continue;
      Vec end = s.ends[slot++];
      BILEVEL_PETSC_CALL(VecAXPY(end, -1.0, s.y_main));  // μ δ_j = y_N(x_k + μ u_j) − y_N(x_k)
      PetscReal dot = 0;
      BILEVEL_PETSC_CALL(VecDot(end, s.fy, &dot));
      c_[static_cast<std::size_t>(j)] = group_rank_ == 0 ? dot / mu_ : 0;  // δ_jᵀ ∇_y f, once per group
    }
    c_[static_cast<std::size_t>(q_)] = (group_ == 0 && group_rank_ == 0) ? residual : 0;
    MPI_Allreduce(MPI_IN_PLACE, c_.data(), static_cast<int>(q_ + 1), MPIU_REAL, MPI_SUM, ctx.comm);
    collect_group_counts(p, ctx.comm);
    return c_[static_cast<std::size_t>(q_)];
  }

  /// a, β and N from the options, L (hints or SLEPc) and μ_g (hints); see the file comment.
  void derive_inner_solver(BilevelProblem& p, AlgorithmContext& ctx) {
    const ProblemHints h = p.hints();
    const bool need_l = o_.inner_step == 0 || o_.inner_momentum < 0 || o_.inner_steps == 0;
    const PetscReal L =
        need_l ? (h.lower_lipschitz ? *h.lower_lipschitz : estimate_lower_lipschitz(p, ctx.x, ctx.y)) : 0;
    const bool have_mu = need_l && h.lower_strong_convexity && *h.lower_strong_convexity > 0 &&
                         *h.lower_strong_convexity < L;
    const PetscReal mu_g = have_mu ? *h.lower_strong_convexity : 0;
    const PetscReal sqrt_kappa = have_mu ? std::sqrt(L / mu_g) : 0;
    derived_ = false;
    beta_ = o_.inner_momentum;
    if (beta_ < 0) {
      beta_ = have_mu ? std::pow((sqrt_kappa - 1) / (sqrt_kappa + 1), 2) : 0;  // optimal heavy ball
      derived_ = have_mu;
    }
    a_ = o_.inner_step;
    if (a_ == 0) a_ = (have_mu && beta_ > 0) ? 4.0 / std::pow(std::sqrt(L) + std::sqrt(mu_g), 2) : 1.0 / L;
    n_ = o_.inner_steps;
    if (n_ == 0)
      n_ = (have_mu && beta_ > 0) ? std::clamp<PetscInt>(static_cast<PetscInt>(std::ceil(2 * sqrt_kappa)), 10, 200) : 10;
  }

  /// Splits the communicator into groups and rebuilds the problem on this rank's group (when possible).
  void setup_groups(BilevelProblem& p, MPI_Comm comm) {
    int size = 1, rank = 0;
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    groups_ = o_.path_groups > 0 ? o_.path_groups : std::min<PetscInt>(size, q_ + 1);
    groups_ = std::min<PetscInt>({groups_, static_cast<PetscInt>(size), q_ + 1});
    grouped_ = false;
    group_space_ = PathSpace{};
    sub_problem_.reset();
    subcomm_.reset();
    if (groups_ > 1) {
      group_ = static_cast<PetscInt>(static_cast<std::int64_t>(rank) * groups_ / size);  // contiguous blocks
      MPI_Comm_split(comm, static_cast<int>(group_), rank, subcomm_.out());
      sub_problem_ = p.clone_on(subcomm_.get());
      int ok = sub_problem_ ? 1 : 0, all_ok = 0;
      MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm);
      if (all_ok) {
        int grank = 0;
        MPI_Comm_rank(subcomm_.get(), &grank);
        group_rank_ = grank;
        group_space_.setup(*sub_problem_, q_, (q_ + groups_ - 1) / groups_);
        upper_copy_.setup(directions_[0], group_space_.x0, group_);
        lower_copy_.setup(y_prev_, group_space_.y0, group_);
        sub_problem_->reset_counts();
        grouped_ = true;
      } else {
        sub_problem_.reset();
        subcomm_.reset();
      }
    }
    if (!grouped_) groups_ = 1;
    full_space_ = PathSpace{};
    if (!grouped_) full_space_.setup(p, 0, 0);
  }

  /// Adds the oracle calls of every group's sub-problem (counted once per group) to the problem's counts.
  void collect_group_counts(BilevelProblem& p, MPI_Comm comm) {
    const OracleCounts& c = sub_problem_->counts();
    std::int64_t local[7] = {c.grad_f, c.grad_g, c.hvp, c.jvp, c.samples, c.value_f, c.value_g};
    if (group_rank_ != 0) std::fill(local, local + 7, 0);
    std::int64_t total[7];
    MPI_Allreduce(local, total, 7, MPI_INT64_T, MPI_SUM, comm);
    OracleCounts sum = p.counts();
    add_counts(sum, total);
    p.set_counts(sum);
    sub_problem_->reset_counts();
  }

  PzoboOptions o_;
  PetscReal a_ = 0, beta_ = -1, mu_ = 0;
  PetscInt n_ = 0, q_ = 0, batch_ = 0, upper_batch_ = 0;
  bool derived_ = false;
  std::uint64_t seed_ = 0;
  std::vector<PetscInt> batch_indices_;
  std::vector<Batch> batches_;
  std::vector<PetscReal> c_;  // δ_jᵀ ∇_y f, j = 1..Q, then the main path's residual (groups)
  BatchSampler inner_, outer_;
  petsc::VecHandle y_prev_, main_y_, main_y_prev_, fy_, fx_;
  std::vector<petsc::VecHandle> directions_;  // u_1..u_Q on the full communicator
  // Groups (declaration order: the communicator outlives the problem and the vectors on it).
  OwnedComm subcomm_;
  std::shared_ptr<BilevelProblem> sub_problem_;
  PathSpace group_space_, full_space_;
  GroupCopy upper_copy_, lower_copy_;
  PetscInt groups_ = 1, group_ = 0, group_rank_ = 0;
  bool grouped_ = false;
};

}  // namespace

std::unique_ptr<Algorithm> create_pzobo() { return std::make_unique<Pzobo>(); }

}  // namespace bilevel
