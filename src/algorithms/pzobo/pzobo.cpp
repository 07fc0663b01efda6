/// pzobo: PZOBO and PZOBO-S, hypergradients from zeroth-order differences of the lower-level iterates.
///
/// Algorithm (Alg. 1 of the reference; algorithms.md §2.3). Outer iteration k, warm start (y⁰, y⁻¹) = (y_k,
/// y_{k−1}):
///   paths        y_N(x_k) and y_N(x_k + μ u_j), j = 1..Q: N steps y_{t+1} = y_t − a M ∇_y g(x, y_t; B_t)
///                + β (y_t − y_{t−1}) on one minibatch sequence B_1..B_N (full batches: PZOBO; M = I in the
///                paper);
///   differences  c_j = δ_jᵀ ∇_y f(x_k, y_N),  δ_j = (y_N(x_k + μ u_j) − y_N(x_k)) / μ;
///   estimate     h_k = ∇_x f(x_k, y_N) + (1/Q) Σ_j c_j u_j;
///   step         x_{k+1} = P(x_k − ξ h_k) (the upper stepper),  (y_{k+1}, y_k) = (y_N, y_{N−1}).
/// One-step JVP mode (N = 1 and -bilevel_pzobo_one_step_projection, the default then). All paths start at y⁰,
/// so with M symmetric and z = M ∇_y f, c_j = −(a/μ) ⟨∇_y g(x_k + μ u_j, y⁰; B_1) − ∇_y g(x_k, y⁰; B_1), z⟩.
/// This mode takes its limit μ → 0, c_j = −a u_jᵀ J z with J z = ∇_x⟨∇_y g(x_k, y⁰; B_1), z⟩ from one
/// lower_jvp: no perturbed path, and μ plays no role. With Q = d coordinate (or orthogonal) directions the
/// estimate is h_k = ∇_x f − a J M ∇_y f on the support, the implicit hypergradient ∇_x f − J H⁻¹ ∇_y f with
/// a M in place of H⁻¹ and costing one JVP: not a zeroth-order estimate. Explicit paths
/// (-bilevel_pzobo_one_step_projection 0, or N > 1) are the paper's method.
/// Additions to the paper: directions on the entries of x the minibatches read (Capability::PerSampleUpper),
/// orthogonal and coordinate directions (blocks/zeroth_order/directions.hpp), preconditioned paths
/// (Capability::LowerPreconditioner: the cheap M, built at (x_k, y_k)), heavy-ball paths, and paths on
/// sub-communicators (blocks/zeroth_order/paths.hpp). Defaults: L and μ_g from LowerSpectrum (the problem's
/// bound or hint, else SLEPc; μ_g re-estimated when L(x) drifts by 25%, or every
/// -bilevel_pzobo_spectrum_every iterations, and a, β, N re-derived, since x moves the lower curvature), the
/// optimal heavy ball a = 4/(√L + √μ_g)², β = ((√κ − 1)/(√κ + 1))², N = ⌈2√κ⌉ in [10, 200]; without a
/// positive μ_g, a = 1/L, β = 0, N = 10; preconditioned (the default when the problem has M and the batch is
/// full or >= 128 rows), a = 1/λ_max(M H_B), the largest of the full batch's and three minibatches' power
/// estimates (a minibatch's can exceed the full one's: with the full-batch step the paths diverged on 20
/// Newsgroups after ~150 iterations), renewed every 10 iterations, β = 0, N = 10. Directions: when x has d <=
/// 32 entries, a full orthogonal frame (Q = d, (1/Q) Σ u_j u_jᵀ = I exactly, so the estimate has no sampling
/// error); else the paper's Q = 10 Gaussian directions. Minibatch 1024: the heavy-ball paths (β ≈ 0.9 on
/// ijcnn1) amplify the minibatch noise; with 256 x wandered (test log-loss on ijcnn1 0.222 after 200
/// iterations, 0.204 with 1024; docs/benchmarks.md). Reference: D. Sow, K. Ji, Y. Liang, "On the convergence
/// theory for Hessian-free bilevel algorithms", NeurIPS 2022, arXiv 2110.07004. Options -bilevel_pzobo_:
/// inner_steps, inner_step, inner_momentum, directions, direction_type, smoothing, batch_size, path_groups,
/// support, precondition, one_step_projection, spectrum_every. Measurements: docs/benchmarks.md.
#include <petscviewer.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/blocks/zeroth_order/directions.hpp"
#include "bilevel/blocks/zeroth_order/paths.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Entries of x the directions perturb.
enum class Support { Auto, Full, Batch };
constexpr std::array<Named<Support>, 3> kSupports{
    {{"auto", Support::Auto}, {"full", Support::Full}, {"batch", Support::Batch}}};

/// Settings; option keys -bilevel_pzobo_<name> in brackets; 0 / −1: derived (file comment).
struct PzoboOptions {
  PetscInt inner_steps = 0;       ///< [inner_steps] N
  PetscReal inner_step = 0;       ///< [inner_step] a
  PetscReal inner_momentum = -1;  ///< [inner_momentum] β (0: gradient descent)
  PetscInt directions = -1;  ///< [directions] Q; −1: d if d <= kFrameMax else 10; 0: one per coordinate
  bool auto_type = true;     ///< [direction_type auto] orthogonal when Q >= d (a full frame), else Gaussian
  DirectionType direction_type = DirectionType::Gaussian;  ///< [direction_type]
  PetscReal smoothing = 0.01;                              ///< [smoothing] μ of the explicit paths
  PetscInt batch_size = 1024;       ///< [batch_size] minibatch when -bilevel_batch_size is unset (0: full)
  PetscInt path_groups = 0;         ///< [path_groups] sub-communicators for the paths (0: auto)
  Support support = Support::Auto;  ///< [support] auto | full | batch (the minibatches' entries of x)
  bool precondition =
      false;  ///< [precondition] paths step with −a M ∇_y g; not given: when the problem has M
  bool one_step_projection = true;  ///< [one_step_projection] N = 1: c_j from one JVP (μ → 0)
  PetscInt spectrum_every = 0;      ///< [spectrum_every] re-estimate μ_g every k iterations (0: on L drift)
};

class Pzobo : public Algorithm {
 public:
  std::string_view type() const override { return "pzobo"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.inner_steps =
        opts.integer("inner_steps", o_.inner_steps, "steps N per path (0: derived from L, mu_g)", 0);
    o_.inner_step =
        opts.real("inner_step", o_.inner_step, "step a of the paths (0: derived from L, mu_g)", 0.0);
    o_.inner_momentum =
        opts.real("inner_momentum", o_.inner_momentum, "heavy-ball momentum (-1: derived; 0: GD)", -1.0, 1.0);
    o_.directions = opts.integer(
        "directions",
        o_.directions,
        "directions Q (-1: d if x has d <= 32 entries, else 10; 0: one per coordinate of the support)",
        -1);
    std::vector<std::string> types = direction_type_names();
    types.insert(types.begin(), "auto");
    const std::string type = opts.choice(
        "direction_type",
        o_.auto_type ? "auto" : to_string(o_.direction_type),
        types,
        "auto (orthogonal if Q >= d, else Gaussian), i.i.d. Gaussian (paper), orthogonal, or coordinates "
        "sqrt(d) e_i");
    o_.auto_type = type == "auto";
    o_.direction_type = o_.auto_type ? DirectionType::Gaussian : *direction_type_from_string(type);
    o_.smoothing = opts.real(
        "smoothing", o_.smoothing, "difference step mu of the explicit paths (unused by the JVP mode)", 0.0);
    if (!(o_.smoothing > 0)) throw InputError("option -bilevel_pzobo_smoothing must be > 0");
    if (o_.directions == 0 && o_.auto_type) o_.direction_type = DirectionType::Coordinate;
    if (o_.directions == 0 && o_.direction_type != DirectionType::Coordinate)
      throw InputError(
          "option -bilevel_pzobo_directions 0 (one direction per coordinate of the support) needs "
          "-bilevel_pzobo_direction_type coordinate; got " +
          type);
    o_.batch_size =
        opts.integer("batch_size", o_.batch_size, "minibatch if -bilevel_batch_size unset (0: full)", 0);
    o_.path_groups =
        opts.integer("path_groups", o_.path_groups, "sub-communicators for the paths (0: auto, 1: none)", 0);
    precondition_choice_ =
        opts.boolean_or_auto("precondition",
                             "paths step with -a M grad_y g, cheap M (auto: when the problem has M and the "
                             "lower batch is full or has >= 128 rows)");
    o_.one_step_projection = opts.boolean(
        "one_step_projection",
        o_.one_step_projection,
        "with N = 1, c_j = -a u_j^T J M grad_y f from one JVP (the limit mu -> 0; smoothing unused)");
    o_.spectrum_every = opts.integer(
        "spectrum_every",
        o_.spectrum_every,
        "re-estimate mu_g (SLEPc) every k iterations for the derived a, beta, N (0: only when L drifts)",
        0);
    o_.support =
        read_choice(opts,
                    "support",
                    o_.support,
                    kSupports,
                    "entries of x perturbed: all (paper), the minibatches' (auto: batch if allowed)");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const bool stochastic = has(p.capabilities(), Capability::Stochastic);
    const DatasetSizes n = p.dataset_sizes();
    batch_ = stochastic ? (ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size) : 0;
    if (batch_ >= n.lower) batch_ = 0;
    o_.precondition = precondition_choice_.value_or(preconditioned_steps_by_default(p, batch_));
    if (o_.precondition && !has(p.capabilities(), Capability::LowerPreconditioner))
      throw InputError(
          "option -bilevel_pzobo_precondition needs a problem with a lower-level preconditioner (" +
          p.name() + " has none)");
    const PathParameters given{o_.inner_step, o_.inner_momentum, o_.inner_steps};
    use_spectrum_ = false;
    if (!o_.precondition && (given.a <= 0 || given.beta < 0 || given.steps <= 0)) {
      try {  // L and μ of the lower Hessian (μ from SLEPc where the problem gives none)
        spectrum_.estimate(p, ctx.x, ctx.y);
        use_spectrum_ = true;
      } catch (const NumericalFailure&) {
        throw;
      } catch (const Error&) {  // no positive λ_min: gradient-descent paths (derive_path_parameters)
      }
    }
    const PathParameters pp =
        use_spectrum_
            ? path_parameters_from_spectrum(given, spectrum_.lipschitz(), spectrum_.strong_convexity())
            : derive_path_parameters(p, ctx.x, ctx.y, given, o_.precondition, batch_, ctx.seed);
    a_ = pp.a, beta_ = pp.beta, n_ = pp.steps, derived_ = pp.derived;
    upper_batch_ = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    if (!stochastic || upper_batch_ >= n.upper) upper_batch_ = 0;
    batches_.setup(n_, batch_);
    s_ = StepSamplers(ctx.seed);
    const bool per_sample = has(p.capabilities(), Capability::PerSampleUpper);
    if (o_.support == Support::Batch && !per_sample)
      throw InputError(
          "option -bilevel_pzobo_support batch needs a problem whose x holds one weight per training "
          "sample (hyperclean); allowed here: auto, full");
    const bool restricted = batch_ > 0 && per_sample && o_.support != Support::Full;
    PetscInt dx = 0;
    BILEVEL_PETSC_CALL(VecGetSize(ctx.x, &dx));
    q_ = o_.directions > 0    ? o_.directions
         : o_.directions == 0 ? (restricted ? batch_ * n_ : dx)  // 0: every coordinate once
                              : (!restricted && dx <= kFrameMax ? dx : kPaperDirections);
    type_ = o_.auto_type && o_.directions != 0
                ? (!restricted && q_ >= dx ? DirectionType::Orthogonal : DirectionType::Gaussian)
                : o_.direction_type;
    mu_ = o_.smoothing;
    projected_ = n_ == 1 && o_.one_step_projection;
    dirs_.setup(type_, q_, dx, restricted, ctx.seed);
    int size = 1;
    MPI_Comm_size(ctx.comm, &size);
    const PetscInt groups = projected_ ? 1 : (o_.path_groups > 0 ? o_.path_groups : size);
    paths_.setup(p, projected_ ? 0 : q_, groups);
    // Direction vectors on the full communicator: what Gaussian and orthogonal estimates combine, and what
    // explicit coordinate paths on it perturb x with.
    const bool vectors = type_ != DirectionType::Coordinate || (!projected_ && paths_.groups() == 1);
    constexpr double kMaxDirectionEntries = 268435456;  // 2 GiB of direction vectors
    if (vectors && static_cast<double>(q_) * static_cast<double>(dx) > kMaxDirectionEntries)
      throw InputError("pzobo: " + std::to_string(q_) + " direction vectors of size " + std::to_string(dx) +
                       " exceed 2 GiB; lower -bilevel_pzobo_directions, or use -bilevel_pzobo_direction_type "
                       "coordinate with -bilevel_pzobo_inner_steps 1 (directions never formed)");
    u_.clear();
    for (PetscInt j = 0; vectors && j < q_; ++j) u_.push_back(p.create_upper_vec());
    u_raw_.assign(u_.begin(), u_.end());
    for (petsc::VecHandle* v : {&y_prev_, &y_, &y_last_, &fy_, &mz_}) *v = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    jz_ = p.create_upper_vec();
    BILEVEL_PETSC_CALL(VecCopy(ctx.y, y_prev_));  // zero initial velocity
    c_.assign(static_cast<std::size_t>(q_), 0.0);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    StepResult r;
    const DatasetSizes n = p.dataset_sizes();
    if (use_spectrum_) follow_spectrum(p, ctx);
    if (o_.precondition && derived_)  // a = 1/λ_max(M H_B) follows x (e^x moves against the data's curvature)
      if (const auto L = renewed_preconditioned_lipschitz(p, ctx.x, ctx.y, batch_, ctx.seed, ctx.iteration))
        a_ = 1.0 / *L;
    batches_.draw(s_.lower, n.lower);  // B_1..B_N, shared by every path (PZOBO-S)
    const Batch ub = s_.upper.draw(n.upper, upper_batch_);
    dirs_.draw(ctx.iteration, batches_.indices());  // u_1..u_Q on the support
    if (!u_raw_.empty()) dirs_.form(u_raw_);
    // Paths: y_N(x_k), and y_N(x_k + μ u_j) unless the differences come from one JVP.
    const PathSteps steps{batches_.batches(), a_, beta_, o_.precondition};
    r.lower_residual = paths_.run(ctx.x, ctx.y, y_prev_, dirs_, u_raw_, mu_, steps, y_, y_last_);
    p.upper_grad(ctx.x, y_, ub, fx_, fy_);  // ∇_x f, ∇_y f at (x_k, y_N)
    // Differences c_j.
    if (projected_)
      jvp_differences(ctx);  // −a u_jᵀ J M ∇_y f
    else
      paths_.differences(y_, fy_, mu_, c_);  // δ_jᵀ ∇_y f
    // Estimate h_k = ∇_x f + (1/Q) Σ_j c_j u_j, and the step.
    dirs_.combine(c_, 1.0 / static_cast<PetscReal>(q_), u_raw_, fx_);
    BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &r.hypergradient_norm));
    require_finite(
        r.hypergradient_norm, ConvergedReason::DivergedNaN, "the norm of the hypergradient estimate");
    r.inner_iterations = n_ * (projected_ ? 1 : q_ + 1);
    BILEVEL_PETSC_CALL(VecCopy(y_, ctx.y));  // y_{k+1} = y_N(x_k), warm start of the next paths
    BILEVEL_PETSC_CALL(VecCopy(y_last_, y_prev_));
    ctx.upper.step(ctx.x, fx_);  // x_{k+1} = P(x_k − ξ h_k)
    r.hypergradient = fx_;
    return r;
  }

  void declare_state(StateRegistry& state) override {
    state.add("pzobo.y_prev", y_prev_.get());  // the paths' momentum term
    state.add("pzobo.", s_);
    spectrum_.declare_state(state, "pzobo.spectrum.");  // μ of the derived a, β and N
    state.add("pzobo.a", a_);                           // the preconditioned paths' renewed step
  }

  void view(PetscViewer viewer) const override {
    const PetscInt groups = paths_.groups();
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "pzobo: zeroth-order response-Jacobian hypergradient (Sow, Ji & Liang, NeurIPS 2022, arXiv "
        "2110.07004, "
        "Alg. 1)\n"
        "  inner_steps %d, inner_step %g, inner_momentum %g (%s), directions %d %s, smoothing %g%s,\n"
        "  batch %d (upper %d), directions on %s, steps %s\n",
        static_cast<int>(n_ > 0 ? n_ : o_.inner_steps),
        a_ > 0 ? a_ : o_.inner_step,
        beta_ >= 0 ? beta_ : o_.inner_momentum,
        derived_ ? "derived from L and mu_g" : "given or gradient descent",
        static_cast<int>(q_ > 0 ? q_ : o_.directions),
        to_string(type_),
        o_.smoothing,
        projected_ ? " (unused)" : "",
        static_cast<int>(batch_),
        static_cast<int>(upper_batch_),
        dirs_.restricted() ? "the minibatches' entries of x" : "every entry of x",
        o_.precondition ? "preconditioned (-a M grad, cheap M)" : "plain (M = I)"));
    if (use_spectrum_)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                                "  lower spectrum: L %g, mu %g (mu re-estimated when L "
                                                "drifts 25%%, or every %d iterations; a, beta, N follow)\n",
                                                spectrum_.lipschitz(),
                                                spectrum_.strong_convexity(),
                                                static_cast<int>(o_.spectrum_every)));
    if (projected_)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer,
          "  differences: one step, limit mu -> 0 from one JVP, c_j = -a u_j^T J M grad_y f (no perturbed "
          "path; with Q = d: grad_x f - a J M grad_y f, an implicit-type hypergradient with M for H^-1)\n"));
    else
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
          viewer,
          "  differences: explicit paths (the paper), side by side %s%s\n",
          groups > 1 ? "on sub-communicators, path groups " : "on the full communicator",
          groups > 1 ? std::to_string(groups).c_str() : ""));
  }

 private:
  /// a, β and N from the lower spectrum at x_k: L renewed (the problem's bound L(x)), μ re-estimated when L
  /// drifted (LowerSpectrum::refresh); the minibatch sequence follows N. Collective.
  void follow_spectrum(BilevelProblem& p, AlgorithmContext& ctx) {
    spectrum_.refresh_periodic(p, ctx.x, ctx.y, ctx.iteration, o_.spectrum_every);
    const PathParameters pp =
        path_parameters_from_spectrum({o_.inner_step, o_.inner_momentum, o_.inner_steps},
                                      spectrum_.lipschitz(),
                                      spectrum_.strong_convexity());
    a_ = pp.a, beta_ = pp.beta, derived_ = pp.derived;
    if (pp.steps != n_ && !projected_) {
      n_ = pp.steps;
      batches_.setup(n_, batch_);
    }
  }
  /// Directions by default: a full orthogonal frame (no sampling error) up to this d, else the paper's 10.
  static constexpr PetscInt kFrameMax = 32, kPaperDirections = 10;

  /// The one-step JVP mode's c_j = −a u_jᵀ J z, z = M ∇_y f (M as the paths used it), J z = ∇_x⟨∇_y g(x_k,
  /// y⁰; B_1), z⟩: one lower_jvp at the paths' start (ctx.y is still y⁰). Collective.
  void jvp_differences(AlgorithmContext& ctx) {
    Vec z = fy_;
    if (o_.precondition) {
      ctx.problem.lower_precondition(fy_, mz_);  // M symmetric: ⟨M ∇_y g, ∇_y f⟩ = ⟨∇_y g, M ∇_y f⟩
      z = mz_;
    }
    ctx.problem.lower_jvp(ctx.x, ctx.y, batches_.batches()[0], z, jz_);
    dirs_.project(jz_, u_raw_, c_);
    for (PetscReal& c : c_) c *= -a_;
  }

  PzoboOptions o_;
  PetscReal a_ = 0, beta_ = -1, mu_ = 0;
  PetscInt n_ = 0, q_ = 0, batch_ = 0, upper_batch_ = 0;
  bool derived_ = false, projected_ = false, use_spectrum_ = false;
  std::optional<bool> precondition_choice_;  // -bilevel_pzobo_precondition given (nullopt: auto)
  DirectionType type_ = DirectionType::Gaussian;
  LowerSpectrum spectrum_;
  StepSamplers s_;
  BatchSequence batches_;
  Directions dirs_;
  PerturbedPaths paths_;
  std::vector<petsc::VecHandle> u_;  // u_1..u_Q on the full communicator (when formed)
  std::vector<Vec> u_raw_;
  std::vector<PetscReal> c_;  // c_1..c_Q
  petsc::VecHandle y_prev_, y_, y_last_, fy_, mz_, fx_, jz_;
};

}  // namespace

std::unique_ptr<Algorithm> create_pzobo() {
  return std::make_unique<Pzobo>();
}

}  // namespace bilevel
