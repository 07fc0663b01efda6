#pragma once
// A problem that forwards every oracle to another problem, optionally hiding capabilities, scaling one
// oracle's output or replacing full batches by fixed minibatches: the tests' way to plant a wrong oracle in
// a correct problem (conformance suite), to run the derivative checker on minibatch oracles, or to take the
// closed form away from the quadratic (the solver's gatol test).
#include <petscvec.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/error.hpp"

namespace testsupport {

/// The oracles a ForwardingProblem can scale, named as the derivative checker's report names them
/// ("g" and "f" are the values).
enum class Oracle {
  None,
  UpperValue,
  LowerValue,
  LowerGradY,
  LowerGradX,
  UpperGradY,
  UpperGradX,
  Hvp,
  HvpMulti,
  Jvp
};

inline std::string checker_name(Oracle o) {
  switch (o) {
    case Oracle::None:
      return "";
    case Oracle::UpperValue:
      return "f";
    case Oracle::LowerValue:
      return "g";
    case Oracle::LowerGradY:
      return "grad_y g";
    case Oracle::LowerGradX:
      return "grad_x g";
    case Oracle::UpperGradY:
      return "grad_y f";
    case Oracle::UpperGradX:
      return "grad_x f";
    case Oracle::Hvp:
      return "hvp";
    case Oracle::HvpMulti:
      return "hvp_multi";
    case Oracle::Jvp:
      return "jvp";
  }
  return "";
}

/// Forwards to `inner` (whose counts also grow). `hidden` capabilities are removed; the output of `scaled`
/// is multiplied by `factor`. Collective like the inner problem.
class ForwardingProblem : public bilevel::BilevelProblem {
 public:
  explicit ForwardingProblem(std::shared_ptr<bilevel::BilevelProblem> inner,
                             bilevel::Capability hidden = bilevel::Capability::None,
                             Oracle scaled = Oracle::None,
                             PetscReal factor = 1.5)
      : inner_(std::move(inner)), hidden_(hidden), scaled_(scaled), factor_(factor) {}

  bilevel::BilevelProblem& inner() { return *inner_; }
  /// From now on a full batch means these rows of the training (lower) and validation (upper) sets.
  void pin_batches(std::vector<PetscInt> lower, std::vector<PetscInt> upper) {
    lower_rows_ = std::move(lower);
    upper_rows_ = std::move(upper);
  }
  MPI_Comm comm() const override { return inner_->comm(); }
  std::string name() const override { return inner_->name(); }
  bilevel::petsc::VecHandle create_upper_vec() const override { return inner_->create_upper_vec(); }
  bilevel::petsc::VecHandle create_lower_vec() const override { return inner_->create_lower_vec(); }
  bilevel::Capability capabilities() const override {
    return static_cast<bilevel::Capability>(static_cast<unsigned>(inner_->capabilities()) &
                                            ~static_cast<unsigned>(hidden_));
  }
  bilevel::DatasetSizes dataset_sizes() const override { return inner_->dataset_sizes(); }
  bilevel::ProblemHints hints() const override { return inner_->hints(); }
  void initial_point(Vec x, Vec y) override { inner_->initial_point(x, y); }
  std::optional<PetscReal> lower_lipschitz_bound(Vec x) override { return inner_->lower_lipschitz_bound(x); }
  std::optional<PetscReal> solve_lower(Vec x, Vec y, PetscReal rtol) override {
    return inner_->solve_lower(x, y, rtol);
  }
  bilevel::TestMetrics evaluate_test(Vec x, Vec y) override { return inner_->evaluate_test(x, y); }
  void exact_lower_solution(Vec x, Vec y_star) override { inner_->exact_lower_solution(x, y_star); }
  void exact_hypergradient(Vec x, Vec grad) override {
    ++exact_calls;
    inner_->exact_hypergradient(x, grad);
  }
  PetscReal exact_upper_objective(Vec x) override { return inner_->exact_upper_objective(x); }
  PetscReal optimal_upper_objective() override { return inner_->optimal_upper_objective(); }

  int exact_calls = 0;  ///< exact_hypergradient calls through this wrapper

 protected:
  PetscReal upper_value_impl(Vec x, Vec y, const bilevel::Batch& b) override {
    return value(Oracle::UpperValue, inner_->upper_value(x, y, upper(b)));
  }
  void upper_grad_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gx, Vec gy) override {
    inner_->upper_grad(x, y, upper(b), gx, gy);
    if (gx) scale(Oracle::UpperGradX, gx);
    if (gy) scale(Oracle::UpperGradY, gy);
  }
  PetscReal lower_value_impl(Vec x, Vec y, const bilevel::Batch& b) override {
    return value(Oracle::LowerValue, inner_->lower_value(x, y, lower(b)));
  }
  void lower_grad_y_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gy) override {
    inner_->lower_grad_y(x, y, lower(b), gy);
    scale(Oracle::LowerGradY, gy);
  }
  void lower_grad_x_impl(Vec x, Vec y, const bilevel::Batch& b, Vec gx) override {
    inner_->lower_grad_x(x, y, lower(b), gx);
    scale(Oracle::LowerGradX, gx);
  }
  void lower_hvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    inner_->lower_hvp(x, y, lower(b), w, out);
    scale(Oracle::Hvp, out);
  }
  // the inner problem's own one-pass product, so that hvp and hvp_multi are separate oracles here too
  void lower_hvp_multi_impl(
      Vec x, Vec y, const bilevel::Batch& b, std::span<const Vec> w, std::span<const Vec> out) override {
    inner_->lower_hvp_multi(x, y, lower(b), w, out);
    for (Vec o : out) scale(Oracle::HvpMulti, o);
  }
  void lower_jvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    inner_->lower_jvp(x, y, lower(b), w, out);
    scale(Oracle::Jvp, out);
  }
  void lower_preconditioner_setup_impl(Vec x, Vec y, bilevel::PreconditionerKind kind) override {
    inner_->lower_preconditioner_setup(x, y, kind);
  }
  void lower_precondition_impl(Vec r, Vec out) override { inner_->lower_precondition(r, out); }

 private:
  bilevel::Batch lower(const bilevel::Batch& b) const {
    return b.full && !lower_rows_.empty() ? bilevel::Batch::of(lower_rows_) : b;
  }
  bilevel::Batch upper(const bilevel::Batch& b) const {
    return b.full && !upper_rows_.empty() ? bilevel::Batch::of(upper_rows_) : b;
  }
  PetscReal value(Oracle o, PetscReal v) const { return o == scaled_ ? factor_ * v : v; }
  void scale(Oracle o, Vec v) const {
    if (o == scaled_) BILEVEL_PETSC_CALL(VecScale(v, factor_));
  }

  std::shared_ptr<bilevel::BilevelProblem> inner_;
  bilevel::Capability hidden_;
  Oracle scaled_;
  PetscReal factor_;
  std::vector<PetscInt> lower_rows_, upper_rows_;
};

}  // namespace testsupport
