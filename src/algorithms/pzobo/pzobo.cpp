/// PZOBO / PZOBO-S: Hessian-free hypergradients from a zeroth-order estimate of the response Jacobian
/// (Sow, Ji & Liang, "On the convergence theory for Hessian-free bilevel algorithms", NeurIPS 2022,
/// arXiv 2110.07004, Alg. 1; algorithms.md §2.3).
///
/// Per outer iteration k, from the warm start (y⁰, y⁻¹) = (y_k, y_{k-1}) and one minibatch sequence
/// B_1..B_N shared by every path (PZOBO-S; full batches for PZOBO):
///   main path       y_N(x_k): N steps y_{t+1} = y_t − a M ∇_y g(x_k, y_t; B_t) + β (y_t − y_{t−1});
///   Q paths         y_N(x_k + μ u_j), the same N steps from the same start, u_j ~ N(0, I_S);
///   δ_j = (y_N(x_k + μ u_j) − y_N(x_k)) / μ,   h_k = ∇_x f(x_k, y_N) + (1/Q) Σ_j u_j (δ_jᵀ ∇_y f(x_k, y_N));
///   x_{k+1} = P(x_k − ξ h_k) (the upper stepper),  y_{k+1} = y_N(x_k).
/// M = I in the paper. u_j's entries are counter_normal(seed, stream 7, (k Q + j − 1) dx + i) of the global
/// index i, so the directions do not depend on the rank count. Cost per iteration: N (Q + 1) ∇_y g (and
/// N (Q + 1) applications of M) + 1 ∇f; no HVP/JVP. The Q + 1 paths advance side by side, one step at a
/// time, so M is applied to all their gradients in one call (lower_precondition_multi).
///
/// Support S of the directions (-bilevel_pzobo_support). The paper draws u_j ~ N(0, I_dx). When x holds one
/// weight per training sample (Capability::PerSampleUpper, hyperclean), the paths read x only on
/// S = ∪_t B_t, so the columns of the N-step Jacobian ∂y_N/∂x outside S are zero and u_j ~ N(0, I_S) has the
/// same expectation E[u uᵀ] ∂y_Nᵀ ∇_y f while its variance no longer grows with dx: the per-coordinate
/// signal-to-noise of the estimate is about √(Q/|S|) instead of √(Q/dx) (0.014 with Q = 10 and the
/// 50,000 sample weights of the default hyperclean, where the full-support method stays at chance).
/// "auto" restricts when the problem allows it and the paths use minibatches.
/// Direction types (-bilevel_pzobo_direction_type): the paper's Gaussian ones; orthogonal blocks; and
/// coordinates u_j = √d e_i drawn without replacement (d = |support|), a standard zeroth-order estimator
/// that, with Q = d (-bilevel_pzobo_directions 0), gives the finite-difference Jacobian product exactly.
///
/// Inner solver. The paper's analysis uses gradient descent (β = 0); its experiments use momentum SGD.
/// The bias of the N-step Jacobian decays like (1 − aμ_g)^N for gradient descent and like
/// (1 − 2/√κ)^N for heavy ball, so with μ_g known (ProblemHints::lower_strong_convexity) the defaults take
/// the optimal heavy-ball pair a = 4/(√L + √μ_g)², β = ((√κ − 1)/(√κ + 1))², κ = L/μ_g, and
/// N = ⌈2√κ⌉ clamped to [10, 200]; the heavy-ball state (y_k, y_{k-1}) carries over between outer
/// iterations (restarting it every N steps amplifies y for N ≲ 2√κ). Without μ_g: gradient descent with
/// a = 1/L and N = 10 (the paper's setting).
/// Preconditioned paths (-bilevel_pzobo_precondition, our addition): M is the problem's cheap preconditioner
/// (PreconditionerKind::Cheap) built once per outer iteration at (x_k, y_k) and shared by all paths, so the
/// paths are one fixed map of x; a defaults to 1/λ_max(M H) at the start, β to 0, N to 10. With M ≈ H⁻¹
/// the one-step Jacobian −a M ∂_x∇_y g already points along the implicit one, −H⁻¹ ∂_x∇_y g, where plain
/// steps on an ill-conditioned lower level (hyperclean: κ ≈ 1e5) see only its top eigendirections.
/// One-step paths (N = 1, -bilevel_pzobo_one_step_projection, on by default): every path starts from the
/// same (y⁰, y⁻¹), so the momentum term and y⁰ cancel in the differences and, with M symmetric,
///   δ_jᵀ ∇_y f = −(a/μ) (∇_y g(x_k + μ u_j, y⁰; B_1) − ∇_y g(x_k, y⁰; B_1))ᵀ M ∇_y f,
/// an exact rewrite of the Q finite differences that needs the perturbed gradients only projected on one
/// vector z = M ∇_y f (lower_grad_y_dot_multi: one forward pass over B_1 and no backward one on hyperclean),
/// and M twice instead of Q + 1 times. The perturbed y_1 are never formed. With coordinate directions not
/// even x_k + μ u_j is: lower_grad_y_dot_coordinates takes the coordinates, and on hyperclean (a weight moves
/// only its own row's term) all Q = dx differences cost one forward pass over the data. That makes the
/// deterministic method with Q = dx affordable: its estimate is then the exact finite-difference
/// derivative of the one-step map, −a ∂_x∇_y g M ∇_y f, i.e. an implicit hypergradient with M in place of
/// H⁻¹, and hyperclean's tuned settings use it (docs/benchmarks.md, "pzobo on hyperclean").
/// Problem-tuned settings come from cluster/tuned/PROBLEM/pzobo.opts (hyperclean: docs/benchmarks.md).
///
/// Parallelism. With -bilevel_pzobo_path_groups G > 1 (default: as many as the ranks and Q + 1 allow, when
/// the problem can be rebuilt on a sub-communicator, BilevelProblem::clone_on) the Q + 1 paths run on G
/// sub-communicators (contiguous rank blocks; the main path on group 0, path j on group j mod G):
/// (x, y⁰, y⁻¹) go to the groups, (y_N, y_{N−1}) come back from group 0, (y_N, ∇_y f) go out again and the
/// Q numbers δ_jᵀ∇_y f come back in one reduction; no path communicates outside its group. Otherwise all
/// paths run on the full communicator.
/// Options (-bilevel_pzobo_*): inner_steps, inner_step, inner_momentum, directions, direction_type, smoothing,
/// batch_size, path_groups, support, precondition, one_step_projection.
#include <petscviewer.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {
namespace {

constexpr std::uint64_t kStreamDirections = 7;   // counter_normal stream of the directions u_j
constexpr std::uint64_t kStreamCoordinates = 8;  // counter_uniform stream of the coordinate directions

/// Settings of Pzobo. 0 / −1 mean "derived" as the file comment says. Options database keys in brackets.
struct PzoboOptions {
  PetscInt inner_steps = 0;       ///< [-bilevel_pzobo_inner_steps] N steps per path; 0: derived
  PetscReal inner_step = 0;       ///< [-bilevel_pzobo_inner_step] a; 0: derived from L (and μ_g)
  PetscReal inner_momentum = -1;  ///< [-bilevel_pzobo_inner_momentum] heavy-ball β; −1: derived, 0: plain GD
  PetscInt directions = 10;       ///< [-bilevel_pzobo_directions] Q directions per iteration; 0: one per
                                  ///< coordinate of the support (d = dx, or b N when restricted; coordinate type)
  /// [-bilevel_pzobo_direction_type gaussian|orthogonal|coordinate] u_j i.i.d. N(0, I) (the paper), or
  /// Gaussian rows orthonormalised in blocks of min(Q, d) and scaled to norm √d, or u_j = √d e_i for
  /// coordinates i drawn without replacement in blocks of min(Q, d) (d = |support|; both keep
  /// E[u_j u_jᵀ] = I with a smaller variance, and are exact, J_Nᵀ∇_y f, when Q is a multiple of d)
  std::string direction_type = "gaussian";
  PetscReal smoothing = 0.01;     ///< [-bilevel_pzobo_smoothing] μ of the finite difference
  PetscInt batch_size = 256;      ///< [-bilevel_pzobo_batch_size] PZOBO-S minibatch when -bilevel_batch_size is unset
  PetscInt path_groups = 0;       ///< [-bilevel_pzobo_path_groups] sub-communicators for the Q paths; 0: auto
  /// [-bilevel_pzobo_support auto|full|batch] the entries of x the directions perturb: all of them (the
  /// paper), or only those the paths' minibatches read (Capability::PerSampleUpper); auto: batch when the
  /// problem has that property and the paths use minibatches.
  std::string support = "auto";
  /// [-bilevel_pzobo_precondition] paths take steps −a M ∇_y g with the problem's M ≈ H⁻¹
  /// (Capability::LowerPreconditioner), built once per outer iteration at (x_k, y_k) and shared by all paths
  bool precondition = false;
  /// [-bilevel_pzobo_one_step_projection] with N = 1, form δ_jᵀ∇_y f from gradient projections (file comment)
  /// instead of running the Q perturbed paths; the same estimate up to rounding
  bool one_step_projection = true;
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

/// What the paths need, on one communicator (the full one, or this rank's group).
struct PathSpace {
  BilevelProblem* problem = nullptr;
  petsc::VecHandle x0;                           // upper layout: x_k (groups)
  std::vector<petsc::VecHandle> x;               // x_k + μ u_j of this space's perturbed paths
  std::vector<petsc::VecHandle> directions;      // u_1..u_Q (groups only; else the full ones)
  petsc::VecHandle y0, y0_prev, y_main, y_main_prev, fy;  // lower layout
  std::vector<petsc::VecHandle> ends, ends_prev;  // (y_t, y_{t−1}) of the perturbed paths
  std::vector<petsc::VecHandle> g, mg;            // ∇_y g and M ∇_y g of every path (main path included)
  std::vector<Vec> g_raw, mg_raw;                 // the same as Vecs, for lower_precondition_multi
  /// q directions (0 on the full communicator) and `paths` perturbed paths; `projected`: only their x and
  /// two lower buffers (one-step projection). Collective.
  void setup(BilevelProblem& p, PetscInt q, PetscInt paths, bool projected = false) {
    problem = &p;
    x0 = p.create_upper_vec();
    auto make = [](std::vector<petsc::VecHandle>& v, PetscInt n, auto create) {
      v.clear();
      for (PetscInt j = 0; j < n; ++j) v.push_back(create());
    };
    make(directions, q, [&] { return p.create_upper_vec(); });
    make(x, paths, [&] { return p.create_upper_vec(); });
    for (auto* v : {&ends, &ends_prev}) make(*v, projected ? 0 : paths, [&] { return p.create_lower_vec(); });
    for (auto* v : {&g, &mg}) make(*v, projected ? 2 : paths + 1, [&] { return p.create_lower_vec(); });
    for (petsc::VecHandle* v : {&y0, &y0_prev, &y_main, &y_main_prev, &fy}) *v = p.create_lower_vec();
    g_raw.assign(g.begin(), g.end());
    mg_raw.assign(mg.begin(), mg.end());
  }
};

/// One path: its x and its heavy-ball state (y_t, y_{t−1}), advanced in place.
struct PathState {
  Vec x;
  petsc::VecHandle* y;
  petsc::VecHandle* y_prev;
};

/// Q coordinates of `pool` (global indices, d = |pool|) for outer iteration k, in blocks of min(Q, d) drawn
/// without replacement (partial Fisher-Yates on counter_uniform(seed, 8, k Q + t)), so every rank and rank
/// count draws the same ones. `perm` is scratch. Not collective.
void draw_coordinates(std::span<const PetscInt> pool, PetscInt q, std::uint64_t seed, PetscInt k,
                      std::vector<PetscInt>& perm, std::vector<PetscInt>& coords) {
  const std::size_t d = pool.size(), uq = static_cast<std::size_t>(q);
  BILEVEL_ASSERT(d > 0);
  coords.clear();
  std::size_t t = 0;
  while (coords.size() < uq) {
    perm.assign(pool.begin(), pool.end());
    const std::size_t block = std::min(uq - coords.size(), d);
    for (std::size_t r = 0; r < block; ++r, ++t) {
      const double u = counter_uniform(seed, kStreamCoordinates, static_cast<std::uint64_t>(k) * uq + t);
      const std::size_t pick = r + std::min(d - r - 1, static_cast<std::size_t>(u * static_cast<double>(d - r)));
      std::swap(perm[r], perm[pick]);
      coords.push_back(perm[r]);
    }
  }
}

/// Modified Gram-Schmidt on the columns of the row-major d × q matrix `a`, in blocks of min(q, d)
/// consecutive columns, each column then scaled to norm √d (so E[u uᵀ] stays I). Not collective.
void orthogonalize_blocks(std::vector<PetscReal>& a, std::size_t d, std::size_t q) {
  const std::size_t block = std::min(q, d);
  const PetscReal radius = std::sqrt(static_cast<PetscReal>(d));
  for (std::size_t j = 0; j < q; ++j) {
    for (std::size_t i = j - j % block; i < j; ++i) {  // earlier directions of the same block
      PetscReal c = 0;
      for (std::size_t r = 0; r < d; ++r) c += a[r * q + i] * a[r * q + j];
      for (std::size_t r = 0; r < d; ++r) a[r * q + j] -= c / static_cast<PetscReal>(d) * a[r * q + i];  // |u_i|² = d
    }
    PetscReal norm = 0;
    for (std::size_t r = 0; r < d; ++r) norm += a[r * q + j] * a[r * q + j];
    norm = std::sqrt(norm);
    if (norm > 0)
      for (std::size_t r = 0; r < d; ++r) a[r * q + j] *= radius / norm;
  }
}

/// The Q directions of outer iteration k: entry i (global) of u_j is counter_normal(seed, 7, (k Q + j) dx + i)
/// (j 0-based); with `orthogonal`, each block of min(Q, d) consecutive directions is orthonormalised
/// (modified Gram-Schmidt) and scaled to norm √d.
/// Full support (d = dx): the entries are drawn where they are owned and orthonormalised with VecDot.
/// Restricted to `support` (sorted global indices, d = |support|; 0 elsewhere): every rank draws the d × Q
/// block and orthonormalises it redundantly, which needs no communication and gives the same directions
/// at every rank count. Collective on the directions' communicator. `work` is scratch.
/// Coordinate directions (`coords` not empty): u_j = scale e_{coords_j}. Not collective then.
void make_directions(std::span<petsc::VecHandle> u, std::uint64_t seed, PetscInt k, bool orthogonal, bool restricted,
                     std::span<const PetscInt> support, std::vector<PetscReal>& work,
                     std::span<const PetscInt> coords = {}, PetscReal scale = 0) {
  const auto q = static_cast<PetscInt>(u.size());
  PetscInt lo = 0, hi = 0, n = 0;
  BILEVEL_PETSC_CALL(VecGetSize(u[0], &n));
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(u[0], &lo, &hi));
  if (!coords.empty()) {
    for (PetscInt j = 0; j < q; ++j) {
      petsc::WriteView w(u[static_cast<std::size_t>(j)]);
      std::fill(w.data(), w.data() + w.size(), 0.0);
      const PetscInt i = coords[static_cast<std::size_t>(j)];
      if (i >= lo && i < hi) w[i - lo] = scale;
    }
    return;
  }
  auto base = [&](PetscInt j) {
    return (static_cast<std::uint64_t>(k) * static_cast<std::uint64_t>(q) + static_cast<std::uint64_t>(j)) *
           static_cast<std::uint64_t>(n);
  };
  if (restricted) {
    const std::size_t d = support.size(), uq = static_cast<std::size_t>(q);
    const auto first = static_cast<std::size_t>(std::lower_bound(support.begin(), support.end(), lo) - support.begin());
    const auto last = static_cast<std::size_t>(std::lower_bound(support.begin(), support.end(), hi) - support.begin());
    // Rows of the d × Q block that this rank needs: all of them to orthonormalise, its own otherwise.
    const std::size_t r0 = orthogonal ? 0 : first, r1 = orthogonal ? d : last;
    work.assign(d * uq, 0.0);
    for (std::size_t r = r0; r < r1; ++r)
      for (std::size_t j = 0; j < uq; ++j)
        work[r * uq + j] = counter_normal(seed, kStreamDirections, base(static_cast<PetscInt>(j)) + static_cast<std::uint64_t>(support[r]));
    if (orthogonal) orthogonalize_blocks(work, d, uq);
    for (std::size_t j = 0; j < uq; ++j) {
      petsc::WriteView w(u[j]);
      std::fill(w.data(), w.data() + w.size(), 0.0);
      for (std::size_t r = first; r < last; ++r) w[support[r] - lo] = work[r * uq + j];
    }
    return;
  }
  for (PetscInt j = 0; j < q; ++j) {
    petsc::WriteView w(u[static_cast<std::size_t>(j)]);
    for (PetscInt i = lo; i < hi; ++i) w[i - lo] = counter_normal(seed, kStreamDirections, base(j) + static_cast<std::uint64_t>(i));
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

/// Runs `paths` side by side for the N steps of `batches`:
///   y_{t+1} = y_t − a M ∇_y g(x, y_t; B_t) + β (y_t − y_{t−1})
/// from each path's (y, y_prev), in place (the handles are swapped so that y holds y_N and y_prev y_{N−1}).
/// At every step all paths take their gradient on the same B_t, then (when `precondition`) M, the problem's
/// preconditioner of the last setup, is applied to all gradients in one lower_precondition_multi call;
/// otherwise M = I. All paths start from the same (y, y_prev) values (Alg. 1), so their first gradients,
/// at one y and several x, come from one lower_grad_y_multi call. `g`/`mg` (raw) hold at least paths.size()
/// buffers, `xs` is scratch. Returns ||∇_y g|| of the first path's last step. Collective.
PetscReal run_paths(BilevelProblem& p, std::span<const PathState> paths, std::span<const Vec> g,
                    std::span<const Vec> mg, std::vector<Vec>& xs, bool precondition, std::span<const Batch> batches,
                    PetscReal a, PetscReal beta) {
  petsc::ScopedEvent ev(petsc::events().lower_solve);
  const std::size_t m = paths.size();
  if (m == 0) return -1;
  xs.clear();
  for (const PathState& path : paths) xs.push_back(path.x);
  bool first = true;
  for (const Batch& b : batches) {
    if (first) p.lower_grad_y_multi(xs, *paths[0].y, b, g.first(m));  // ∇_y g(x_j, y⁰; B_1), one shared y⁰
    else
      for (std::size_t j = 0; j < m; ++j) p.lower_grad_y(paths[j].x, *paths[j].y, b, g[j]);  // ∇_y g(x, y_t; B_t)
    first = false;
    if (precondition) p.lower_precondition_multi(g.first(m), mg.first(m));                  // M ∇_y g
    const std::span<const Vec> step = precondition ? mg : g;
    for (std::size_t j = 0; j < m; ++j) {
      petsc::VecHandle& y = *paths[j].y;
      petsc::VecHandle& y_prev = *paths[j].y_prev;
      BILEVEL_PETSC_CALL(VecAXPBYPCZ(y_prev, 1.0 + beta, -a, -beta, y, step[j]));  // (1+β)y_t − aM∇ − βy_{t−1}
      std::swap(y, y_prev);
    }
  }
  PetscReal norm = -1;
  if (!batches.empty()) BILEVEL_PETSC_CALL(VecNorm(g[0], NORM_2, &norm));
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
    o_.directions = opts.integer("directions", o_.directions,
                                 "directions Q per outer iteration (0: one per coordinate of the support, with "
                                 "direction_type coordinate)", 0);
    o_.direction_type = opts.choice("direction_type", o_.direction_type, {"gaussian", "orthogonal", "coordinate"},
                                    "directions: i.i.d. Gaussian (paper), orthogonal blocks of norm sqrt(d), or "
                                    "coordinates sqrt(d) e_i drawn without replacement");
    o_.smoothing = opts.real("smoothing", o_.smoothing, "finite-difference step mu", 0.0);
    if (!(o_.smoothing > 0)) throw InputError("option -bilevel_pzobo_smoothing must be > 0");
    if (o_.directions == 0 && o_.direction_type != "coordinate")
      throw InputError("option -bilevel_pzobo_directions 0 (one direction per coordinate of the support) needs "
                       "-bilevel_pzobo_direction_type coordinate; got " + o_.direction_type);
    o_.batch_size = opts.integer("batch_size", o_.batch_size,
                                 "PZOBO-S minibatch used when -bilevel_batch_size is not set (0: full)", 0);
    o_.path_groups = opts.integer("path_groups", o_.path_groups,
                                  "sub-communicators running the Q paths side by side (0: auto, 1: none)", 0);
    o_.precondition = opts.boolean("precondition", o_.precondition,
                                   "paths take preconditioned steps -a M grad_y g (problems with a preconditioner)");
    o_.one_step_projection = opts.boolean("one_step_projection", o_.one_step_projection,
                                          "with one inner step, form the Q differences from gradient projections "
                                          "on M grad_y f instead of running the perturbed paths (same estimate)");
    o_.support = opts.choice("support", o_.support, {"auto", "full", "batch"},
                             "entries of x perturbed: all (paper) or those the minibatches read (auto: batch "
                             "when the problem allows)");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    if (o_.precondition && !has(p.capabilities(), Capability::LowerPreconditioner))
      throw InputError("option -bilevel_pzobo_precondition needs a problem with a lower-level preconditioner (" +
                       p.name() + " has none)");
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
    const bool per_sample = has(p.capabilities(), Capability::PerSampleUpper);
    if (o_.support == "batch" && !per_sample)
      throw InputError("option -bilevel_pzobo_support batch needs a problem whose x holds one weight per training "
                       "sample (hyperclean); allowed here: auto, full");
    restricted_ = batch_ > 0 && per_sample && o_.support != "full";
    BILEVEL_PETSC_CALL(VecGetSize(ctx.x, &dx_));
    if (o_.directions == 0) q_ = restricted_ ? batch_ * n_ : dx_;  // every coordinate of the support once
    support_.reserve(static_cast<std::size_t>(batch_ * n_));
    inner_ = BatchSampler(ctx.seed, 1);
    outer_ = BatchSampler(ctx.seed, 4);
    seed_ = ctx.seed;

    y_prev_ = p.create_lower_vec();
    main_y_ = p.create_lower_vec();
    main_y_prev_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    projected_ = n_ == 1 && o_.one_step_projection;
    coordinate_ = o_.direction_type == "coordinate";
    sparse_ = projected_ && coordinate_;
    constexpr double kMaxDirectionEntries = 268435456;  // 2 GiB of direction vectors
    if (!sparse_ && static_cast<double>(q_) * static_cast<double>(dx_) > kMaxDirectionEntries)
      throw InputError("pzobo: " + std::to_string(q_) + " direction vectors of size " + std::to_string(dx_) +
                       " exceed 2 GiB; lower -bilevel_pzobo_directions, or use -bilevel_pzobo_direction_type "
                       "coordinate with -bilevel_pzobo_inner_steps 1 (directions never formed)");
    directions_.clear();  // not formed at all in the sparse mode (Q may reach dx)
    for (PetscInt j = 0; j < (sparse_ ? 0 : q_); ++j) directions_.push_back(p.create_upper_vec());
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
    if (restricted_) {  // S = ∪_t B_t, the entries of x that the paths read
      support_.assign(batch_indices_.begin(), batch_indices_.end());
      std::sort(support_.begin(), support_.end());
      support_.erase(std::unique(support_.begin(), support_.end()), support_.end());
    }
    const Batch ub = upper_batch_ > 0 ? outer_.next(n.upper, upper_batch_) : Batch::all();
    const bool orthogonal = o_.direction_type == "orthogonal";
    if (coordinate_) {  // Q coordinates of the support (or of all of x), u_j = √d e_i
      if (!restricted_ && pool_.size() != static_cast<std::size_t>(dx_)) {
        pool_.resize(static_cast<std::size_t>(dx_));
        for (PetscInt i = 0; i < dx_; ++i) pool_[static_cast<std::size_t>(i)] = i;
      }
      const std::span<const PetscInt> pool = restricted_ ? std::span<const PetscInt>(support_) : std::span<const PetscInt>(pool_);
      draw_coordinates(pool, q_, seed_, ctx.iteration, perm_, coords_);
      coord_scale_ = std::sqrt(static_cast<PetscReal>(pool.size()));
    }
    const bool sparse = sparse_;  // the directions are never formed as vectors
    if (!sparse)
      make_directions(directions_, seed_, ctx.iteration, orthogonal, restricted_, support_, work_, coords_, coord_scale_);  // u_1..u_Q
    std::fill(c_.begin(), c_.end(), 0.0);
    if (o_.precondition && !grouped_) p.lower_preconditioner_setup(ctx.x, ctx.y, PreconditionerKind::Cheap);  // M at (x_k, y_k)
    if (projected_) r.lower_residual = projected_one_step(ctx, ub, sparse);
    else if (grouped_) r.lower_residual = grouped_paths(ctx, ub, orthogonal);
    else r.lower_residual = sequential_paths(ctx, ub);
    // h_k = ∇_x f + (1/Q) Σ_j (δ_jᵀ ∇_y f) u_j  (Alg. 1, hypergradient estimate)
    if (sparse) {  // u_j = √d e_{i_j}: only the drawn coordinates change
      PetscInt lo = 0, hi = 0;
      BILEVEL_PETSC_CALL(VecGetOwnershipRange(fx_, &lo, &hi));
      petsc::WriteView w(fx_);
      for (PetscInt j = 0; j < q_; ++j) {
        const PetscInt i = coords_[static_cast<std::size_t>(j)];
        if (i >= lo && i < hi) w[i - lo] += c_[static_cast<std::size_t>(j)] / static_cast<PetscReal>(q_) * coord_scale_;
      }
    } else {
      for (PetscInt j = 0; j < q_; ++j)
        BILEVEL_PETSC_CALL(VecAXPY(fx_, c_[static_cast<std::size_t>(j)] / static_cast<PetscReal>(q_),
                                   directions_[static_cast<std::size_t>(j)]));
    }
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
        "  batch %d (upper %d), directions on %s, steps %s, paths %s\n",
        static_cast<int>(n_ > 0 ? n_ : o_.inner_steps), a_ > 0 ? a_ : o_.inner_step,
        beta_ >= 0 ? beta_ : o_.inner_momentum, derived_ ? "derived from L and mu_g" : "given or gradient descent",
        static_cast<int>(q_ > 0 ? q_ : o_.directions), o_.direction_type.c_str(), o_.smoothing, static_cast<int>(batch_), static_cast<int>(upper_batch_),
        restricted_ ? "the minibatches' entries of x" : "every entry of x",
        o_.precondition ? "preconditioned (-a M grad, cheap M)" : "plain (M = I)",
        projected_ ? (sparse_ ? "one step, differences from one coordinate-projection pass (no perturbed path formed)"
                              : "one step, differences from gradient projections on M grad_y f (no perturbed path formed)")
                   : grouped_ ? "side by side on sub-communicators" : "side by side on the full communicator"));
    if (grouped_)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, "  path groups %d\n", static_cast<int>(groups_)));
  }

 private:
  /// One-step paths by projection (file comment): main_y_ = y_1(x_k), fx_/fy_ = ∇f there, and
  /// c_j = −(a/μ) (⟨∇_y g(x_k + μ u_j, y⁰; B_1), z⟩ − ⟨∇_y g(x_k, y⁰; B_1), z⟩) with z = M ∇_y f.
  /// Returns ||∇_y g(x_k, y⁰; B_1)||. Collective.
  /// With `sparse` (coordinate directions u_j = √d e_{i_j}) the Q projections come from one
  /// lower_grad_y_dot_coordinates call with step μ√d, and no x_k + μ u_j is formed.
  PetscReal projected_one_step(AlgorithmContext& ctx, const Batch& ub, bool sparse) {
    BilevelProblem& p = ctx.problem;
    PathSpace& s = full_space_;
    petsc::ScopedEvent ev(petsc::events().lower_solve);
    const Batch& b = batches_[0];
    Vec g0 = s.g[0], step = g0;
    p.lower_grad_y(ctx.x, ctx.y, b, g0);  // ∇_y g(x_k, y⁰; B_1)
    if (o_.precondition) {
      p.lower_precondition(g0, s.mg[0]);  // M ∇_y g
      step = s.mg[0];
    }
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, main_y_));
    BILEVEL_PETSC_CALL(VecAXPBYPCZ(main_y_, -a_, -beta_, 1.0 + beta_, step, y_prev_));  // y_1 = (1+β)y⁰ − aM∇ − βy⁻¹
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, main_y_prev_));
    p.upper_grad(ctx.x, main_y_, ub, fx_, fy_);  // ∇_x f, ∇_y f at (x_k, y_1(x_k))
    Vec z = fy_;
    if (o_.precondition) {
      p.lower_precondition(fy_, s.mg[1]);  // z = M ∇_y f (M symmetric)
      z = s.mg[1];
    }
    const auto cq = std::span<PetscReal>(c_.data(), static_cast<std::size_t>(q_));
    if (sparse) {  // c_j = −a √d (⟨∇_y g(x_k + μ√d e_i), z⟩ − ⟨∇_y g(x_k), z⟩) / (μ√d)
      p.lower_grad_y_dot_coordinates(ctx.x, ctx.y, b, z, mu_ * coord_scale_, coords_, cq);
      for (PetscReal& c : cq) c *= -a_ * coord_scale_;
    } else {
      projected_differences(p, ctx, b, g0, z, cq);
    }
    PetscReal norm = 0;
    BILEVEL_PETSC_CALL(VecNorm(g0, NORM_2, &norm));
    return norm;
  }

  /// c_j = −(a/μ) (⟨∇_y g(x_k + μ u_j, y⁰; B_1), z⟩ − ⟨g0, z⟩) with the direction vectors. Collective.
  void projected_differences(BilevelProblem& p, AlgorithmContext& ctx, const Batch& b, Vec g0, Vec z,
                             std::span<PetscReal> cq) {
    PathSpace& s = full_space_;
    PetscReal d0 = 0;
    BILEVEL_PETSC_CALL(VecDot(g0, z, &d0));
    xs_.clear();
    for (PetscInt j = 0; j < q_; ++j) {
      const auto uj = static_cast<std::size_t>(j);
      BILEVEL_PETSC_CALL(VecWAXPY(s.x[uj], mu_, directions_[uj], ctx.x));  // x_k + μ u_j
      xs_.push_back(s.x[uj]);
    }
    p.lower_grad_y_dot_multi(xs_, ctx.y, b, z, cq);
    for (PetscReal& c : cq) c = -a_ / mu_ * (c - d0);
  }

  /// All Q + 1 paths side by side on the full communicator: main_y_ = y_N(x_k), fx_/fy_ = ∇f there,
  /// c_j = δ_jᵀ ∇_y f. Returns ||∇_y g|| of the main path's last step. Collective.
  PetscReal sequential_paths(AlgorithmContext& ctx, const Batch& ub) {
    BilevelProblem& p = ctx.problem;
    PathSpace& s = full_space_;
    // Main path y_N(x_k) and the Q paths y_N(x_k + μ u_j), all from (y_k, y_{k-1}) (Alg. 1, inner loop).
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, main_y_));
    BILEVEL_PETSC_CALL(VecCopy(y_prev_, main_y_prev_));
    paths_.assign(1, PathState{ctx.x, &main_y_, &main_y_prev_});
    for (PetscInt j = 0; j < q_; ++j) {
      const auto uj = static_cast<std::size_t>(j);
      BILEVEL_PETSC_CALL(VecWAXPY(s.x[uj], mu_, directions_[uj], ctx.x));  // x_k + μ u_j
      BILEVEL_PETSC_CALL(VecCopy(ctx.y, s.ends[uj]));
      BILEVEL_PETSC_CALL(VecCopy(y_prev_, s.ends_prev[uj]));
      paths_.push_back(PathState{s.x[uj], &s.ends[uj], &s.ends_prev[uj]});
    }
    const PetscReal residual = run_paths(p, paths_, s.g_raw, s.mg_raw, xs_, o_.precondition, batches_, a_, beta_);
    p.upper_grad(ctx.x, main_y_, ub, fx_, fy_);  // ∇_x f, ∇_y f at (x_k, y_N(x_k))
    for (PetscInt j = 0; j < q_; ++j) {
      Vec end = s.ends[static_cast<std::size_t>(j)];
      BILEVEL_PETSC_CALL(VecAXPY(end, -1.0, main_y_));  // μ δ_j = y_N(x_k + μ u_j) − y_N(x_k)
      PetscReal dot = 0;
      BILEVEL_PETSC_CALL(VecDot(end, fy_, &dot));
      c_[static_cast<std::size_t>(j)] = dot / mu_;  // δ_jᵀ ∇_y f
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
    make_directions(s.directions, seed_, ctx.iteration, orthogonal, restricted_, support_, work_, coords_, coord_scale_);  // u_1..u_Q on the group
    if (o_.precondition) s.problem->lower_preconditioner_setup(s.x0, s.y0, PreconditionerKind::Cheap);  // M at (x_k, y_k), on the group
    // This group's paths side by side: the main one y_N(x_k) on group 0, then y_N(x_k + μ u_j) for its j.
    paths_.clear();
    if (group_ == 0) {
      BILEVEL_PETSC_CALL(VecCopy(s.y0, s.y_main));
      BILEVEL_PETSC_CALL(VecCopy(s.y0_prev, s.y_main_prev));
      paths_.push_back(PathState{s.x0, &s.y_main, &s.y_main_prev});
    }
    std::size_t slot = 0;
    for (PetscInt j = 0; j < q_; ++j) {
      if ((j + 1) % groups_ != group_) continue;
      BILEVEL_PETSC_CALL(VecWAXPY(s.x[slot], mu_, s.directions[static_cast<std::size_t>(j)], s.x0));  // x_k + μ u_j
      BILEVEL_PETSC_CALL(VecCopy(s.y0, s.ends[slot]));
      BILEVEL_PETSC_CALL(VecCopy(s.y0_prev, s.ends_prev[slot]));
      paths_.push_back(PathState{s.x[slot], &s.ends[slot], &s.ends_prev[slot]});
      ++slot;
    }
    const PetscReal norm = run_paths(*s.problem, paths_, s.g_raw, s.mg_raw, xs_, o_.precondition, batches_, a_, beta_);
    const PetscReal residual = group_ == 0 ? norm : 0;
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
    if (o_.precondition) {  // a = 1/λ_max(M H) at the start; β = 0 and N = 10 unless given
      derived_ = o_.inner_step == 0;
      a_ = o_.inner_step > 0 ? o_.inner_step : 1.0 / estimate_preconditioned_lipschitz(p, ctx.x, ctx.y, 20, PreconditionerKind::Cheap);
      beta_ = std::max<PetscReal>(o_.inner_momentum, 0);
      n_ = o_.inner_steps > 0 ? o_.inner_steps : 10;
      return;
    }
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
    if (projected_) groups_ = 1;  // no paths to distribute
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
        group_space_.setup(*sub_problem_, q_, (q_ + groups_ - 1) / groups_);  // group 0: ≤ ⌈Q/G⌉ + main
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
    if (!grouped_) full_space_.setup(p, 0, sparse_ ? 0 : q_, projected_);
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
  bool derived_ = false, restricted_ = false, projected_ = false, coordinate_ = false, sparse_ = false;
  PetscInt dx_ = 0;
  PetscReal coord_scale_ = 0;      // √d of the coordinate directions
  std::vector<PetscInt> coords_;   // their coordinates i_1..i_Q (global indices)
  std::vector<PetscInt> pool_, perm_;  // 0..dx−1 (full support) and scratch of draw_coordinates
  std::uint64_t seed_ = 0;
  std::vector<PathState> paths_;   // the paths of one iteration (scratch)
  std::vector<Vec> xs_;            // their x (scratch)
  std::vector<PetscReal> work_;    // the d × Q block of restricted directions
  std::vector<PetscInt> support_;  // S = ∪_t B_t (sorted) when the directions are restricted to it
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
