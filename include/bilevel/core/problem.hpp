#pragma once
/// \file The bilevel problem: min_x F(x) = f(x, y*(x)),  y*(x) = argmin_y g(x, y).
///
/// Notation (algorithms.md §1): H = ∇²_yy g (dy x dy, SPD), J = ∂²g/∂x∂y (dx x dy), so J v = ∇_x <∇_y g, v>.
/// Hypergradient ∇F(x) = ∇_x f − J v*,  v* = H⁻¹ ∇_y f.
#include <petscvec.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bilevel/petsc/handle.hpp"

namespace bilevel {

class StateRegistry;

/// A minibatch: global sample indices (sorted, replicated on every rank) into the training set (lower
/// level) or the validation set (upper level). An empty `indices` with `full == true` is the whole set.
/// Each rank evaluates the samples of the batch it owns; sums are reduced over the communicator and
/// divided by the batch size, so the value does not depend on the number of ranks.
struct Batch {
  std::span<const PetscInt> indices;
  bool full = true;
  static Batch all() { return Batch{}; }
  static Batch of(std::span<const PetscInt> idx) { return Batch{idx, false}; }
};

/// Which M lower_preconditioner_setup builds. Accurate: the problem's best M ≈ H⁻¹ (Krylov solvers apply it
/// once per HVP). Cheap: an SPD M whose application costs about as much as a minibatch gradient, for
/// methods that apply M at every stochastic step (zeroth-order paths); problems without a cheaper form give
/// the accurate one.
enum class PreconditionerKind { Accurate, Cheap };

/// Bit set of optional oracles and properties a problem provides.
enum class Capability : unsigned {
  None = 0,
  UpperValue = 1u << 0,
  LowerValue = 1u << 1,
  LowerGradX = 1u << 2,  ///< ∇_x g (value-function and penalty methods)
  Stochastic = 1u << 3,  ///< oracles honour minibatches
  ClosedForm = 1u << 4,  ///< exact y*, ∇F, F* (quadratic)
  TestSet = 1u << 5,     ///< evaluate_test() reports a test loss / accuracy
  /// lower_precondition(): a fixed SPD M ≈ H⁻¹, far cheaper than an HVP (Krylov methods, Newton-CG)
  LowerPreconditioner = 1u << 6,
  /// x holds one weight per lower-level training sample (x's global index i is sample i) and the minibatch
  /// oracles on B read x only at the indices of B, so ∂∇_y g(x, y; B)/∂x_i = 0 for i ∉ B (hyperclean).
  /// Zeroth-order methods may perturb only those entries.
  PerSampleUpper = 1u << 7,
};
constexpr Capability operator|(Capability a, Capability b) {
  return static_cast<Capability>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}
constexpr bool has(Capability set, Capability c) {
  return (static_cast<unsigned>(set) & static_cast<unsigned>(c)) != 0;
}
std::string to_string(Capability set);

/// Every oracle call, counted on each rank identically (batch sizes are replicated).
struct OracleCounts {
  std::int64_t grad_f = 0;   ///< ∇f evaluations (∇_x f and ∇_y f together count once)
  std::int64_t grad_g = 0;   ///< ∇_y g or ∇_x g evaluations
  std::int64_t hvp = 0;      ///< H w products (each vector counts once)
  std::int64_t jvp = 0;      ///< J w products
  std::int64_t samples = 0;  ///< samples touched, summed over oracle calls
  std::int64_t value_f = 0;  ///< f evaluations
  std::int64_t value_g = 0;  ///< g evaluations

  /// Adds every counter of `other`. Not collective.
  OracleCounts& operator+=(const OracleCounts& other);
};

/// Sums every counter of `counts` over the ranks of `comm`, in place (for work counted on some ranks only,
/// e.g. once per sub-communicator). Collective on comm.
void allreduce(OracleCounts& counts, MPI_Comm comm);

/// Sizes of the data behind the two levels (0 for a deterministic problem without samples).
struct DatasetSizes {
  PetscInt lower = 0;  ///< training samples (g is a mean over them)
  PetscInt upper = 0;  ///< validation samples (f is a mean over them)
};

/// Test-set metrics (problems with Capability::TestSet).
struct TestMetrics {
  PetscReal loss = 0;
  std::optional<PetscReal> accuracy;
};

/// The update rule of the upper stepper (core/upper_stepper.hpp), [-bilevel_upper_type sgd|momentum|adam].
enum class UpperStepperType { Sgd, Momentum, Adam };
/// "sgd", "momentum", "adam". Not collective.
std::string_view to_string(UpperStepperType type);
/// Sets *type from its name and returns true; false (and *type unchanged) for any other name. Not collective.
bool from_string(std::string_view name, UpperStepperType* type);

/// ProblemHints::upper_stepper: an UpperStepperType. Transitional: it also takes a name ("adam") checked
/// at compile time, so problems written when the hint was a string keep compiling until they assign the
/// enum values (then this struct becomes a plain UpperStepperType).
struct UpperStepperHint {
  UpperStepperType type = UpperStepperType::Adam;
  constexpr UpperStepperHint() = default;
  constexpr UpperStepperHint(UpperStepperType t) : type(t) {}          // NOLINT: implicit on purpose
  consteval UpperStepperHint(const char* name) : type(parse(name)) {}  // NOLINT
  constexpr operator UpperStepperType() const { return type; }         // NOLINT

 private:
  static consteval bool same(const char* a, const char* b) {
    while (*a && *a == *b) ++a, ++b;
    return *a == *b;
  }
  static consteval UpperStepperType parse(const char* name) {
    if (same(name, "sgd")) return UpperStepperType::Sgd;
    if (same(name, "momentum")) return UpperStepperType::Momentum;
    if (same(name, "adam")) return UpperStepperType::Adam;
    throw "unknown upper stepper type: use sgd, momentum or adam";  // a compile-time error
  }
};

/// Suggestions a problem gives for defaults; methods use them unless options override. Settings tuned for one
/// (problem, method) pair are not hints but data: options files (core/tuned_settings.hpp).
struct ProblemHints {
  std::optional<PetscReal> lower_lipschitz;  ///< L of ∇_y g if known a priori
  std::optional<PetscReal> lower_strong_convexity;
  PetscReal upper_step = 0.1;                               ///< a reasonable step for the upper stepper
  UpperStepperHint upper_stepper = UpperStepperType::Adam;  ///< the stepper's update rule
  std::optional<PetscReal> x_lower_bound, x_upper_bound;    ///< box for x
  /// How methods with a choice should update y: "gd" (steps 1/L) or "newton" (truncated Newton-CG) for
  /// ill-conditioned lower levels where steps of 1/L crawl.
  std::string lower_update = "gd";
  /// Whether the problem's preconditioner M (Capability::LowerPreconditioner) is close enough to H⁻¹ to
  /// serve as the metric of steps on y (bome's y-step y − ξ M d_y), not only as a Krylov preconditioner.
  /// False for a diagonal M (logreg's Jacobi): methods then take such steps in H⁻¹ by PCG with M.
  bool preconditioner_is_metric = true;
  std::optional<PetscInt> max_iterations;  ///< default of -bilevel_max_it for this problem
  std::optional<PetscReal> max_time;       ///< default of -bilevel_max_time (seconds) for this problem
};

/// Constants of the a-posteriori hypergradient error bound (docs/metrics.md) at a point (x, y), valid for y'
/// in a neighbourhood of y that contains y*(x): ||∇_x f(x, y) − ∇_x f(x, y')|| <= upper_grad_x_lipschitz
/// ||y − y'||, likewise upper_grad_y_lipschitz for ∇_y f, cross_lipschitz for J (operator norm) and
/// hessian_lipschitz for H; cross_norm >= ||J(x, y)||; mu <= λ_min(H(x, y')) when the problem knows one
/// (else the solver estimates it with SLEPc).
struct SmoothnessConstants {
  std::optional<PetscReal> mu;
  PetscReal upper_grad_x_lipschitz = 0, upper_grad_y_lipschitz = 0;
  PetscReal cross_norm = 0, cross_lipschitz = 0, hessian_lipschitz = 0;
};

/// The problem interface. Every public method is collective on comm(). Oracles are public non-virtual
/// wrappers (they count calls and log events) around protected virtual implementations. Vecs passed in
/// must have the layouts of create_upper_vec() (x) and create_lower_vec() (y); implementations must not
/// keep references to them.
class BilevelProblem {
 public:
  virtual ~BilevelProblem() = default;

  virtual MPI_Comm comm() const = 0;
  virtual std::string name() const = 0;
  virtual petsc::VecHandle create_upper_vec() const = 0;  ///< layout of x
  virtual petsc::VecHandle create_lower_vec() const = 0;  ///< layout of y
  virtual Capability capabilities() const { return Capability::None; }
  virtual DatasetSizes dataset_sizes() const { return {}; }
  /// Bytes of this rank's share of the problem's data (matrices and labels of every data set), for memory
  /// reports (SolveReport::data_bytes_per_rank). Default 0: no data. Not collective.
  virtual std::int64_t local_data_bytes() const { return 0; }
  virtual ProblemHints hints() const { return {}; }
  /// Starting point (x0, y0). Default: zeros.
  virtual void initial_point(Vec x, Vec y);
  /// The same problem rebuilt on another communicator (identical values at every rank count), or nullptr
  /// when the problem cannot be rebuilt there (the default; e.g. data sharded over comm()). Lets a method
  /// run independent inner paths side by side on sub-communicators. Oracle counts start at zero.
  /// Collective on `comm`.
  virtual std::shared_ptr<BilevelProblem> clone_on(MPI_Comm /*comm*/) const { return nullptr; }
  /// Registers state the problem carries between oracle calls and that changes results (e.g. a
  /// preconditioner refreshed every k calls) for checkpoints. Default: none. Not collective.
  virtual void declare_state(StateRegistry& /*state*/) {}

  // Upper level f(x, y), on validation batches.
  PetscReal upper_value(Vec x, Vec y, const Batch& batch);  ///< f
  /// ∇_x f into gx and ∇_y f into gy; either may be null. Counts one grad_f.
  void upper_grad(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy);

  // Lower level g(x, y), on training batches.
  PetscReal lower_value(Vec x, Vec y, const Batch& batch);      ///< g
  void lower_grad_y(Vec x, Vec y, const Batch& batch, Vec gy);  ///< ∇_y g
  /// ∇_y g(x_i, y; batch) into gy_i for several x at one y (one pass over the batch's rows where the
  /// problem can, e.g. the forward product shared; default: one call each). Counts one grad_g per x.
  void lower_grad_y_multi(std::span<const Vec> x, Vec y, const Batch& batch, std::span<const Vec> gy);
  void lower_grad_x(Vec x, Vec y, const Batch& batch, Vec gx);       ///< ∇_x g
  void lower_hvp(Vec x, Vec y, const Batch& batch, Vec w, Vec out);  ///< H w (lower → lower)
  /// H w_i for several w at the same point in one pass over the data (default: one call each).
  void lower_hvp_multi(Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out);
  void lower_jvp(Vec x, Vec y, const Batch& batch, Vec w, Vec out);  ///< J w (lower → upper)

  // Lower-level preconditioner (Capability::LowerPreconditioner). Not counted as oracle calls: M is built
  // from quantities the oracles already computed and applying it touches no data rows.
  /// Builds a symmetric positive definite M ≈ H(x, y)⁻¹ (full batch) for the point (x, y); it stays fixed
  /// until the next setup, so Krylov solvers may use it as a preconditioner. Collective.
  void lower_preconditioner_setup(Vec x, Vec y, PreconditionerKind kind = PreconditionerKind::Accurate);
  /// out = M r with the M of the last setup (r and out in y's layout, distinct). Collective.
  void lower_precondition(Vec r, Vec out);
  /// out_i = M r_i for several r with the M of the last setup (one pass where the problem can; default: one
  /// call each). Collective.
  void lower_precondition_multi(std::span<const Vec> r, std::span<const Vec> out);

  /// An upper bound on L(x) = sup_y λ_max(∇²_yy g(x, y)) that follows x, for steps 1/L that must stay stable
  /// while x changes the lower curvature (e.g. regularisers e^{x}); nullopt when the problem has none (the
  /// default). May cost a one-time estimate at the first call. Collective.
  virtual std::optional<PetscReal> lower_lipschitz_bound(Vec /*x*/) { return std::nullopt; }

  /// The constants of the hypergradient error bound at (x, y) (SmoothnessConstants), or nullopt when the
  /// problem does not know them (the default: no bound is reported). Collective.
  virtual std::optional<SmoothnessConstants> smoothness_constants(Vec /*x*/, Vec /*y*/) {
    return std::nullopt;
  }

  /// The problem's own accurate solver of min_y g(x, y) (full batch) from y, until ||∇_y g|| <= rtol max(1,
  /// ||∇_y g(x, y0)||), for the final model of a run; returns the final gradient norm. Default: nullopt, "no
  /// solver of its own": BilevelSolver then runs its Newton-PCG (core/lower_solve.hpp). Collective.
  virtual std::optional<PetscReal> solve_lower(Vec /*x*/, Vec /*y*/, PetscReal /*rtol*/) {
    return std::nullopt;
  }

  // Evaluation (not counted as oracles).
  virtual TestMetrics evaluate_test(Vec x, Vec y);
  /// Validation metrics of the model y (accuracy where the problem is a classifier).
  virtual std::optional<PetscReal> validation_accuracy(Vec x, Vec y);
  /// Problem-specific numbers for the --summary JSON (e.g. hyperclean's baseline_test_accuracy), computed
  /// at the end of a run from the final (x, y). Default: none.
  virtual std::vector<std::pair<std::string, PetscReal>> summary_extras(Vec /*x*/, Vec /*y*/) { return {}; }

  // Closed form (Capability::ClosedForm).
  virtual void exact_lower_solution(Vec x, Vec y_star);
  virtual void exact_hypergradient(Vec x, Vec grad);
  virtual PetscReal exact_upper_objective(Vec x);  ///< F(x) = f(x, y*(x))
  virtual PetscReal optimal_upper_objective();     ///< F* = min_x F

  const OracleCounts& counts() const { return counts_; }
  void reset_counts() { counts_ = {}; }
  /// How many times lower_preconditioner_setup has built M on this object. A method that keeps M across
  /// iterations compares it with the value after its own set-up: a change means that another component (a
  /// monitor's accurate hypergradient, a full-batch Krylov solve) has built M at another point since. Not
  /// collective.
  std::uint64_t lower_preconditioner_setups() const { return preconditioner_setups_; }
  /// Restores counters saved before an evaluation that must not count as oracle work. Not collective.
  void set_counts(const OracleCounts& c) { counts_ = c; }
  /// Number of samples a batch touches on the given level (the set size for a full batch).
  std::int64_t batch_size(const Batch& batch, bool upper) const;

 protected:
  virtual PetscReal upper_value_impl(Vec x, Vec y, const Batch& batch);
  virtual void upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) = 0;
  virtual PetscReal lower_value_impl(Vec x, Vec y, const Batch& batch);
  virtual void lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) = 0;
  virtual void lower_grad_y_multi_impl(std::span<const Vec> x,
                                       Vec y,
                                       const Batch& batch,
                                       std::span<const Vec> gy);
  virtual void lower_grad_x_impl(Vec x, Vec y, const Batch& batch, Vec gx);
  virtual void lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) = 0;
  virtual void lower_hvp_multi_impl(
      Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out);
  virtual void lower_jvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) = 0;
  /// Default: throws (the problem has no preconditioner).
  virtual void lower_preconditioner_setup_impl(Vec x, Vec y, PreconditionerKind kind);
  virtual void lower_precondition_impl(Vec r, Vec out);
  virtual void lower_precondition_multi_impl(std::span<const Vec> r, std::span<const Vec> out);

 private:
  OracleCounts counts_;
  std::uint64_t preconditioner_setups_ = 0;
};

}  // namespace bilevel
