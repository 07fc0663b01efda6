#include "bilevel/problems/callback.hpp"

#include "bilevel/petsc/error.hpp"

namespace bilevel {

CallbackProblem::CallbackProblem(
    MPI_Comm comm, PetscInt dim_upper, PetscInt dim_lower, ProblemCallbacks callbacks, std::string name)
    : comm_(comm), dx_(dim_upper), dy_(dim_lower), cb_(std::move(callbacks)), name_(std::move(name)) {
  if (dx_ < 1 || dy_ < 1) throw InputError("CallbackProblem: dimensions must be >= 1");
  if (!cb_.upper_grad) throw InputError("CallbackProblem: the upper_grad callback is required");
  if (!cb_.lower_grad_y) throw InputError("CallbackProblem: the lower_grad_y callback is required");
  if (!cb_.lower_hvp) throw InputError("CallbackProblem: the lower_hvp callback is required");
  if (!cb_.lower_jvp) throw InputError("CallbackProblem: the lower_jvp callback is required");
}

petsc::VecHandle CallbackProblem::create_upper_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, dx_, v.out()));
  return v;
}

petsc::VecHandle CallbackProblem::create_lower_vec() const {
  petsc::VecHandle v;
  BILEVEL_PETSC_CALL(VecCreateMPI(comm_, PETSC_DECIDE, dy_, v.out()));
  return v;
}

Capability CallbackProblem::capabilities() const {
  Capability c = Capability::None;
  if (cb_.upper_value) c = c | Capability::UpperValue;
  if (cb_.lower_value) c = c | Capability::LowerValue;
  if (cb_.lower_grad_x) c = c | Capability::LowerGradX;
  if (sizes_.lower > 0) c = c | Capability::Stochastic;
  return c;
}

void CallbackProblem::set_dataset_sizes(DatasetSizes sizes) {
  if (sizes.lower < 0 || sizes.upper < 0)
    throw InputError("CallbackProblem::set_dataset_sizes: sizes must be >= 0");
  const std::pair<const char*, bool> batched[] = {
      {"upper_grad", cb_.upper_grad.takes_batch()},
      {"lower_grad_y", cb_.lower_grad_y.takes_batch()},
      {"lower_hvp", cb_.lower_hvp.takes_batch()},
      {"lower_jvp", cb_.lower_jvp.takes_batch()},
      {"upper_value", !cb_.upper_value || cb_.upper_value.takes_batch()},
      {"lower_value", !cb_.lower_value || cb_.lower_value.takes_batch()},
      {"lower_grad_x", !cb_.lower_grad_x || cb_.lower_grad_x.takes_batch()}};
  if (sizes.lower > 0)
    for (const auto& [name, ok] : batched)
      if (!ok)
        throw InputError(
            std::string("CallbackProblem '") + name_ + "': the " + name +
            " callback does not take the minibatch (write it as (Vec x, Vec y, const bilevel::Batch& "
            "batch, ...)), so the problem cannot have samples");
  sizes_ = sizes;
}

void CallbackProblem::initial_point(Vec x, Vec y) {
  if (cb_.initial_point) return cb_.initial_point(x, y);
  BilevelProblem::initial_point(x, y);
}

PetscReal CallbackProblem::upper_value_impl(Vec x, Vec y, const Batch& b) {
  return cb_.upper_value ? cb_.upper_value(x, y, b) : BilevelProblem::upper_value_impl(x, y, b);
}
void CallbackProblem::upper_grad_impl(Vec x, Vec y, const Batch& b, Vec gx, Vec gy) {
  cb_.upper_grad(x, y, b, gx, gy);
}
PetscReal CallbackProblem::lower_value_impl(Vec x, Vec y, const Batch& b) {
  return cb_.lower_value ? cb_.lower_value(x, y, b) : BilevelProblem::lower_value_impl(x, y, b);
}
void CallbackProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& b, Vec gy) {
  cb_.lower_grad_y(x, y, b, gy);
}
void CallbackProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& b, Vec gx) {
  if (!cb_.lower_grad_x) return BilevelProblem::lower_grad_x_impl(x, y, b, gx);
  cb_.lower_grad_x(x, y, b, gx);
}
void CallbackProblem::lower_hvp_impl(Vec x, Vec y, const Batch& b, Vec w, Vec out) {
  cb_.lower_hvp(x, y, b, w, out);
}
void CallbackProblem::lower_jvp_impl(Vec x, Vec y, const Batch& b, Vec w, Vec out) {
  cb_.lower_jvp(x, y, b, w, out);
}

}  // namespace bilevel
