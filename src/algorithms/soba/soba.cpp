/// SOBA: stochastic single-loop bilevel optimisation (Dagreou, Ablin, Vaiter & Moreau, "A framework for
/// bilevel optimization that enables stochastic and global variance reduction algorithms", NeurIPS 2022;
/// algorithms.md §3.6), and MA-SOBA (Chen, Xu & Zhang 2023: a moving average of the x-direction).
///
/// Per iteration k, at the old point (x_k, y_k, v_k), one training batch ξ and one validation batch ζ:
///   y <- y − ρ_k ∇_y g(ξ),  v <- v − ρ_k (H(ξ) v − ∇_y f(ζ)),  x <- P(x − γ_k d_k),
///   d_k = ∇_x f(ζ) − J(ξ) v  (soba)   or   d_k = (1 − θ) d_{k−1} + θ (∇_x f(ζ) − J(ξ) v)  (ma).
/// Steps: ρ_k = ρ_0/(k+1)^a and γ_k = γ_0/(k+1)^a (benchopt: a = 1/2), γ_0 the upper stepper's step. The
/// decaying steps tame minibatch noise; with full batches (a deterministic problem) a = 0 by default, the
/// constant steps of the deterministic analysis. ρ_0 = 1/L (problem bound L(x) followed every iteration
/// where the problem has one, else the hint or a SLEPc estimate at the start).
/// Cost per iteration: 1 ∇_y g, 1 HVP, 1 JVP, 1 ∇f (SingleLoopStep).
/// Options (-bilevel_soba_*): variant, step, decay, average, batch_size.
#include <petscviewer.h>

#include <array>
#include <cmath>
#include <optional>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/single_loop.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/lower_hessian.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// SOBA or MA-SOBA.
enum class SobaVariant { Soba, MovingAverage };
constexpr std::array<Named<SobaVariant>, 2> kSobaVariants{
    {{"soba", SobaVariant::Soba}, {"ma", SobaVariant::MovingAverage}}};

/// Settings of Soba. Options database keys in brackets.
struct SobaOptions {
  SobaVariant variant = SobaVariant::Soba;  ///< [-bilevel_soba_variant soba|ma]
  PetscReal step = 0;                       ///< [-bilevel_soba_step] ρ_0 of y and v; 0: 1/L
  PetscReal decay = -1;      ///< [-bilevel_soba_decay] a; −1: 1/2 with minibatches, 0 with full batches
  PetscReal average = 0.1;   ///< [-bilevel_soba_average] θ of MA-SOBA's moving average
  PetscInt batch_size = 64;  ///< [-bilevel_soba_batch_size] when -bilevel_batch_size is not given (benchopt)
};

class Soba : public Algorithm {
 public:
  std::string_view type() const override { return "soba"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.variant = read_choice(opts, "variant", o_.variant, kSobaVariants, "SOBA or MA-SOBA (moving average)");
    o_.step = opts.real("step", o_.step, "step rho_0 on y and v (0: 1/L)", 0.0);
    o_.decay = opts.real("decay",
                         o_.decay,
                         "steps rho_0/(k+1)^a and gamma_0/(k+1)^a (-1: 0.5 with minibatches, 0 full batch)",
                         -1.0,
                         1.0);
    o_.average = opts.real("average", o_.average, "theta of the moving average of d (variant ma)", 0.0, 1.0);
    o_.batch_size = opts.integer(
        "batch_size", o_.batch_size, "minibatch size used when -bilevel_batch_size is not set (0: full)", 0);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const std::optional<PetscReal> bound = o_.step > 0 ? std::nullopt : p.lower_lipschitz_bound(ctx.x);
    follow_bound_ = bound.has_value();
    rho0_ = o_.step > 0 ? o_.step : 1.0 / (bound ? *bound : resolve_lower_lipschitz(p, ctx.x, ctx.y));
    SingleLoopSettings s;
    const bool stochastic = has(p.capabilities(), Capability::Stochastic);
    s.batches.lower = !stochastic ? 0 : (ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size);
    s.batches.upper = !stochastic ? 0 : (ctx.upper_batch_size > 0 ? ctx.upper_batch_size : s.batches.lower);
    s.average = o_.variant == SobaVariant::MovingAverage;
    loop_.setup(p, ctx.seed, s);
    decay_ = o_.decay >= 0 ? o_.decay : (draws_minibatches(p, s.batches.lower, s.batches.upper) ? 0.5 : 0.0);
  }

  StepResult step(AlgorithmContext& ctx) override {
    if (follow_bound_) rho0_ = 1.0 / *ctx.problem.lower_lipschitz_bound(ctx.x);
    const PetscReal scale = decay_ > 0 ? std::pow(static_cast<PetscReal>(ctx.iteration + 1), -decay_) : 1.0;
    return loop_.run(ctx, rho0_ * scale, o_.average, scale);
  }

  void declare_state(StateRegistry& state) override { loop_.declare_state(state, "soba."); }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "soba: %s, single-loop stochastic bilevel (Dagreou, Ablin, Vaiter & Moreau, NeurIPS 2022%s)\n",
        o_.variant == SobaVariant::Soba ? "SOBA" : "MA-SOBA",
        o_.variant == SobaVariant::Soba ? "" : "; moving average: Chen, Xu & Zhang 2023"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "variant %s, step rho_0 %g%s, decay %g (rho_0/(k+1)^a on y, v "
                                              "and the upper step)",
                                              name_of(o_.variant, kSobaVariants),
                                              rho0_,
                                              o_.step > 0 ? "" : " (1/L)",
                                              decay_));
    if (o_.variant == SobaVariant::MovingAverage)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, ", average theta %g", o_.average));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, "\n"));
    loop_.view(viewer);
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  SobaOptions o_;
  PetscReal rho0_ = 0, decay_ = 0;
  bool follow_bound_ = false;
  SingleLoopStep loop_;
};

}  // namespace

std::unique_ptr<Algorithm> create_soba() {
  return std::make_unique<Soba>();
}

}  // namespace bilevel
