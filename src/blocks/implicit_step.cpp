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
  inner_ = BatchSampler(seed, 1);
  hess_ = BatchSampler(seed, 2);
  jac_ = BatchSampler(seed, 3);
  outer_ = BatchSampler(seed, 4);
}

void ImplicitStep::declare_state(StateRegistry& state, const std::string& prefix) {
  state.add(prefix + "v", v_.get());
  state.add(prefix + "sampler_inner", inner_);
  state.add(prefix + "sampler_hessian", hess_);
  state.add(prefix + "sampler_jacobian", jac_);
  state.add(prefix + "sampler_outer", outer_);
}

Batch ImplicitStep::next_hessian_batch(BilevelProblem& problem) {
  return batches_.lower > 0 ? hess_.next(problem.dataset_sizes().lower, batches_.lower) : Batch::all();
}

void ImplicitStep::gradients(AlgorithmContext& ctx) {
  BilevelProblem& p = ctx.problem;
  const Batch ub = batches_.upper > 0 ? outer_.next(p.dataset_sizes().upper, batches_.upper) : Batch::all();
  p.upper_grad(ctx.x, ctx.y, ub, fx_, fy_);  // ∇_x f, b_k = ∇_y f at (x_k, y_{k+1}) on D_F
}

void ImplicitStep::finish(AlgorithmContext& ctx, StepResult& r) {
  BilevelProblem& p = ctx.problem;
  const Batch jb = batches_.lower > 0 ? jac_.next(p.dataset_sizes().lower, batches_.lower) : Batch::all();
  p.lower_jvp(ctx.x, ctx.y, jb, v_, jv_);       // J v_{k+1}
  BILEVEL_PETSC_CALL(VecAXPY(fx_, -1.0, jv_));  // h_k = ∇_x f − J v_{k+1}
  BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &r.hypergradient_norm));
  ctx.upper.step(ctx.x, fx_);                   // x_{k+1} = P(x_k − step(h_k)) on the coordinator
}

}  // namespace bilevel
