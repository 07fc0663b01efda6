/// \file `hyperclean`'s diagnostics, the summary's extras: the test accuracy of the baseline trained on the
/// noisy labels with uniform weights, and how well σ(x_i) < 1/2 flags the corrupted training samples
/// (precision, recall, F1).
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "multinomial.hpp"

namespace bilevel {

PetscReal HypercleanProblem::baseline_test_accuracy() {
  if (baseline_accuracy_) return *baseline_accuracy_;
  if (!engine_->test()) throw NotImplemented("hyperclean: no test set was given");
  petsc::VecHandle y = create_lower_vec();
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
  fit(y, FitWeights::Uniform);
  baseline_accuracy_ = engine_->evaluate(*engine_->test(), y).accuracy;
  return *baseline_accuracy_;
}

DetectionStats HypercleanProblem::detection(Vec x) const {
  check_layouts(x, nullptr);
  const std::vector<PetscInt>& noisy = engine_->train().data.labels;
  petsc::ReadView xv(x);
  PetscInt local[3] = {0, 0, 0}, global[3] = {0, 0, 0};
  for (PetscInt i = 0; i < xv.size(); ++i) {
    const auto u = static_cast<std::size_t>(i);
    const bool corrupted = noisy[u] != clean_labels_[u];
    const bool flagged = xv[i] < 0;  // σ(x_i) < 1/2
    local[0] += corrupted;
    local[1] += flagged;
    local[2] += corrupted && flagged;
  }
  BILEVEL_PETSC_CALL(MPI_Allreduce(local, global, 3, MPIU_INT, MPI_SUM, comm_));
  DetectionStats d;
  d.corrupted = global[0];
  d.flagged = global[1];
  d.true_positives = global[2];
  d.precision = d.flagged > 0 ? static_cast<PetscReal>(d.true_positives) / d.flagged : 0;
  d.recall = d.corrupted > 0 ? static_cast<PetscReal>(d.true_positives) / d.corrupted : 0;
  d.f1 = d.precision + d.recall > 0 ? 2 * d.precision * d.recall / (d.precision + d.recall) : 0;
  return d;
}

PetscInt HypercleanProblem::corrupted_count() const {
  const std::vector<PetscInt>& noisy = engine_->train().data.labels;
  PetscInt local = 0, global = 0;
  for (std::size_t i = 0; i < clean_labels_.size(); ++i) local += noisy[i] != clean_labels_[i];
  BILEVEL_PETSC_CALL(MPI_Allreduce(&local, &global, 1, MPIU_INT, MPI_SUM, comm_));
  return global;
}

std::vector<std::pair<std::string, PetscReal>> HypercleanProblem::summary_extras(Vec x, Vec) {
  const DetectionStats d = detection(x);
  return {{"baseline_test_accuracy", baseline_test_accuracy()},
          {"detection_precision", d.precision},
          {"detection_recall", d.recall},
          {"detection_f1", d.f1}};
}

}  // namespace bilevel
