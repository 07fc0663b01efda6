/// SABA: SOBA with SAGA variance reduction (Dagreou, Ablin, Vaiter & Moreau, NeurIPS 2022; algorithms.md
/// §3.6), and MA-SABA (the moving average of MA-SOBA on top, an NBO baseline).
///
/// The training set is split into n_b fixed minibatches of b samples, the validation set into n_ob; every
/// iteration draws one of each (ξ = slot i, ζ = slot j) and runs the SOBA iteration (SingleLoopStep) with
/// each of the five oracle outputs o ∈ {∇_y g, H v, J v} on ξ and {∇_y f, ∇_x f} on ζ replaced by the SAGA
/// direction o − m_i + m̄ (blocks/saga.hpp; memory from zero). Variance reduction allows **constant** steps
/// ρ (y, v) and γ (x: the upper stepper's step), as in the paper's analysis.
/// Memory: n_b (2 dy + dx) + n_ob (dy + dx) numbers (plus one mean per table), distributed like y and x;
/// checkpointed. A table larger than -bilevel_saba_max_memory MiB is refused at setup.
/// On a deterministic problem (no samples) there is one slot and SABA is SOBA with constant steps.
/// Options (-bilevel_saba_*): variant, step, average, batch_size, max_memory.
#include <petscviewer.h>

#include <array>
#include <optional>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/blocks/single_loop.hpp"
#include "bilevel/core/algorithm.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace {

/// SABA or MA-SABA.
enum class SabaVariant { Saba, MovingAverage };
constexpr std::array<Named<SabaVariant>, 2> kSabaVariants{
    {{"saba", SabaVariant::Saba}, {"ma", SabaVariant::MovingAverage}}};

/// Settings of Saba. Options database keys in brackets.
struct SabaOptions {
  SabaVariant variant = SabaVariant::Saba;  ///< [-bilevel_saba_variant saba|ma]
  PetscReal step = 0;                       ///< [-bilevel_saba_step] constant ρ of y and v; 0: 1/L
  PetscReal average = 0.1;                  ///< [-bilevel_saba_average] θ of MA-SABA
  PetscInt batch_size = 64;    ///< [-bilevel_saba_batch_size] when -bilevel_batch_size is not given
  PetscInt max_memory = 2048;  ///< [-bilevel_saba_max_memory] MiB of SAGA tables accepted (all ranks)
};

class Saba : public Algorithm {
 public:
  std::string_view type() const override { return "saba"; }

  void set_from_options(petsc::OptionsReader& opts) override {
    o_.variant = read_choice(opts, "variant", o_.variant, kSabaVariants, "SABA or MA-SABA (moving average)");
    o_.step = opts.real("step", o_.step, "constant step rho on y and v (0: 1/L)", 0.0);
    o_.average = opts.real("average", o_.average, "theta of the moving average of d (variant ma)", 0.0, 1.0);
    o_.batch_size =
        opts.integer("batch_size",
                     o_.batch_size,
                     "size of the fixed minibatches when -bilevel_batch_size is not set (0: full)",
                     0);
    o_.max_memory = opts.integer("max_memory", o_.max_memory, "largest SAGA memory in MiB over all ranks", 1);
  }

  void setup(AlgorithmContext& ctx) override {
    BilevelProblem& p = ctx.problem;
    const std::optional<PetscReal> bound = o_.step > 0 ? std::nullopt : p.lower_lipschitz_bound(ctx.x);
    follow_bound_ = bound.has_value();
    rho_ = o_.step > 0 ? o_.step : 1.0 / (bound ? *bound : resolve_lower_lipschitz(p, ctx.x, ctx.y));
    SingleLoopSettings s;
    const bool stochastic = has(p.capabilities(), Capability::Stochastic);
    s.batches.lower = !stochastic ? 0 : (ctx.batch_size > 0 ? ctx.batch_size : o_.batch_size);
    s.batches.upper = !stochastic ? 0 : (ctx.upper_batch_size > 0 ? ctx.upper_batch_size : s.batches.lower);
    s.saga = true;
    s.average = o_.variant == SabaVariant::MovingAverage;
    s.max_saga_bytes = static_cast<std::int64_t>(o_.max_memory) << 20;
    s.option = "-bilevel_saba_max_memory";
    loop_.setup(p, ctx.seed, s);
  }

  StepResult step(AlgorithmContext& ctx) override {
    if (follow_bound_) rho_ = 1.0 / *ctx.problem.lower_lipschitz_bound(ctx.x);
    return loop_.run(ctx, rho_, o_.average, 1.0);
  }

  void declare_state(StateRegistry& state) override { loop_.declare_state(state, "saba."); }

  void view(PetscViewer viewer) const override {
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "saba: %s, SOBA with SAGA variance reduction (Dagreou, Ablin, Vaiter & Moreau, NeurIPS 2022)\n",
        o_.variant == SabaVariant::Saba ? "SABA" : "MA-SABA"));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPushTab(viewer));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                              "variant %s, constant step rho %g%s",
                                              name_of(o_.variant, kSabaVariants),
                                              rho_,
                                              o_.step > 0 ? "" : " (1/L)"));
    if (o_.variant == SabaVariant::MovingAverage)
      BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, ", average theta %g", o_.average));
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer, "\n"));
    loop_.view(viewer);
    BILEVEL_PETSC_CALL(PetscViewerASCIIPopTab(viewer));
  }

 private:
  SabaOptions o_;
  PetscReal rho_ = 0;
  bool follow_bound_ = false;
  SingleLoopStep loop_;
};

}  // namespace

std::unique_ptr<Algorithm> create_saba() {
  return std::make_unique<Saba>();
}

}  // namespace bilevel
