#include "bilevel/core/problem.hpp"

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {

std::string_view to_string(UpperStepperType type) {
  switch (type) {
    case UpperStepperType::Sgd: return "sgd";
    case UpperStepperType::Momentum: return "momentum";
    case UpperStepperType::Adam: return "adam";
  }
  return "unknown";
}

bool from_string(std::string_view name, UpperStepperType* type) {
  for (const UpperStepperType t : {UpperStepperType::Sgd, UpperStepperType::Momentum, UpperStepperType::Adam})
    if (name == to_string(t)) {
      *type = t;
      return true;
    }
  return false;
}

std::string to_string(Capability set) {
  std::string out;
  auto add = [&](Capability c, const char* name) {
    if (!has(set, c)) return;
    if (!out.empty()) out += '|';
    out += name;
  };
  add(Capability::UpperValue, "upper_value");
  add(Capability::LowerValue, "lower_value");
  add(Capability::LowerGradX, "lower_grad_x");
  add(Capability::Stochastic, "stochastic");
  add(Capability::ClosedForm, "closed_form");
  add(Capability::TestSet, "test_set");
  add(Capability::LowerPreconditioner, "lower_preconditioner");
  add(Capability::PerSampleUpper, "per_sample_upper");
  return out.empty() ? "none" : out;
}

void BilevelProblem::initial_point(Vec x, Vec y) {
  BILEVEL_PETSC_CALL(VecSet(x, 0.0));
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

std::int64_t BilevelProblem::batch_size(const Batch& batch, bool upper) const {
  if (!batch.full) return static_cast<std::int64_t>(batch.indices.size());
  const DatasetSizes s = dataset_sizes();
  const PetscInt n = upper ? s.upper : s.lower;
  return n > 0 ? n : 1;
}

PetscReal BilevelProblem::upper_value(Vec x, Vec y, const Batch& batch) {
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  ++counts_.value_f;
  counts_.samples += batch_size(batch, true);
  return upper_value_impl(x, y, batch);
}

void BilevelProblem::upper_grad(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  ++counts_.grad_f;
  counts_.samples += batch_size(batch, true);
  upper_grad_impl(x, y, batch, gx, gy);
}

PetscReal BilevelProblem::lower_value(Vec x, Vec y, const Batch& batch) {
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  ++counts_.value_g;
  counts_.samples += batch_size(batch, false);
  return lower_value_impl(x, y, batch);
}

void BilevelProblem::lower_grad_y(Vec x, Vec y, const Batch& batch, Vec gy) {
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  ++counts_.grad_g;
  counts_.samples += batch_size(batch, false);
  lower_grad_y_impl(x, y, batch, gy);
}

void BilevelProblem::lower_grad_y_multi(std::span<const Vec> x, Vec y, const Batch& batch, std::span<const Vec> gy) {
  if (x.size() != gy.size())
    throw Error("lower_grad_y_multi: " + std::to_string(x.size()) + " points, " + std::to_string(gy.size()) + " outputs");
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  counts_.grad_g += static_cast<std::int64_t>(x.size());
  counts_.samples += static_cast<std::int64_t>(x.size()) * batch_size(batch, false);
  lower_grad_y_multi_impl(x, y, batch, gy);
}

void BilevelProblem::lower_grad_y_multi_impl(std::span<const Vec> x, Vec y, const Batch& batch, std::span<const Vec> gy) {
  for (std::size_t i = 0; i < x.size(); ++i) lower_grad_y_impl(x[i], y, batch, gy[i]);
}

void BilevelProblem::lower_grad_y_dot_multi(std::span<const Vec> x, Vec y, const Batch& batch, Vec v,
                                            std::span<PetscReal> dots) {
  if (x.size() != dots.size())
    throw Error("lower_grad_y_dot_multi: " + std::to_string(x.size()) + " points, " + std::to_string(dots.size()) +
                " outputs");
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  counts_.grad_g += static_cast<std::int64_t>(x.size());
  counts_.samples += static_cast<std::int64_t>(x.size()) * batch_size(batch, false);
  lower_grad_y_dot_multi_impl(x, y, batch, v, dots);
}

void BilevelProblem::lower_grad_y_dot_multi_impl(std::span<const Vec> x, Vec y, const Batch& batch, Vec v,
                                                 std::span<PetscReal> dots) {
  while (dot_scratch_.size() < x.size()) dot_scratch_.push_back(create_lower_vec());  // kept between calls
  std::vector<Vec> raw(dot_scratch_.begin(), dot_scratch_.begin() + static_cast<std::ptrdiff_t>(x.size()));
  lower_grad_y_multi_impl(x, y, batch, raw);
  for (std::size_t i = 0; i < x.size(); ++i) BILEVEL_PETSC_CALL(VecDot(raw[i], v, &dots[i]));
}

void BilevelProblem::lower_grad_y_dot_coordinates(Vec x, Vec y, const Batch& batch, Vec v, PetscReal h,
                                                  std::span<const PetscInt> coords, std::span<PetscReal> out) {
  if (coords.size() != out.size())
    throw Error("lower_grad_y_dot_coordinates: " + std::to_string(coords.size()) + " coordinates, " +
                std::to_string(out.size()) + " outputs");
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  const auto q = static_cast<std::int64_t>(coords.size());
  counts_.grad_g += q + 1;
  const std::int64_t rows = batch_size(batch, false);
  counts_.samples += has(capabilities(), Capability::PerSampleUpper) ? rows + q : (q + 1) * rows;
  lower_grad_y_dot_coordinates_impl(x, y, batch, v, h, coords, out);
}

void BilevelProblem::lower_grad_y_dot_coordinates_impl(Vec x, Vec y, const Batch& batch, Vec v, PetscReal h,
                                                       std::span<const PetscInt> coords, std::span<PetscReal> out) {
  while (dot_scratch_.size() < 2) dot_scratch_.push_back(create_lower_vec());
  if (!dot_x_scratch_) dot_x_scratch_ = create_upper_vec();  // kept between calls
  Vec xp = dot_x_scratch_;
  BILEVEL_PETSC_CALL(VecCopy(x, xp));
  PetscReal base = 0;
  lower_grad_y_impl(x, y, batch, dot_scratch_[0]);
  BILEVEL_PETSC_CALL(VecDot(dot_scratch_[0], v, &base));
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(xp, &lo, &hi));
  for (std::size_t k = 0; k < coords.size(); ++k) {
    const PetscInt i = coords[k];
    PetscReal xi = 0;
    if (i >= lo && i < hi) {
      petsc::WriteView w(xp);
      xi = w[i - lo];
      w[i - lo] = xi + h;
    }
    lower_grad_y_impl(xp, y, batch, dot_scratch_[1]);
    BILEVEL_PETSC_CALL(VecDot(dot_scratch_[1], v, &out[k]));
    out[k] = (out[k] - base) / h;
    if (i >= lo && i < hi) {
      petsc::WriteView w(xp);
      w[i - lo] = xi;
    }
  }
}

void BilevelProblem::lower_grad_x(Vec x, Vec y, const Batch& batch, Vec gx) {
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  ++counts_.grad_g;
  counts_.samples += batch_size(batch, false);
  lower_grad_x_impl(x, y, batch, gx);
}

void BilevelProblem::lower_hvp(Vec x, Vec y, const Batch& batch, Vec w, Vec out) {
  petsc::ScopedEvent ev(petsc::events().oracle_hvp);
  ++counts_.hvp;
  counts_.samples += batch_size(batch, false);
  lower_hvp_impl(x, y, batch, w, out);
}

void BilevelProblem::lower_hvp_multi(Vec x, Vec y, const Batch& batch, std::span<const Vec> w,
                                     std::span<const Vec> out) {
  BILEVEL_ASSERT(w.size() == out.size());
  petsc::ScopedEvent ev(petsc::events().oracle_hvp);
  counts_.hvp += static_cast<std::int64_t>(w.size());
  counts_.samples += batch_size(batch, false);
  lower_hvp_multi_impl(x, y, batch, w, out);
}

void BilevelProblem::lower_jvp(Vec x, Vec y, const Batch& batch, Vec w, Vec out) {
  petsc::ScopedEvent ev(petsc::events().oracle_jvp);
  ++counts_.jvp;
  counts_.samples += batch_size(batch, false);
  lower_jvp_impl(x, y, batch, w, out);
}

void BilevelProblem::lower_preconditioner_setup(Vec x, Vec y, PreconditionerKind kind) {
  petsc::ScopedEvent ev(petsc::events().precondition);
  lower_preconditioner_setup_impl(x, y, kind);
}

void BilevelProblem::lower_precondition(Vec r, Vec out) {
  petsc::ScopedEvent ev(petsc::events().precondition);
  lower_precondition_impl(r, out);
}

void BilevelProblem::lower_precondition_multi(std::span<const Vec> r, std::span<const Vec> out) {
  if (r.size() != out.size()) throw Error("lower_precondition_multi: " + std::to_string(r.size()) + " inputs, " +
                                          std::to_string(out.size()) + " outputs");
  petsc::ScopedEvent ev(petsc::events().precondition);
  lower_precondition_multi_impl(r, out);
}

void BilevelProblem::lower_precondition_multi_impl(std::span<const Vec> r, std::span<const Vec> out) {
  for (std::size_t i = 0; i < r.size(); ++i) lower_precondition_impl(r[i], out[i]);
}

PetscReal BilevelProblem::upper_value_impl(Vec, Vec, const Batch&) {
  throw NotImplemented("problem '" + name() + "' does not provide the upper-level value f");
}
PetscReal BilevelProblem::lower_value_impl(Vec, Vec, const Batch&) {
  throw NotImplemented("problem '" + name() + "' does not provide the lower-level value g");
}
void BilevelProblem::lower_grad_x_impl(Vec, Vec, const Batch&, Vec) {
  throw NotImplemented("problem '" + name() + "' does not provide the lower-level gradient in x");
}
void BilevelProblem::lower_hvp_multi_impl(Vec x, Vec y, const Batch& batch, std::span<const Vec> w,
                                          std::span<const Vec> out) {
  for (std::size_t i = 0; i < w.size(); ++i) lower_hvp_impl(x, y, batch, w[i], out[i]);
}
void BilevelProblem::lower_preconditioner_setup_impl(Vec, Vec, PreconditionerKind) {
  throw NotImplemented("problem '" + name() + "' has no lower-level preconditioner");
}
void BilevelProblem::lower_precondition_impl(Vec, Vec) {
  throw NotImplemented("problem '" + name() + "' has no lower-level preconditioner");
}
TestMetrics BilevelProblem::evaluate_test(Vec, Vec) {
  throw NotImplemented("problem '" + name() + "' has no test set");
}
std::optional<PetscReal> BilevelProblem::validation_accuracy(Vec, Vec) { return std::nullopt; }
void BilevelProblem::exact_lower_solution(Vec, Vec) {
  throw NotImplemented("problem '" + name() + "' has no closed-form lower solution");
}
void BilevelProblem::exact_hypergradient(Vec, Vec) {
  throw NotImplemented("problem '" + name() + "' has no closed-form hypergradient");
}
PetscReal BilevelProblem::exact_upper_objective(Vec) {
  throw NotImplemented("problem '" + name() + "' has no closed-form upper objective");
}
PetscReal BilevelProblem::optimal_upper_objective() {
  throw NotImplemented("problem '" + name() + "' has no known optimum");
}

}  // namespace bilevel
