#include "bilevel/blocks/single_loop.hpp"

#include "bilevel/core/upper_stepper.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel {

void SingleLoopStep::setup(BilevelProblem& problem, std::uint64_t seed, const SingleLoopSettings& settings) {
  settings_ = settings;
  const DatasetSizes n = problem.dataset_sizes();
  if (n.lower == 0) settings_.batches.lower = 0;  // deterministic problems: every batch is the full one
  if (n.upper == 0) settings_.batches.upper = 0;
  v_ = problem.create_lower_vec();
  gy_ = problem.create_lower_vec();
  hv_ = problem.create_lower_vec();
  fy_ = problem.create_lower_vec();
  fx_ = problem.create_upper_vec();
  jv_ = problem.create_upper_vec();
  d_ = problem.create_upper_vec();
  BILEVEL_PETSC_CALL(VecSet(v_, 0.0));
  BILEVEL_PETSC_CALL(VecSet(d_, 0.0));
  samplers_ = StepSamplers(seed);
  inner_.setup(n.lower, settings_.batches.lower, seed, SamplerStream::Lower);
  outer_.setup(n.upper, settings_.batches.upper, seed, SamplerStream::Upper);
  bytes_ = 0;
  if (!settings_.saga) return;
  PetscInt dy = 0, dx = 0;
  BILEVEL_PETSC_CALL(VecGetSize(v_, &dy));
  BILEVEL_PETSC_CALL(VecGetSize(fx_, &dx));
  // memory n_b (2 dy + dx) + n_ob (dy + dx) (algorithms.md §3.6), plus one mean per table
  bytes_ = bilevel::saga_bytes(inner_.slots(), {dy, dy, dx}) + bilevel::saga_bytes(outer_.slots(), {dy, dx});
  if (settings_.max_saga_bytes > 0 && bytes_ > settings_.max_saga_bytes)
    throw InputError("SAGA memory tables need " + std::to_string(bytes_ >> 20) + " MiB (" +
                     std::to_string(inner_.slots()) + " inner and " + std::to_string(outer_.slots()) +
                     " outer minibatches), more than " + settings_.option + " = " +
                     std::to_string(settings_.max_saga_bytes >> 20) +
                     " MiB: raise it or use larger minibatches (-bilevel_batch_size)");
  gy_table_.setup(gy_, inner_.slots());
  hv_table_.setup(hv_, inner_.slots());
  jv_table_.setup(jv_, inner_.slots());
  fy_table_.setup(fy_, outer_.slots());
  fx_table_.setup(fx_, outer_.slots());
}

StepResult SingleLoopStep::run(AlgorithmContext& ctx, PetscReal rho, PetscReal theta, PetscReal x_scale) {
  BilevelProblem& p = ctx.problem;
  const DatasetSizes n = p.dataset_sizes();
  StepResult r;
  // ξ_k (shared by ∇_y g, H v and J v) and ζ_k (∇f)
  PetscInt islot = 0, oslot = 0;
  Batch ib, ob;
  if (settings_.saga) {
    islot = inner_.draw();
    ib = inner_.batch();
    oslot = outer_.draw();
    ob = outer_.batch();
  } else {
    ib = samplers_.lower.draw(n.lower, settings_.batches.lower);
    ob = samplers_.upper.draw(n.upper, settings_.batches.upper);
  }
  p.lower_grad_y(ctx.x, ctx.y, ib, gy_);     // ∇_y g(x_k, y_k; ξ)
  p.lower_hvp(ctx.x, ctx.y, ib, v_, hv_);    // H(x_k, y_k; ξ) v_k
  p.lower_jvp(ctx.x, ctx.y, ib, v_, jv_);    // J(x_k, y_k; ξ) v_k
  p.upper_grad(ctx.x, ctx.y, ob, fx_, fy_);  // ∇_x f, ∇_y f on ζ
  if (settings_.saga) {                      // each oracle o <- o − m_i + m̄, memory updated (SABA)
    gy_table_.correct(islot, gy_);
    hv_table_.correct(islot, hv_);
    jv_table_.correct(islot, jv_);
    fy_table_.correct(oslot, fy_);
    fx_table_.correct(oslot, fx_);
  }
  BILEVEL_PETSC_CALL(VecAXPY(hv_, -1.0, fy_));  // D_v = H v − ∇_y f
  BILEVEL_PETSC_CALL(VecAXPY(fx_, -1.0, jv_));  // D_x = ∇_x f − J v
  PetscReal norms[3] = {0, 0, 0};
  BILEVEL_PETSC_CALL(VecNorm(gy_, NORM_2, &norms[0]));
  BILEVEL_PETSC_CALL(VecNorm(hv_, NORM_2, &norms[1]));
  BILEVEL_PETSC_CALL(VecNorm(fx_, NORM_2, &norms[2]));
  require_finite(norms[2], ConvergedReason::DivergedNaN, "the norm of the hypergradient estimate");
  require_finite(norms[0], ConvergedReason::DivergedInnerSolve, "the norm of the lower gradient");
  BILEVEL_PETSC_CALL(VecAXPY(ctx.y, -rho, gy_));  // y_{k+1} = y_k − ρ D_y
  BILEVEL_PETSC_CALL(VecAXPY(v_, -rho, hv_));     // v_{k+1} = v_k − ρ D_v
  Vec dir = fx_;
  if (settings_.average) {  // d_k = (1 − θ) d_{k−1} + θ D_x (MA-SOBA)
    BILEVEL_PETSC_CALL(VecAXPBY(d_, theta, 1.0 - theta, fx_));
    BILEVEL_PETSC_CALL(VecCopy(d_, fx_));
  }
  if (x_scale != 1.0) BILEVEL_PETSC_CALL(VecScale(dir, x_scale));
  ctx.upper.step(ctx.x, dir);  // x_{k+1} = P(x_k − γ_k d_k)
  r.hypergradient_norm = norms[2];
  r.lower_residual = norms[0];
  r.linear_residual = norms[1];
  r.inner_iterations = 1;
  if (x_scale == 1.0) {  // the direction x moved along, and v (the bound holds for any y, v: docs/metrics.md)
    r.hypergradient = dir;
    r.linear_solution = v_;
  }
  return r;
}

void SingleLoopStep::declare_state(StateRegistry& state, const std::string& prefix) {
  state.add(prefix + "v", v_.get());
  if (settings_.average) state.add(prefix + "average", d_.get());
  state.add(prefix, samplers_);
  inner_.declare_state(state, prefix + "inner_slots");
  outer_.declare_state(state, prefix + "outer_slots");
  if (!settings_.saga) return;
  gy_table_.declare_state(state, prefix + "saga_grad_y_g");
  hv_table_.declare_state(state, prefix + "saga_hvp");
  jv_table_.declare_state(state, prefix + "saga_jvp");
  fy_table_.declare_state(state, prefix + "saga_grad_y_f");
  fx_table_.declare_state(state, prefix + "saga_grad_x_f");
}

void SingleLoopStep::view(PetscViewer viewer) const {
  BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(viewer,
                                            "lower batch %d, upper batch %d (0 = full; shared by the "
                                            "three lower oracles of an iteration)\n",
                                            static_cast<int>(settings_.batches.lower),
                                            static_cast<int>(settings_.batches.upper)));
  if (settings_.saga)
    BILEVEL_PETSC_CALL(PetscViewerASCIIPrintf(
        viewer,
        "SAGA memory: %d inner minibatches x (2 dy + dx) + %d outer x (dy + dx) = %.3g MiB over all ranks\n",
        static_cast<int>(inner_.slots()),
        static_cast<int>(outer_.slots()),
        static_cast<double>(bytes_) / (1 << 20)));
}

}  // namespace bilevel
