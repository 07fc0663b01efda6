/// stocBiO: stochastic bilevel optimisation with a Neumann-series hypergradient (Ji, Yang & Liang,
/// ICML 2021; algorithms.md §3.3, paper formula).
///
/// Per outer iteration: T SGD steps on y (fresh training batch each), p_0 = ∇_y f(x, y; D_F) on a validation
/// batch, Neumann v = η Σ_{q=0}^{Q} p_q with p_{q+1} = p_q − η H(x, y; B_q) p_q (fresh batch each), then
/// x <- x − β (∇_x f − J(x, y; D_G) v).
/// Steps: the default 1/L (of the y-steps and of the series) comes from the problem's bound L(x) when it has
/// one (BilevelProblem::lower_lipschitz_bound, e.g. logreg), renewed every outer iteration; otherwise from a
/// SLEPc estimate at the start. A fixed 1/L diverged on ijcnn1 once x raised e^{x} (docs/benchmarks.md).
/// Defaults from the spectrum (docs/metrics.md): on full batches the series uses η = 2/(L + μ), the best
/// contraction 1 − η μ = (κ − 1)/(κ + 1) of I − η H; Q is the number of terms that brings the truncation
/// (I − η H)^{Q+1} below 1e-4 (1e-2 with minibatches, whose sampling error dominates), ln(1e-4)/ln(1 − η μ),
/// so the estimate's bias does not stall the outer loop (the paper's Q = 10 with η = 1/L leaves 0.99^{11} ≈
/// 90% of v* missing at κ = 100, and ||∇F|| stalled at 0.95 on the quadratic). μ is re-estimated when L(x)
/// drifts by 25%. With minibatches Q is also capped at ⌈n/b⌉ (n training samples, batch b): the series then
/// reads each sample about once, a longer one costs more than a full-batch product per term and its sampling
/// error no longer shrinks; on ijcnn1 (κ up to 1e3 as x lowers the regularisers) the uncapped Q reached
/// thousands of terms per iteration and 100 iterations did not end in 180 s (docs/baselines-single-loop.md).
/// In the problem's preconditioner (Capability::LowerPreconditioner, -bilevel_stocbio_precondition, default
/// on when the lower batch is full or has >= 128 rows, core's preconditioned_steps_by_default; not in the
/// paper): SGD on y and the series both in M, y <- y − θ M ∇_y g(B_t) and p_0 = M ∇_y f, p_{q+1} = p_q − η M
/// H(B_q) p_q (the series of (M H)⁻¹ M = H⁻¹), M built at (x_k, y_k) once per iteration, θ = η = 1/λ_max(M
/// H_B), the largest of the full batch's and three minibatches' power estimates, renewed every 10 iterations
/// (x moves e^x against the data's curvature); Q = 50 terms, at most ⌈n/b⌉. Where κ(H) is large (logreg
/// per-feature on 20 Newsgroups) the plain series stalls and the series in M does not (docs/benchmarks.md,
/// "Defaults on a second LIBSVM set"). Options (-bilevel_stocbio_*): inner_steps, inner_step, neumann_steps,
/// neumann_eta, batch_size, precondition.
#include <petscviewer.h>

#include <algorithm>
#include <cmath>

#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/linear_solver.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/lower_update.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of Stocbio. Options database keys in brackets.
struct StocbioOptions {
  PetscInt inner_steps = 10;   ///< [-bilevel_stocbio_inner_steps] T
  PetscReal inner_step = 0;    ///< [-bilevel_stocbio_inner_step] 0: 1/L
  PetscInt neumann_steps = 0;  ///< [-bilevel_stocbio_neumann_steps] Q; 0: from the spectrum (above)
  PetscReal neumann_eta = 0;   ///< [-bilevel_stocbio_neumann_eta] η; 0: 2/(L + μ) full batch, 1/L minibatch
  PetscInt batch_size = 256;   ///< [-bilevel_stocbio_batch_size] when -bilevel_batch_size is not given
  std::optional<bool> precondition;  ///< [-bilevel_stocbio_precondition] series in M (nullopt: auto)
};

class Stocbio : public Algorithm {
 public:
  std::string_view type() const override { return "stocbio"; }
  Capability requirements() const override { return Capability::None; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.inner_steps = opts.integer("inner_steps", o_.inner_steps, "SGD steps on y per outer iteration", 0);
    o_.inner_step = opts.real("inner_step", o_.inner_step, "step on y (0: 1/L estimated by SLEPc)", 0.0);
    o_.neumann_steps = opts.integer(
        "neumann_steps",
        o_.neumann_steps,
        "Neumann terms Q (0: truncation error 1e-4 from L and mu, at most n/batch with minibatches)",
        0);
    o_.neumann_eta = opts.real(
        "neumann_eta", o_.neumann_eta, "Neumann scaling eta (0: 2/(L+mu) full batch, 1/L minibatch)", 0.0);
    o_.batch_size = opts.integer(
        "batch_size", o_.batch_size, "minibatch size used when -bilevel_batch_size is not set (0: full)", 0);
    o_.precondition =
        opts.boolean_or_auto("precondition",
                             "with a problem preconditioner M: the series of (M H)^-1 M and y by the "
                             "problem's lower update (not in the paper; auto: when the lower batch is "
                             "full or has >= 128 rows)");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    batch_ = ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size;
    if (!has(p.capabilities(), Capability::Stochastic)) batch_ = 0;
    const PetscInt n = p.dataset_sizes().lower;
    // one pass over the training samples per series (file comment); no cap with full batches
    max_terms_ = batch_ > 0 && n > batch_ ? std::min<PetscInt>(kMaxSeriesTerms, (n + batch_ - 1) / batch_)
                                          : kMaxSeriesTerms;
    pc_ = resolve_preconditioned_steps(p, batch_, o_.precondition);
    need_spectrum_ = !pc_ && (o_.inner_step == 0 || o_.neumann_eta == 0 || o_.neumann_steps == 0);
    // With a bound L(x) from the problem, the default steps 1/L follow x (see step()).
    follow_bound_ = need_spectrum_ && p.lower_lipschitz_bound(ctx.x).has_value();
    LowerUpdateOptions lo;  // SGD on y (the paper's update, whatever the problem hints)
    lo.kind = LowerUpdateKind::Gd;
    if (pc_) {
      // both in the problem's M: steps 1/λ_max(M H) (power steps at the start) on y and in the series
      follow_bound_ = false;
      pc_lipschitz_ = estimate_preconditioned_lipschitz_minibatch(p, ctx.x, ctx.y, batch_, ctx.seed);
      eta_y_ = o_.inner_step > 0 ? o_.inner_step : 1.0 / pc_lipschitz_;
      eta_n_ = o_.neumann_eta > 0 ? o_.neumann_eta : 1.0 / pc_lipschitz_;
      q_ = o_.neumann_steps > 0 ? o_.neumann_steps : std::min(max_terms_, kPreconditionedTerms);
      lo.step = eta_y_;
      lo.precondition = true;
    } else {
      if (need_spectrum_) spectrum_.estimate(p, ctx.x, ctx.y);
      eta_y_ = o_.inner_step > 0 ? o_.inner_step : 1.0 / spectrum_.lipschitz();
      series_from_spectrum();
      lo.step = o_.inner_step > 0 || !follow_bound_ ? eta_y_ : 0;  // 0: LowerUpdate follows the bound
    }
    lo.steps = o_.inner_steps;
    lower_.setup(p, ctx.x, ctx.y, lo, o_.inner_steps, batch_);
    neumann_.setup(ctx.y);
    const PetscInt ubatch = ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_;
    implicit_.setup(p, ctx.seed, {batch_, ubatch});
  }

  StepResult step(AlgorithmContext& ctx) override {
    // T SGD steps on y, ∇f on D_F, Neumann v ≈ H⁻¹ ∇_y f (one fresh batch per term), x <- x − β (∇_x f − J v)
    if (follow_bound_) {
      spectrum_.refresh(ctx.problem, ctx.x, ctx.y);
      series_from_spectrum();
    }
    if (pc_) {
      refresh_preconditioned_steps(ctx);
      lower_.set_step(eta_y_);  // also after a restart, which restores eta_y_ after setup() set the step
    }
    return implicit_.run(ctx, lower_, [&](Vec b, Vec v, StepResult& r) {
      // M: the lower update's, at (x_k, y_k); built here only when it took no steps
      if (pc_ && lower_.steps() == 0) ctx.problem.lower_preconditioner_setup(ctx.x, ctx.y);
      neumann_.solve(ctx.problem,
                     ctx.x,
                     ctx.y,
                     b,
                     v,
                     q_,
                     eta_n_,
                     &implicit_.hessian_sampler(),
                     implicit_.batches().lower,
                     pc_);
      r.inner_iterations = q_;
    });
  }

  void declare_state(StateRegistry& state) override {
    implicit_.declare_state(state);
    spectrum_.declare_state(state, "stocbio.spectrum.");
    state.add("stocbio.eta_y", eta_y_);
    state.add("stocbio.eta_n", eta_n_);
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "stocbio: Neumann-series stochastic bilevel (Ji, Yang & Liang 2021)\n"
        "  inner_steps %d, inner_step %g, neumann_steps %d, neumann_eta %g, batch %d%s\n",
        static_cast<int>(o_.inner_steps),
        eta_y_,
        static_cast<int>(q_),
        eta_n_,
        static_cast<int>(batch_),
        pc_ ? "; steps on y and series in the problem's M (1/lambda_max(M H))" : ""));
  }

 private:
  StocbioOptions o_;
  /// With M: λ_max(M H_B) renewed every 10 iterations (renewed_preconditioned_lipschitz), so the steps
  /// 1/λ follow x, which lowers e^x and raises the minibatch curvature against M's diagonal; the user's
  /// inner_step and neumann_eta stay.
  void refresh_preconditioned_steps(AlgorithmContext& ctx) {
    const auto L =
        renewed_preconditioned_lipschitz(ctx.problem, ctx.x, ctx.y, batch_, ctx.seed, ctx.iteration);
    if (!L) return;
    pc_lipschitz_ = *L;
    if (o_.inner_step == 0) eta_y_ = 1.0 / pc_lipschitz_;
    if (o_.neumann_eta == 0) eta_n_ = 1.0 / pc_lipschitz_;
  }
  /// η and Q of the series from the options, else from the spectrum (see the file comment).
  void series_from_spectrum() {
    const PetscReal L = spectrum_.lipschitz(), mu = spectrum_.strong_convexity();
    eta_n_ = o_.neumann_eta > 0 ? o_.neumann_eta : batch_ == 0 ? 2.0 / (L + mu) : 1.0 / L;
    q_ = o_.neumann_steps > 0
             ? o_.neumann_steps
             : terms_for_contraction(std::max(std::abs(1 - eta_n_ * mu), std::abs(1 - eta_n_ * L)),
                                     batch_ == 0 ? kSeriesAccuracy : kSeriesAccuracyMinibatch,
                                     std::min<PetscInt>(10, max_terms_),
                                     max_terms_);
  }
  static constexpr PetscReal kSeriesAccuracy = 1e-4;
  // with minibatches the estimate's sampling error (tens of percent at batch 256) dominates a 1e-2 bias
  static constexpr PetscReal kSeriesAccuracyMinibatch = 1e-2;
  static constexpr PetscInt kPreconditionedTerms = 50;
  bool pc_ = false;             // the series in the problem's M
  PetscReal pc_lipschitz_ = 0;  // λ_max(M H) at the start (power steps, padded 10%)
  LowerSpectrum spectrum_;
  bool need_spectrum_ = false;
  PetscInt q_ = 10;
  PetscReal eta_y_ = 0, eta_n_ = 0;
  bool follow_bound_ = false;  // default steps 1/L from the problem's bound L(x), renewed every iteration
  PetscInt batch_ = 0;
  PetscInt max_terms_ = kMaxSeriesTerms;  // kMaxSeriesTerms, or ⌈n/b⌉ with minibatches
  LowerUpdate lower_;
  NeumannSolver neumann_;
  ImplicitStep implicit_;
};

}  // namespace

std::unique_ptr<Algorithm> create_stocbio() {
  return std::make_unique<Stocbio>();
}

}  // namespace bilevel
