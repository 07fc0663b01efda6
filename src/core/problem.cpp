#include "bilevel/core/problem.hpp"

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"

namespace bilevel {

std::string_view to_string(UpperStepperType type) {
  switch (type) {
    case UpperStepperType::Sgd:
      return "sgd";
    case UpperStepperType::Momentum:
      return "momentum";
    case UpperStepperType::Adam:
      return "adam";
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

OracleCounts& OracleCounts::operator+=(const OracleCounts& other) {
  grad_f += other.grad_f;
  grad_g += other.grad_g;
  hvp += other.hvp;
  jvp += other.jvp;
  samples += other.samples;
  value_f += other.value_f;
  value_g += other.value_g;
  return *this;
}

void allreduce(OracleCounts& counts, MPI_Comm comm) {
  // Seven 64-bit counters, summed in one reduction (a new counter must be added here and in operator+=).
  static_assert(sizeof(OracleCounts) == 7 * sizeof(std::int64_t));
  std::int64_t* fields[] = {&counts.grad_f,
                            &counts.grad_g,
                            &counts.hvp,
                            &counts.jvp,
                            &counts.samples,
                            &counts.value_f,
                            &counts.value_g};
  std::int64_t local[7], total[7];
  for (int i = 0; i < 7; ++i) local[i] = *fields[i];
  MPI_Allreduce(local, total, 7, MPI_INT64_T, MPI_SUM, comm);
  for (int i = 0; i < 7; ++i) *fields[i] = total[i];
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

void BilevelProblem::lower_grad_y_multi(std::span<const Vec> x,
                                        Vec y,
                                        const Batch& batch,
                                        std::span<const Vec> gy) {
  if (x.size() != gy.size())
    throw Error("lower_grad_y_multi: " + std::to_string(x.size()) + " points, " + std::to_string(gy.size()) +
                " outputs");
  petsc::ScopedEvent ev(petsc::events().oracle_grad);
  counts_.grad_g += static_cast<std::int64_t>(x.size());
  counts_.samples += static_cast<std::int64_t>(x.size()) * batch_size(batch, false);
  lower_grad_y_multi_impl(x, y, batch, gy);
}

void BilevelProblem::lower_grad_y_multi_impl(std::span<const Vec> x,
                                             Vec y,
                                             const Batch& batch,
                                             std::span<const Vec> gy) {
  for (std::size_t i = 0; i < x.size(); ++i) lower_grad_y_impl(x[i], y, batch, gy[i]);
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

void BilevelProblem::lower_hvp_multi(
    Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out) {
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
  ++preconditioner_setups_;
}

void BilevelProblem::lower_precondition(Vec r, Vec out) {
  petsc::ScopedEvent ev(petsc::events().precondition);
  lower_precondition_impl(r, out);
}

void BilevelProblem::lower_precondition_multi(std::span<const Vec> r, std::span<const Vec> out) {
  if (r.size() != out.size())
    throw Error("lower_precondition_multi: " + std::to_string(r.size()) + " inputs, " +
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
void BilevelProblem::lower_hvp_multi_impl(
    Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out) {
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
std::optional<PetscReal> BilevelProblem::validation_accuracy(Vec, Vec) {
  return std::nullopt;
}
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
