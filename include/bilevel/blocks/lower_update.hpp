#pragma once
/// \file The y-update of methods that leave its kind to the problem (ProblemHints::lower_update): T gradient
/// steps of size θ (the papers' update), or T truncated Newton steps for ill-conditioned lower levels where
/// steps of 1/L crawl.
#include <petscviewer.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "bilevel/blocks/choices.hpp"
#include "bilevel/blocks/lower_steps.hpp"
#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

class StateRegistry;

/// How y is updated.
enum class LowerUpdateKind { Auto, Gd, Newton };
inline constexpr std::array<Named<LowerUpdateKind>, 3> kLowerUpdateKinds{
    {{"auto", LowerUpdateKind::Auto}, {"gd", LowerUpdateKind::Gd}, {"newton", LowerUpdateKind::Newton}}};

/// Settings of a LowerUpdate (read by the method under its own prefix). The CG of the Newton steps is the
/// KSP -bilevel_inner_ (its iteration budget -bilevel_inner_ksp_max_it, default newton_cg_its).
struct LowerUpdateOptions {
  LowerUpdateKind kind = LowerUpdateKind::Auto;  ///< auto (the problem's hint) | gd | newton
  PetscInt steps = 0;          ///< T per outer iteration; 0: the method's gd default, 1 for newton
  PetscReal step = 0;          ///< θ of the gradient steps; 0: 1/L (hints, else SLEPc)
  PetscInt newton_cg_its = 5;  ///< the method's default of -bilevel_inner_ksp_max_it
  /// Gradient steps in the problem's M (Capability::LowerPreconditioner): y <- y − θ M ∇_y g, M set up at
  /// (x, y) at the start of every run; θ (step 0) = 1/λ_max(M H) from power steps at setup. Ignored for
  /// Newton steps (their CG uses M anyway) and for problems without a preconditioner.
  bool precondition = false;
};

/// The lower Hessian's extreme eigenvalues, for defaults that need no tuning (step sizes, series lengths,
/// iteration budgets; docs/metrics.md, "Defaults from the spectrum"): L = the problem's bound L(x)
/// (BilevelProblem::lower_lipschitz_bound), else its hint, else SLEPc at (x, y); μ = the problem's hint,
/// else SLEPc's λ_min at (x, y). Collective on the problem's communicator.
class LowerSpectrum {
 public:
  void estimate(BilevelProblem& problem, Vec x, Vec y);
  /// With a bound L(x), renews L at x, and re-estimates μ when L moved by more than `drift` (relative) since
  /// μ was estimated: x changed the lower curvature. Returns true when μ was re-estimated.
  bool refresh(BilevelProblem& problem, Vec x, Vec y, PetscReal drift = 0.25);
  /// refresh(), and besides re-estimates μ (and L without a bound) at every `period`-th outer iteration
  /// (`iteration` > 0): μ can move while L does not (logreg: L is the data term's, μ follows e^{min x}).
  /// Returns true when μ was re-estimated.
  bool refresh_periodic(
      BilevelProblem& problem, Vec x, Vec y, std::int64_t iteration, PetscInt period, PetscReal drift = 0.25);
  PetscReal lipschitz() const { return lipschitz_; }
  PetscReal strong_convexity() const { return mu_; }
  /// Registers μ and the L it was estimated with (a restart re-estimates at the same iterations). Not
  /// collective.
  void declare_state(StateRegistry& state, const std::string& prefix);

 private:
  PetscReal lipschitz_ = 0, mu_ = 0, lipschitz_at_mu_ = 0;
  bool follows_bound_ = false, mu_from_hint_ = false;
};

/// Terms of a linear recursion whose error contracts by `rate` per term (Neumann series, Richardson, gradient
/// steps on a quadratic: rate = 1 − η μ) until it is below `eps` times the first: ceil(ln eps / ln rate),
/// clamped to [lo, hi]. Not collective.
PetscInt terms_for_contraction(PetscReal rate, PetscReal eps, PetscInt lo, PetscInt hi);

/// Most terms a Neumann series takes by default (stocbio, ttsa): the count from the spectrum grows as κ
/// ln(1/eps), and at κ = 1e5 (spectral_logsumexp) ttsa's 461,000 products made one iteration of its 12 s
/// suite budget (docs/benchmarks.md); the user's -bilevel_<method>_neumann_steps is not capped.
inline constexpr PetscInt kMaxSeriesTerms = 5000;

/// CG iterations that reduce the H-norm error of an SPD system of condition κ = L/μ by `eps`: the classical
/// bound ||e_k||_H <= 2 ((√κ − 1)/(√κ + 1))^k ||e_0||_H gives k = ⌈½ √κ ln(2/eps)⌉, clamped to [lo, hi].
/// Not collective.
PetscInt cg_iterations_for(PetscReal kappa, PetscReal eps, PetscInt lo, PetscInt hi);

/// Reads -<prefix>lower, -<prefix>inner_steps and -<prefix>inner_step into `o` (`gd_steps` is the method's
/// default T for gradient steps, `auto_means` what the method resolves auto to; both shown in -help).
/// Collective.
void read_lower_update_options(petsc::OptionsReader& opts,
                               LowerUpdateOptions& o,
                               PetscInt gd_steps,
                               const std::string& auto_means = "the problem's hint; gd on minibatches");

/// Collective on the problem's communicator.
class LowerUpdate {
 public:
  /// Resolves the kind, the number of steps and θ (estimating L only for gradient steps) and allocates
  /// the work space. `gd_steps` is the method's default T for gradient steps, `batch_size` the lower batch
  /// the steps draw (0: full). Auto is the problem's hint on full batches and gradient steps on minibatches:
  /// a Newton step on a minibatch jumps to that batch's minimiser, which no step size averages, and H_B⁻¹ is
  /// largest along the features the batch lacks (docs/benchmarks.md, "Newton steps on minibatches").
  void setup(BilevelProblem& problem,
             Vec x,
             Vec y,
             const LowerUpdateOptions& options,
             PetscInt gd_steps,
             PetscInt batch_size);
  /// T steps on y at x (gradient steps draw a fresh batch of `batch_size` per step from `sampler`; Newton
  /// steps use one batch); returns ||∇_y g|| at the point before the last step. When θ is the default 1/L
  /// and the problem bounds L(x) (BilevelProblem::lower_lipschitz_bound), θ = 1/bound(x) is taken anew at
  /// every call, so the steps stay stable while x raises the lower curvature. A non-finite ||∇_y g|| (the
  /// steps diverged) is a NumericalFailure(DIVERGED_INNER_SOLVE).
  PetscReal run(BilevelProblem& problem, Vec x, Vec y, BatchSampler& sampler, PetscInt batch_size);
  LowerUpdateKind kind() const { return kind_; }
  const char* kind_name() const { return name_of(kind_, kLowerUpdateKinds); }
  PetscInt steps() const { return steps_; }
  /// Sets θ of the gradient steps (a method that re-estimates its step bound). Not collective.
  void set_step(PetscReal theta) { theta_ = theta; }
  /// Whether the gradient steps are taken in the problem's M. Not collective.
  bool preconditioned() const { return precondition_; }
  /// θ of the gradient steps (0 for Newton). Not collective.
  PetscReal step() const { return theta_; }
  /// One line "lower KIND, inner_steps T, inner_step θ", and the Newton KSP's settings. Collective on the
  /// viewer.
  void view(PetscViewer viewer) const;
  /// The Newton KSP's settings only (nothing for gradient steps). Collective on the viewer.
  void view_ksp(PetscViewer viewer) const;

 private:
  LowerUpdateKind kind_ = LowerUpdateKind::Gd;
  PetscInt steps_ = 0;
  PetscReal theta_ = 0;
  bool follow_bound_ = false;  // θ = 1/lower_lipschitz_bound(x) at every run
  bool precondition_ = false;  // gradient steps in the problem's M
  GradientSteps gd_;
  NewtonSteps newton_;
};

}  // namespace bilevel
