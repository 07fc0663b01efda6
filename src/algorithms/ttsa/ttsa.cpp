/// TTSA: two-timescale stochastic approximation (Hong, Wai, Wang & Yang, SIAM J. Optim. 2023), and its
/// double-loop predecessor BSA (Ghadimi & Wang 2018) as a variant (algorithms.md §3.4, benchopt's ttsa.py
/// and bsa.py).
///
/// Per outer iteration k:
///   1. T SGD steps on y at x_k with step β_k = β_0/(k+1)^{a_y} (fresh training batch each): TTSA T = 1 (one
///      step per iteration, the fast time scale), BSA T = inner_steps (the inner loop);
///   2. v by HIA, the Hessian-inverse approximation with random truncation: draw p uniform in {0, …, Q−1},
///      v = Q η Π_{i=1}^{p} (I − η H(x_k, y_{k+1}; B_i)) ∇_y f(x_k, y_{k+1}; ζ)  (fresh batch B_i per
///      factor): an unbiased estimate of the Q-term Neumann series η Σ_{q<Q} (I − ηH)^q ∇_y f (truncation
///      random); with truncation expected, that series itself (Q products, no truncation noise);
///   3. x_{k+1} = P(x_k − γ_k (∇_x f(ζ) − J(x_k, y_{k+1}; B_J) v)), γ_k = γ_0/(k+1)^{a_x}, γ_0 the upper
///      stepper's step.
/// Schedules: TTSA a_x = 3/5, a_y = 2/5 (the paper's two time scales); BSA a_x = a_y = 1/2 (benchopt). They
/// exist for stochastic oracles; with full batches (no samples: every oracle exact) the defaults are
/// constant steps and the expected truncation, the only noise left being the method's own.
/// Defaults: β_0 = 1/L (problem bound L(x) where it has one, else hint or SLEPc); η = 2/(L + μ) where the
/// problem states μ (the fastest Richardson series), else 1/L; Q = ⌈ln 100/(η μ)⌉ where μ is known (series
/// bias (1 − ημ)^Q <= 1e-2; at most kMaxSeriesTerms = 5,000, as stocbio), else 10 (benchopt). No v is carried
/// between iterations (the method's design), so every iteration pays Q ≈ (κ/2) ln 100 products: on the
/// condition-100 quadratic 5,000 iterations are ~1.2M HVPs, several minutes at 2 ranks
/// (tests/algorithms/test_ttsa.cpp states the limit). Cost: T ∇_y g + p HVP (E p = (Q − 1)/2; Q expected) + 1
/// JVP + 1 ∇f. In the problem's preconditioner (Capability::LowerPreconditioner, -bilevel_ttsa_precondition,
/// default on; not in the papers): the SGD steps y <- y − β_k M ∇_y g and the series (HIA or expected) of (M
/// H)⁻¹ M = H⁻¹; β_0 = η = 1/λ_max(M H_B) (full batch and three minibatches, power steps), renewed every 10
/// iterations, Q = 10 (no μ of M H); docs/benchmarks.md, "Defaults on a second LIBSVM set", has the
/// measurement. M is built at (x_k, y_k) every iteration on full batches (one data pass against the
/// iteration's several) and with β_0 and η every 10 iterations on minibatches (a data pass against a few
/// batches' rows: rebuilt every iteration it took 45% of the time on ijcnn1's batches of 64).
/// Options (-bilevel_ttsa_*): variant, inner_steps, inner_step, neumann_steps, neumann_eta, truncation,
/// upper_decay, lower_decay, batch_size, precondition.
#include <petscviewer.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// TTSA (single loop) or BSA (inner loop).
enum class TtsaVariant { Ttsa, Bsa };
constexpr std::array<Named<TtsaVariant>, 2> kTtsaVariants{
    {{"ttsa", TtsaVariant::Ttsa}, {"bsa", TtsaVariant::Bsa}}};

/// How the Neumann series is truncated.
enum class Truncation { Auto, Random, Expected };
constexpr std::array<Named<Truncation>, 3> kTruncations{
    {{"auto", Truncation::Auto}, {"random", Truncation::Random}, {"expected", Truncation::Expected}}};

/// Settings of Ttsa. Options database keys in brackets.
struct TtsaOptions {
  TtsaVariant variant = TtsaVariant::Ttsa;  ///< [-bilevel_ttsa_variant ttsa|bsa]
  PetscInt inner_steps = 10;                ///< [-bilevel_ttsa_inner_steps] T of bsa (ttsa: 1)
  PetscReal inner_step = 0;                 ///< [-bilevel_ttsa_inner_step] β_0; 0: 1/L
  PetscInt neumann_steps = 0;               ///< [-bilevel_ttsa_neumann_steps] Q; 0: ⌈ln 100/(ημ)⌉ or 10
  PetscReal neumann_eta = 0;                ///< [-bilevel_ttsa_neumann_eta] η; 0: 2/(L+μ) or 1/L
  Truncation truncation = Truncation::Auto;  ///< [-bilevel_ttsa_truncation auto|random|expected]
  PetscReal upper_decay = -1;  ///< [-bilevel_ttsa_upper_decay] a_x; −1: 3/5 ttsa, 1/2 bsa, 0 full batch
  PetscReal lower_decay = -1;  ///< [-bilevel_ttsa_lower_decay] a_y; −1: 2/5 ttsa, 1/2 bsa, 0 full batch
  PetscInt batch_size = 64;    ///< [-bilevel_ttsa_batch_size] when -bilevel_batch_size is not given
  bool precondition = true;    ///< [-bilevel_ttsa_precondition] steps and series in the problem's M
};

class Ttsa : public Algorithm {
 public:
  std::string_view type() const override { return "ttsa"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.variant =
        read_choice(opts, "variant", o_.variant, kTtsaVariants, "TTSA (single loop) or BSA (inner loop)");
    o_.inner_steps = opts.integer("inner_steps", o_.inner_steps, "SGD steps on y per iteration (bsa)", 1);
    o_.inner_step = opts.real("inner_step", o_.inner_step, "step beta_0 on y (0: 1/L)", 0.0);
    o_.neumann_steps = opts.integer(
        "neumann_steps",
        o_.neumann_steps,
        "Q of the Neumann series (0: ceil(ln 100/(eta mu)) where mu is known, at most 5000; else 10)",
        0);
    o_.neumann_eta = opts.real(
        "neumann_eta", o_.neumann_eta, "Neumann scaling eta (0: 2/(L+mu) where mu is known, else 1/L)", 0.0);
    o_.truncation =
        read_choice(opts,
                    "truncation",
                    o_.truncation,
                    kTruncations,
                    "random (HIA) or expected (the Q-term series); auto: random with minibatches");
    o_.upper_decay = opts.real("upper_decay",
                               o_.upper_decay,
                               "a_x of gamma_0/(k+1)^a_x (-1: 0.6 ttsa, 0.5 bsa, 0 full batch)",
                               -1.0,
                               1.0);
    o_.lower_decay = opts.real("lower_decay",
                               o_.lower_decay,
                               "a_y of beta_0/(k+1)^a_y (-1: 0.4 ttsa, 0.5 bsa, 0 full batch)",
                               -1.0,
                               1.0);
    o_.batch_size = opts.integer(
        "batch_size", o_.batch_size, "minibatch size used when -bilevel_batch_size is not set (0: full)", 0);
    o_.precondition = opts.boolean("precondition",
                                   o_.precondition,
                                   "with a problem preconditioner M: SGD on y and the series in M, steps "
                                   "1/lambda_max(M H) (not in the papers)");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    pc_ = o_.precondition && has(p.capabilities(), Capability::LowerPreconditioner);
    const bool stochastic = has(p.capabilities(), Capability::Stochastic);
    batch_ = !stochastic ? 0 : (ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size);
    const bool need_l = o_.inner_step == 0 || o_.neumann_eta == 0 || o_.neumann_steps == 0;
    const std::optional<PetscReal> bound = need_l && !pc_ ? p.lower_lipschitz_bound(ctx.x) : std::nullopt;
    follow_bound_ = bound.has_value();
    // with M: L = λ_max(M H) by power steps at the start, the largest of the full batch's and three
    // minibatches' (M's spectrum does not follow e^x as H's does; a minibatch's can exceed the full one's)
    const PetscReal L = !need_l ? 0
                        : pc_ ? estimate_preconditioned_lipschitz_minibatch(p, ctx.x, ctx.y, batch_, ctx.seed)
                        : bound ? *bound
                                : resolve_lower_lipschitz(p, ctx.x, ctx.y);
    beta0_ = o_.inner_step > 0 ? o_.inner_step : 1.0 / L;
    const std::optional<PetscReal> mu =
        pc_ ? std::nullopt : p.hints().lower_strong_convexity;  // μ of H says nothing about M H
    // η = 2/(L + μ) where μ is known: the Richardson step with the fastest series, ratio (κ−1)/(κ+1)
    eta_ = o_.neumann_eta > 0 ? o_.neumann_eta : mu && *mu > 0 && *mu < L ? 2.0 / (L + *mu) : 1.0 / L;
    q_ = o_.neumann_steps;
    if (q_ == 0)  // bias of the series (1 − ημ)^Q <= 1e-2, at most kMaxSeriesTerms
      q_ = mu && *mu > 0 ? static_cast<PetscInt>(std::min<double>(std::ceil(std::log(100.0) / (eta_ * *mu)),
                                                                  static_cast<double>(kMaxSeriesTerms)))
                         : 10;
    upper_batch_ = !stochastic ? 0 : (ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_);
    const bool minibatches = draws_minibatches(p, batch_, upper_batch_);
    const bool ttsa = o_.variant == TtsaVariant::Ttsa;
    ax_ = o_.upper_decay >= 0 ? o_.upper_decay : (!minibatches ? 0.0 : ttsa ? 0.6 : 0.5);
    ay_ = o_.lower_decay >= 0 ? o_.lower_decay : (!minibatches ? 0.0 : ttsa ? 0.4 : 0.5);
    ctx.upper.replace_default_decay(0);  // a_x is the schedule: the stepper's default decay would repeat it
    random_ = o_.truncation == Truncation::Auto ? minibatches : o_.truncation == Truncation::Random;
    steps_ = ttsa ? 1 : o_.inner_steps;
    gd_.setup(ctx.y);
    p_ = p.create_lower_vec();
    hp_ = p.create_lower_vec();
    mhp_ = p.create_lower_vec();
    v_ = p.create_lower_vec();
    fy_ = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    jv_ = p.create_upper_vec();
    neumann_.setup(ctx.y);
    m_current_ = false;
    m_x_.reset();
    m_y_.reset();
    if (pc_ && !full_lower_batch(p, batch_)) {
      m_x_ = p.create_upper_vec();
      m_y_ = p.create_lower_vec();
    }
    s_ = StepSamplers(ctx.seed);
    truncations_ = BatchSampler(ctx.seed, SamplerStream::Coordinates);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const DatasetSizes n = p.dataset_sizes();
    const auto k1 = static_cast<PetscReal>(ctx.iteration + 1);
    if (follow_bound_) {
      const PetscReal L = *p.lower_lipschitz_bound(ctx.x);
      if (o_.inner_step == 0) beta0_ = 1.0 / L;
      if (o_.neumann_eta == 0) eta_ = 1.0 / L;  // (a problem with a bound L(x) states no μ here)
    }
    // with M: λ_max(M H_B) renewed every 10 iterations, since x lowers e^x and raises the minibatch
    // curvature against M's diagonal (the user's inner_step and neumann_eta stay)
    bool renewed = false;  // M set up at (x_k, y_k) by the renewal
    if (pc_)
      if (const auto L = renewed_preconditioned_lipschitz(
              p, ctx.x, ctx.y, batch_, ctx.seed, ctx.iteration, kRenewPeriod)) {
        if (o_.inner_step == 0) beta0_ = 1.0 / *L;
        if (o_.neumann_eta == 0) eta_ = 1.0 / *L;
        renewed = true;
      }
    StepResult r;
    if (pc_) setup_preconditioner(ctx, renewed);
    // 1. y_{k+1}: T SGD steps of β_k (TTSA: one), in M with a preconditioner
    r.lower_residual = gd_.run(p, ctx.x, ctx.y, steps_, beta0_ * std::pow(k1, -ay_), &s_.lower, batch_, pc_);
    require_finite(r.lower_residual, ConvergedReason::DivergedInnerSolve, "the norm of the lower gradient");
    const Batch fb = s_.upper.draw(n.upper, upper_batch_);
    p.upper_grad(ctx.x, ctx.y, fb, fx_, fy_);  // ∇_x f, ∇_y f at (x_k, y_{k+1}) on ζ
    // 2. v ≈ H⁻¹ ∇_y f
    if (random_) {
      // HIA: p uniform in {0..Q−1}, v = Q η Π_{i=1}^{p} (I − η H(B_i)) ∇_y f; in M: Q η Π (I − η M H(B_i)) M
      // ∇_y f
      const PetscInt depth = q_ > 1 ? truncations_.next(q_, 1).indices[0] : 0;
      if (pc_)
        p.lower_precondition(fy_, p_);
      else
        BILEVEL_PETSC_CALL(VecCopy(fy_, p_));
      for (PetscInt i = 0; i < depth; ++i) {
        p.lower_hvp(ctx.x, ctx.y, s_.hessian.draw(n.lower, batch_), p_, hp_);
        if (pc_) {
          p.lower_precondition(hp_, mhp_);
          BILEVEL_PETSC_CALL(VecAXPY(p_, -eta_, mhp_));  // p <- (I − η M H(B_i)) p
        } else {
          BILEVEL_PETSC_CALL(VecAXPY(p_, -eta_, hp_));  // p <- (I − η H(B_i)) p
        }
      }
      BILEVEL_PETSC_CALL(VecAXPBY(v_, static_cast<PetscReal>(q_) * eta_, 0.0, p_));
      r.inner_iterations = depth;
      last_depth_ = depth;
    } else {
      // the expectation: η Σ_{q<Q} (I − ηH)^q ∇_y f (Q − 1 products)
      neumann_.solve(p, ctx.x, ctx.y, fy_, v_, q_ - 1, eta_, &s_.hessian, batch_, pc_);
      r.inner_iterations = q_ - 1;
    }
    // 3. h = ∇_x f − J v, x <- P(x − γ_k h)
    const Batch jb = s_.jacobian.draw(n.lower, batch_);
    p.lower_jvp(ctx.x, ctx.y, jb, v_, jv_);
    BILEVEL_PETSC_CALL(VecAXPY(fx_, -1.0, jv_));
    BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &r.hypergradient_norm));
    require_finite(
        r.hypergradient_norm, ConvergedReason::DivergedNaN, "the norm of the hypergradient estimate");
    r.linear_solution = v_;
    if (ax_ > 0)
      BILEVEL_PETSC_CALL(VecScale(fx_, std::pow(k1, -ax_)));
    else
      r.hypergradient = fx_;  // unscaled: the estimate x moved along
    ctx.upper.step(ctx.x, fx_);
    return r;
  }

  void declare_state(StateRegistry& state) override {
    state.add("ttsa.", s_);
    state.add("ttsa.sampler_truncation", truncations_);
    state.add("ttsa.beta0", beta0_);
    state.add("ttsa.eta", eta_);
    if (m_x_) {  // the point of M's last renewal on minibatches
      state.add("ttsa.m_x", m_x_);
      state.add("ttsa.m_y", m_y_);
    }
  }

  void view(PetscViewer viewer) const override {
    const bool ttsa = o_.variant == TtsaVariant::Ttsa;
    BILEVEL_PETSC_CALL(
        PetscViewerASCIIPrintf(viewer,
                               ttsa ? "ttsa: TTSA, two-timescale stochastic approximation (Hong, "
                                      "Wai, Wang & Yang, SIAM J. Optim. 2023)\n"
                                    : "ttsa: BSA, bilevel stochastic approximation (Ghadimi & "
                                      "Wang 2018)\n"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    BILEVEL_PETSC_CALL(
        PetscViewerASCIIPrintf(viewer,
                               "variant %s: %d SGD steps on y of beta_0/(k+1)^%g, beta_0 %g%s%s\n",
                               name_of(o_.variant, kTtsaVariants),
                               static_cast<int>(steps_),
                               ay_,
                               beta0_,
                               o_.inner_step > 0 ? ""
                               : pc_             ? " (1/lambda_max(M H))"
                                                 : " (1/L)",
                               pc_ ? "; steps and series in the problem's M" : ""));
    BILEVEL_PETSC_CALL(
        PetscViewerASCIIPrintf(viewer,
                               "Neumann series: Q = %d terms, eta %g, truncation %s; upper step "
                               "gamma_0/(k+1)^%g\n",
                               static_cast<int>(q_),
                               eta_,
                               random_ ? "random (HIA)" : "expected (all Q terms)",
                               ax_));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "lower batch %d, upper batch %d (0 = full)\n",
                                              static_cast<int>(batch_),
                                              static_cast<int>(upper_batch_)));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  static constexpr std::int64_t kRenewPeriod = 10;  // iterations between renewals of L and, on minibatches, M

  /// The problem's M for iteration k: at (x_k, y_k) on full batches; on minibatches at the point of the last
  /// renewal (every kRenewPeriod iterations, kept in m_x_, m_y_), rebuilt there after a restart or when
  /// something else built M since (a monitor's accurate hypergradient), so the iterates depend on neither.
  /// `renewed`: the step-size renewal has just set M up at (x_k, y_k). Collective.
  void setup_preconditioner(AlgorithmContext& ctx, bool renewed) {
    BilevelProblem& p = ctx.problem;
    if (!m_x_) {
      if (!renewed) p.lower_preconditioner_setup(ctx.x, ctx.y, PreconditionerKind::Cheap);
      return;
    }
    if (ctx.iteration % kRenewPeriod == 0) {
      if (!renewed) p.lower_preconditioner_setup(ctx.x, ctx.y, PreconditionerKind::Cheap);
      BILEVEL_PETSC_CALL(VecCopy(ctx.x, m_x_));
      BILEVEL_PETSC_CALL(VecCopy(ctx.y, m_y_));
    } else if (!m_current_ || p.lower_preconditioner_setups() != m_setups_) {
      p.lower_preconditioner_setup(
          m_x_, m_y_, PreconditionerKind::Cheap);  // M as the uninterrupted run has it
    }
    m_current_ = true;
    m_setups_ = p.lower_preconditioner_setups();
  }

  TtsaOptions o_;
  PetscReal beta0_ = 0, eta_ = 0, ax_ = 0, ay_ = 0;
  PetscInt q_ = 0, steps_ = 1, batch_ = 0, upper_batch_ = 0, last_depth_ = 0;
  bool follow_bound_ = false, random_ = false;
  bool pc_ = false;             // steps and series in the problem's M
  bool m_current_ = false;      // M set up at (m_x_, m_y_) in this process
  std::uint64_t m_setups_ = 0;  // the problem's set-up count right after that
  petsc::VecHandle m_x_, m_y_;  // minibatches with M: the point of M's last renewal (checkpointed)
  GradientSteps gd_;
  NeumannSolver neumann_;
  StepSamplers s_;
  BatchSampler truncations_;
  petsc::VecHandle p_, hp_, mhp_, v_, fy_, fx_, jv_;
};

}  // namespace

std::unique_ptr<Algorithm> create_ttsa() {
  return std::make_unique<Ttsa>();
}

}  // namespace bilevel
