#include "bilevel/problems/callback.hpp"

#include "bilevel/petsc/error.hpp"

namespace bilevel {

CallbackProblem::CallbackProblem(MPI_Comm comm, PetscInt dim_upper, PetscInt dim_lower, ProblemCallbacks callbacks,
                                 std::string name)
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
  return c;
}

void CallbackProblem::initial_point(Vec x, Vec y) {
  if (cb_.initial_point) return cb_.initial_point(x, y);
  BilevelProblem::initial_point(x, y);
}

PetscReal CallbackProblem::upper_value_impl(Vec x, Vec y, const Batch& b) {
  return cb_.upper_value ? cb_.upper_value(x, y) : BilevelProblem::upper_value_impl(x, y, b);
}
void CallbackProblem::upper_grad_impl(Vec x, Vec y, const Batch&, Vec gx, Vec gy) { cb_.upper_grad(x, y, gx, gy); }
PetscReal CallbackProblem::lower_value_impl(Vec x, Vec y, const Batch& b) {
  return cb_.lower_value ? cb_.lower_value(x, y) : BilevelProblem::lower_value_impl(x, y, b);
}
void CallbackProblem::lower_grad_y_impl(Vec x, Vec y, const Batch&, Vec gy) { cb_.lower_grad_y(x, y, gy); }
void CallbackProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& b, Vec gx) {
  if (!cb_.lower_grad_x) return BilevelProblem::lower_grad_x_impl(x, y, b, gx);
  cb_.lower_grad_x(x, y, gx);
}
void CallbackProblem::lower_hvp_impl(Vec x, Vec y, const Batch&, Vec w, Vec out) { cb_.lower_hvp(x, y, w, out); }
void CallbackProblem::lower_jvp_impl(Vec x, Vec y, const Batch&, Vec w, Vec out) { cb_.lower_jvp(x, y, w, out); }

}  // namespace bilevel
