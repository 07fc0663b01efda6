/// ITD-BiO: iterative differentiation, reverse mode through K unrolled lower steps (Franceschi et al.,
/// ICML 2017, arXiv 1703.01785; Grazzi et al., ICML 2020, arXiv 2006.16218; Ji, Yang & Liang, ICML 2021,
/// arXiv 2010.07962; algorithms.md §3.2: "T inner GD (or momentum) steps").
///
/// Per outer iteration, from y_0 = y_{-1} = the previous y_K (warm start), K heavy-ball steps
///   y_{t+1} = Φ_t(y_t, y_{t-1}, x) = y_t − α ∇_y g(x, y_t; B_t) + β (y_t − y_{t−1})   (β = 0: gradient
///   steps),
/// keeping y_0 … y_{K−1}. The estimate is the total derivative of f(x, y_K(x)) by backpropagation: with
/// ā_t = df/dy_t (y_t enters y_{t+1} through (1 + β) I − α H_t and y_{t+2} through −β I),
///   ā_K = ∇_y f(x, y_K), ā_{K+1} = 0, h = ∇_x f(x, y_K);  for t = K−1 … 0:
///   h <- h − α J(x, y_t; B_t) ā_{t+1},
///   ā_t = (1 + β) ā_{t+1} − α H(x, y_t; B_t) ā_{t+1} − β ā_{t+2}   (not needed for t = 0),
/// then x <- P(x − step(h)). Cost: K ∇_y g forward, K JVP and K − 1 HVP backward, 1 ∇f. The backward pass
/// replays the forward batches B_t (the samplers are counter based: draw k is a pure function of k).
///
/// Accuracy: at y_t = y* the map is linear and dy_K/dx → dy*/dx at the rate ρ of the iteration, so the
/// error of the estimate is O(ρ^K ||J|| ||v*||) (K ρ^K for the heavy ball, whose optimal parameters give a
/// double eigenvalue). When the problem gives μ (κ = L/μ), the defaults are the heavy ball's optimal
/// α = 4/(√L + √μ)², β = ((√κ − 1)/(√κ + 1))², ρ = (√κ − 1)/(√κ + 1) (Polyak 1964), and K
/// (-bilevel_itd_inner_steps 0) the smallest with K ρ^K <= ε (-bilevel_itd_truncation_tol, 3e-3): κ = 100
/// gives K = 49 where gradient steps (-bilevel_itd_momentum 0, α = 2/(L + μ)) need about 290. Without μ:
/// steps 1/L (β = 0) and K = 10 (the papers' default).
///
/// Memory: the K stored iterates take K · (local dim y) · 8 bytes per rank. A K over
/// -bilevel_itd_memory_limit (MiB per rank) is refused at setup, naming the option; the automatic K is
/// capped to fit instead.
/// In the problem's preconditioner (Capability::LowerPreconditioner, -bilevel_itd_precondition, default on
/// when the lower batch is full or has >= 128 rows, core's preconditioned_steps_by_default; not in the
/// papers): the unrolled map is Φ_t = y_t − α M ∇_y g + β (y_t − y_{t−1}) with M built at (x, y_0) and held
/// fixed for the K steps (its x-dependence multiplies ∇_y g, which vanishes at y*(x), so the limit K → ∞ is
/// still dy*/dx); backward u = M ā_{t+1}, h −= α J u, ā_t = (1 + β) ā_{t+1} − α H u − β ā_{t+2}. α =
/// 1/λ_max(M H) (power steps; with minibatches the largest of three), renewed every 10 iterations; no μ of M
/// H, so β = 0 and K = 10 (docs/benchmarks.md, "Defaults on a second LIBSVM set", has the measurement).
/// Options (-bilevel_itd_*): inner_steps, inner_step, momentum, truncation_tol, memory_limit, precondition.
#include <petscviewer.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "bilevel/blocks/implicit_step.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/converged_reason.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// Settings of Itd. Options database keys in brackets.
struct ItdOptions {
  PetscInt inner_steps = 0;  ///< [-bilevel_itd_inner_steps] K; 0: from ε and κ = L/μ (10 without μ)
  PetscReal inner_step = 0;  ///< [-bilevel_itd_inner_step] α; 0: heavy-ball optimum, 1/L without μ
  PetscReal momentum = -1;   ///< [-bilevel_itd_momentum] β; < 0: heavy-ball optimum, 0 without μ
  PetscReal truncation_tol = 3e-3;    ///< [-bilevel_itd_truncation_tol] ε of the automatic K
  PetscReal memory_limit_mib = 2048;  ///< [-bilevel_itd_memory_limit] MiB per rank for the K iterates
  PetscInt max_auto_steps = 2000;     ///< the automatic K is at most this
  PetscInt fallback_steps = 10;       ///< K without μ
  std::optional<bool> precondition;   ///< [-bilevel_itd_precondition] steps in M (nullopt: auto)
};

class Itd : public Algorithm {
 public:
  std::string_view type() const override { return "itd"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.inner_steps = opts.integer("inner_steps",
                                  o_.inner_steps,
                                  "unrolled steps K on y (0: smallest K with K rho^K <= truncation_tol, rho "
                                  "the rate of the steps; 10 when the problem gives no mu)",
                                  0);
    o_.inner_step = opts.real(
        "inner_step", o_.inner_step, "step alpha on y (0: 4/(sqrt L + sqrt mu)^2, 1/L without mu)", 0.0);
    o_.momentum =
        opts.real("momentum",
                  o_.momentum,
                  "heavy-ball beta of the steps on y (negative: ((sqrt kappa - 1)/(sqrt kappa + 1))^2, "
                  "0 without mu)",
                  -1.0,
                  0.999);
    o_.truncation_tol =
        opts.real("truncation_tol", o_.truncation_tol, "epsilon of the automatic K", 1e-300, 1.0);
    o_.memory_limit_mib =
        opts.real("memory_limit", o_.memory_limit_mib, "MiB per rank for the K stored lower iterates", 0.0);
    o_.precondition =
        opts.boolean_or_auto("precondition",
                             "with a problem preconditioner M: unroll y <- y - alpha M grad_y g, alpha "
                             "1/lambda_max(M H) (not in the papers; auto: when the lower batch is full or "
                             "has >= 128 rows)");
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const ProblemHints h = p.hints();
    const DatasetSizes n = p.dataset_sizes();
    batch_ = n.lower > 0 ? ctx.batch_size : 0;
    pc_ = resolve_preconditioned_steps(p, batch_, o_.precondition);
    const std::optional<PetscReal> bound =
        o_.inner_step > 0 || pc_ ? std::nullopt : p.lower_lipschitz_bound(ctx.x);
    follow_bound_ = bound.has_value();
    const PetscReal L = o_.inner_step > 0 ? 1.0 / o_.inner_step
                        : pc_ ? estimate_preconditioned_lipschitz_minibatch(p, ctx.x, ctx.y, batch_, ctx.seed)
                        : bound ? *bound
                                : resolve_lower_lipschitz(p, ctx.x, ctx.y);
    // μ of H says nothing about M H: with M, steps 1/λ_max(M H) and the fallback K
    const std::optional<PetscReal> mu =
        h.lower_strong_convexity && *h.lower_strong_convexity > 0 && !follow_bound_ && !pc_
            ? h.lower_strong_convexity
            : std::nullopt;
    // Heavy ball with Polyak's optimal α, β when μ is known; else gradient steps 1/L
    const PetscReal sq = mu ? std::sqrt(std::max<PetscReal>(1, L / *mu)) : 1;
    beta_ = o_.momentum >= 0 ? o_.momentum : mu ? std::pow((sq - 1) / (sq + 1), 2) : 0.0;
    alpha_ = o_.inner_step > 0 ? o_.inner_step
             : !mu             ? 1.0 / L
             : beta_ > 0       ? 4.0 / std::pow(std::sqrt(L) + std::sqrt(*mu), 2)
                               : 2.0 / (L + *mu);  // gradient steps: ||I − αH|| = (κ − 1)/(κ + 1)
    // Memory of one stored iterate on the rank that holds most of y.
    PetscInt local = 0;
    BILEVEL_PETSC_CALL(VecGetLocalSize(ctx.y, &local));
    long long most = local;
    BILEVEL_PETSC_CALL(MPI_Allreduce(MPI_IN_PLACE, &most, 1, MPI_LONG_LONG, MPI_MAX, ctx.comm));
    const double per_iterate_mib = static_cast<double>(most) * sizeof(PetscScalar) / (1024.0 * 1024.0);
    const auto fits = static_cast<PetscInt>(
        std::min<double>(PETSC_MAX_INT, std::floor(o_.memory_limit_mib / std::max(per_iterate_mib, 1e-300))));
    if (o_.inner_steps > 0) {
      k_ = o_.inner_steps;
      auto_note_ = "";
      if (k_ > fits) {
        std::ostringstream m;
        m << "itd: -bilevel_itd_inner_steps " << k_ << " stores " << k_ << " lower iterates, "
          << static_cast<double>(k_) * per_iterate_mib << " MiB per rank, over -bilevel_itd_memory_limit "
          << o_.memory_limit_mib << " MiB: lower K or raise the limit";
        throw InputError(m.str());
      }
    } else {
      if (mu) {
        // ρ: √β for the heavy ball (exact at the optimal α), else |1 − α μ| (gradient steps, α <= 2/(L + μ));
        // K = the smallest with K ρ^K <= ε
        const PetscReal rho = beta_ > 0 ? std::sqrt(beta_) : std::abs(1 - alpha_ * *mu);
        k_ = o_.max_auto_steps;
        for (PetscInt k = 1; k < o_.max_auto_steps && rho < 1; ++k)
          if (k * std::pow(rho, k) <= o_.truncation_tol) {
            k_ = k;
            break;
          }
        auto_note_ = "automatic: K rho^K <= truncation_tol";
      } else {
        k_ = o_.fallback_steps;
        auto_note_ =
            pc_ ? "automatic: steps in the problem's M, no mu of M H" : "automatic: the problem gives no mu";
      }
      if (k_ > fits) {
        k_ = std::max<PetscInt>(1, fits);
        auto_note_ = "automatic, capped by -bilevel_itd_memory_limit";
      }
    }
    memory_mib_ = static_cast<double>(k_) * per_iterate_mib;
    iterates_.clear();
    for (PetscInt t = 0; t < k_; ++t) iterates_.push_back(p.create_lower_vec());
    a_ = p.create_lower_vec();
    a2_ = p.create_lower_vec();
    hv_ = p.create_lower_vec();
    fx_ = p.create_upper_vec();
    jv_ = p.create_upper_vec();
    gd_.setup(ctx.y);
    if (pc_) mu_ = p.create_lower_vec();
    upper_batch_ = n.upper > 0 ? (ctx.upper_batch_size > 0 ? ctx.upper_batch_size : batch_) : 0;
    samplers_ = StepSamplers(ctx.seed);
  }

  StepResult step(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    if (follow_bound_) alpha_ = 1.0 / *p.lower_lipschitz_bound(ctx.x);  // α = 1/L(x) for the current x
    if (pc_ && o_.inner_step == 0)  // λ_max(M H) follows x (e^x moves against the data's curvature)
      if (const auto L = renewed_preconditioned_lipschitz(p, ctx.x, ctx.y, batch_, ctx.seed, ctx.iteration))
        alpha_ = 1.0 / *L;
    if (pc_) p.lower_preconditioner_setup(ctx.x, ctx.y, PreconditionerKind::Cheap);  // M at (x, y_0), fixed
    const PetscInt n = p.dataset_sizes().lower;
    StepResult r;
    replay_ = samplers_.lower;  // the forward pass's batches, drawn again in the backward pass
    const std::uint64_t first_draw = replay_.draws();
    // Forward: y_{t+1} = y_t − α ∇_y g(x, y_t; B_t), keeping y_t.
    for (PetscInt t = 0; t < k_; ++t) {
      BILEVEL_PETSC_CALL(VecCopy(ctx.y, iterates_[static_cast<std::size_t>(t)]));
      r.lower_residual = gd_.run(p, ctx.x, ctx.y, 1, alpha_, &samplers_.lower, batch_, pc_);  // y − α M ∇_y g
      if (t > 0 && beta_ > 0)  // + β (y_t − y_{t−1})
        BILEVEL_PETSC_CALL(VecAXPBYPCZ(ctx.y,
                                       beta_,
                                       -beta_,
                                       1.0,
                                       iterates_[static_cast<std::size_t>(t)],
                                       iterates_[static_cast<std::size_t>(t - 1)]));
      if (!std::isfinite(r.lower_residual))
        throw NumericalFailure(ConvergedReason::DivergedInnerSolve,
                               "itd: the unrolled gradient steps on y diverged (a smaller "
                               "-bilevel_itd_inner_step may help)");
    }
    // Backward: a = ā_{t+1}, a2 = ā_{t+2}; h −= α J(y_t) a, ā_t = (1 + β) a − α H(y_t) a − β a2.
    const Batch ub = samplers_.upper.draw(p.dataset_sizes().upper, upper_batch_);
    p.upper_grad(ctx.x, ctx.y, ub, fx_, a_);
    BILEVEL_PETSC_CALL(VecSet(a2_, 0.0));
    const bool sampled = batch_ > 0 && n > 0;
    for (PetscInt t = k_ - 1; t >= 0; --t) {
      Vec yt = iterates_[static_cast<std::size_t>(t)];
      if (sampled) replay_.set_draws(first_draw + static_cast<std::uint64_t>(t));
      const Batch b = sampled ? replay_.draw(n, batch_) : Batch::all();
      // with M (symmetric, fixed): (∂Φ_t/∂y)ᵀ = (1 + β) I − α H M, (∂Φ_t/∂x)ᵀ = −α J M, so u = M ā_{t+1}
      Vec u = a_;
      if (pc_) {
        p.lower_precondition(a_, mu_);
        u = mu_;
      }
      p.lower_jvp(ctx.x, yt, b, u, jv_);  // (∂Φ_t/∂x)ᵀ ā_{t+1} = −α J u
      BILEVEL_PETSC_CALL(VecAXPY(fx_, -alpha_, jv_));
      if (t == 0) break;
      p.lower_hvp(ctx.x, yt, b, u, hv_);
      BILEVEL_PETSC_CALL(VecAXPBYPCZ(a2_, 1 + beta_, -alpha_, -beta_, a_, hv_));  // a2 <- ā_t
      std::swap(a_, a2_);
    }
    r.inner_iterations = k_;
    r.hypergradient_norm = upper_step_along(ctx, fx_);
    r.hypergradient = fx_;  // the total derivative through the K steps (no v: no error bound)
    return r;
  }

  void declare_state(StateRegistry& state) override {
    state.add("itd.", samplers_);
    state.add("itd.alpha", alpha_);
  }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "itd: reverse-mode differentiation through K unrolled gradient steps (Franceschi et al. 2017, "
        "arXiv 1703.01785; Grazzi et al. 2020, arXiv 2006.16218; Ji, Yang & Liang 2021)\n"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "inner_steps K %d%s%s%s, inner_step %g, momentum %g, "
                                              "truncation_tol %g\n",
                                              static_cast<int>(k_ > 0 ? k_ : o_.inner_steps),
                                              auto_note_.empty() ? "" : " (",
                                              auto_note_.c_str(),
                                              auto_note_.empty() ? "" : ")",
                                              alpha_,
                                              beta_,
                                              o_.truncation_tol));
    BILEVEL_PETSC_CALL(
        PetscViewerASCIIPrintf(viewer,
                               "memory: K stored lower iterates, %g MiB per rank (memory_limit "
                               "%g MiB); batch %d%s\n",
                               memory_mib_,
                               o_.memory_limit_mib,
                               static_cast<int>(batch_),
                               pc_ ? "; steps in the problem's M (alpha 1/lambda_max(M H))" : ""));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  ItdOptions o_;
  PetscInt k_ = 0;
  PetscReal alpha_ = 0, beta_ = 0;
  bool follow_bound_ = false;  // α = 1/lower_lipschitz_bound(x) at every step
  double memory_mib_ = 0;
  std::string auto_note_;
  PetscInt batch_ = 0, upper_batch_ = 0;
  std::vector<petsc::VecHandle> iterates_;       // y_0 … y_{K−1}
  petsc::VecHandle a_, a2_, hv_, fx_, jv_, mu_;  // mu_: M ā (with a preconditioner)
  bool pc_ = false;                              // unrolled steps in the problem's M
  GradientSteps gd_;
  StepSamplers samplers_;
  BatchSampler replay_;
};

}  // namespace

std::unique_ptr<Algorithm> create_itd() {
  return std::make_unique<Itd>();
}

}  // namespace bilevel
