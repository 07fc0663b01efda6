#include "bilevel/blocks/implicit_step.hpp"

#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {

void ImplicitStep::setup(BilevelProblem& problem, std::uint64_t seed, ImplicitBatches batches) {
  batches_ = batches;
  const DatasetSizes n = problem.dataset_sizes();
  if (n.lower == 0) batches_.lower = 0;  // deterministic problems: every batch is the full one
  if (n.upper == 0) batches_.upper = 0;
  v_ = problem.create_lower_vec();
  fy_ = problem.create_lower_vec();
  fx_ = problem.create_upper_vec();
  jv_ = problem.create_upper_vec();
  BILEVEL_PETSC_CALL(VecSet(v_, 0.0));
  samplers_ = StepSamplers(seed);
}

void ImplicitStep::declare_state(StateRegistry& state, const std::string& prefix) {
  state.add(prefix + "v", v_.get());
  state.add(prefix, samplers_);
}

Batch ImplicitStep::next_hessian_batch(BilevelProblem& problem) {
  return samplers_.hessian.draw(problem.dataset_sizes().lower, batches_.lower);
}

void ImplicitStep::gradients(AlgorithmContext& ctx) {
  BilevelProblem& p = ctx.problem;
  const Batch ub = samplers_.upper.draw(p.dataset_sizes().upper, batches_.upper);
  p.upper_grad(ctx.x, ctx.y, ub, fx_, fy_);  // ∇_x f, b_k = ∇_y f at (x_k, y_{k+1}) on D_F
}

void ImplicitStep::finish(AlgorithmContext& ctx, StepResult& r) {
  const Batch jb = samplers_.jacobian.draw(ctx.problem.dataset_sizes().lower, batches_.lower);
  r.hypergradient_norm = hypergradient_step(ctx, jb, v_, fx_, jv_);  // h_k = ∇_x f − J v_{k+1}, x_{k+1}
  r.hypergradient = fx_;
  r.linear_solution = v_;
}

PetscReal hypergradient_step(AlgorithmContext& ctx, const Batch& jacobian_batch, Vec v, Vec fx, Vec jv) {
  ctx.problem.lower_jvp(ctx.x, ctx.y, jacobian_batch, v, jv);  // J v
  BILEVEL_PETSC_CALL(VecAXPY(fx, -1.0, jv));                   // h = ∇_x f − J v
  return upper_step_along(ctx, fx);
}

PetscReal upper_step_along(AlgorithmContext& ctx, Vec h) {
  PetscReal norm = 0;
  BILEVEL_PETSC_CALL(VecNorm(h, NORM_2, &norm));
  require_finite(norm, ConvergedReason::DivergedNaN, "the norm of the hypergradient estimate");
  ctx.upper.step(ctx.x, h);  // x <- P(x − step(h)) on the coordinator
  return norm;
}

}  // namespace bilevel
