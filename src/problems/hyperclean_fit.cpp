/// \file `hyperclean`'s accurate lower solve: the fit of the lower level with fixed sample weights by the
/// library's preconditioned L-BFGS (core/lbfgs.hpp) on the model replicated on every rank (dy is small):
/// each evaluation is one pass over the local rows and one MPI_Allreduce of the gradient, and the
/// recursion itself runs redundantly on sequential Vecs, without communication.
#include <algorithm>
#include <vector>

#include "bilevel/core/lbfgs.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "kron_preconditioner.hpp"
#include "multinomial.hpp"

namespace bilevel {

FitReport HypercleanProblem::fit(Vec y, FitWeights weights, PetscReal gatol, PetscInt max_it, Vec x) {
  if (weights == FitWeights::Sigmoid && !x) throw InputError("hyperclean fit: FitWeights::Sigmoid needs x");
  check_layouts(weights == FitWeights::Sigmoid ? x : nullptr, y);
  const double t0 = MPI_Wtime();
  const detail::MultinomialSide& side = engine_->train();
  std::vector<PetscReal> wts(static_cast<std::size_t>(side.data.local_rows()), 1.0);
  if (weights == FitWeights::CleanOnly)
    for (std::size_t i = 0; i < wts.size(); ++i) wts[i] = side.data.labels[i] == clean_labels_[i] ? 1.0 : 0.0;
  if (weights == FitWeights::Sigmoid) {
    refresh_weights(x);
    wts = weight_;
  }

  // Preconditioner P = (c G + diag(μ, …, μ, μ_b)) ⊗ I_K (KronPreconditioner), refactored every 10
  // iterations with the curvature c of the probabilities of the last evaluation (in the cache).
  ensure_gram();
  detail::KronPreconditioner P(n_features_ + 1, classes_);

  petsc::VecHandle yr;  // the replicated model
  BILEVEL_PETSC_CALL(VecCreateSeq(PETSC_COMM_SELF, dy_, yr.out()));
  {
    const PetscScalar* yf = engine_->gather_model(y);
    petsc::WriteView v(yr);
    std::copy(yf, yf + dy_, v.data());
  }
  LbfgsOptions o;
  o.gatol = gatol;
  o.max_it = max_it;
  o.refresh_every = 10;
  o.deadline_comm = comm_;  // the final phase's deadline, when the solver set one
  const LbfgsResult r = lbfgs_minimize(
      [&](Vec yv, Vec g) {
        petsc::ReadView in(yv);
        petsc::WriteView out(g);
        return value_grad_full(in.data(), Batch::all(), wts.data(), out.data());
      },
      yr,
      o,
      [&](Vec in, Vec out) {
        petsc::ReadView i(in);
        petsc::WriteView m(out);
        P.apply(i.data(), m.data());
      },
      [&] { P.factor(gram_, mean_curvature(wts.data()), options_.mu, options_.bias_weight()); });
  {
    petsc::ReadView v(yr);
    petsc::WriteView out(y);
    for (PetscInt l = 0; l < out.size(); ++l) out[l] = v[y_begin_ + l];
  }
  engine_->train().stamps.invalidate();  // the probabilities cached during the fit belong to other models
  FitReport report;
  report.iterations = r.iterations;
  report.objective = r.value;
  report.gradient_norm = r.gradient_norm;
  report.converged = r.converged;
  report.seconds = MPI_Wtime() - t0;
  return report;
}

std::optional<PetscReal> HypercleanProblem::solve_lower(Vec x, Vec y, PetscReal rtol) {
  petsc::VecHandle g = create_lower_vec();
  const OracleCounts saved = counts();
  lower_grad_y(x, y, Batch::all(), g);
  set_counts(saved);
  PetscReal g0 = 0;
  BILEVEL_PETSC_CALL(VecNorm(g, NORM_2, &g0));
  // ||∇g|| <= 1e-5 already fixes the test predictions (docs/performance.md); tighter costs minutes.
  const FitReport r =
      fit(y, FitWeights::Sigmoid, std::max<PetscReal>(rtol * std::max<PetscReal>(1, g0), 1e-5), 500, x);
  return r.gradient_norm;
}

}  // namespace bilevel
