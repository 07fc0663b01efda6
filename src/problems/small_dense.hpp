#pragma once
/// \file Private helpers of the synthetic sample problems (finite_sum_quadratic, hyper_representation,
/// multitask): small dense symmetric matrices replicated on every rank (row-major, closed forms), the
/// local part of a minibatch of sharded samples, and writing this rank's slice of a replicated vector.
/// Not installed; used by src/problems/*.cpp only.
#include <petscvec.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel::detail {

/// Cholesky factor L (lower, row-major n x n) of an SPD matrix A = L Lᵀ, replicated. Not collective.
class SmallCholesky {
 public:
  /// Factors `a` (row-major n x n, symmetric); returns false when A is not numerically positive definite.
  bool factor(const std::vector<double>& a, PetscInt n) {
    n_ = n;
    l_ = a;
    for (PetscInt j = 0; j < n; ++j) {
      double d = l_[j * n + j];
      for (PetscInt k = 0; k < j; ++k) d -= l_[j * n + k] * l_[j * n + k];
      if (!(d > 0)) return false;
      l_[j * n + j] = std::sqrt(d);
      for (PetscInt i = j + 1; i < n; ++i) {
        double s = l_[i * n + j];
        for (PetscInt k = 0; k < j; ++k) s -= l_[i * n + k] * l_[j * n + k];
        l_[i * n + j] = s / l_[j * n + j];
      }
    }
    return true;
  }
  /// b <- A⁻¹ b (forward then backward substitution).
  void solve(double* b) const {
    const PetscInt n = n_;
    for (PetscInt i = 0; i < n; ++i) {
      for (PetscInt k = 0; k < i; ++k) b[i] -= l_[i * n + k] * b[k];
      b[i] /= l_[i * n + i];
    }
    for (PetscInt i = n - 1; i >= 0; --i) {
      for (PetscInt k = i + 1; k < n; ++k) b[i] -= l_[k * n + i] * b[k];
      b[i] /= l_[i * n + i];
    }
  }
  PetscInt size() const { return n_; }

 private:
  std::vector<double> l_;
  PetscInt n_ = 0;
};

/// (λ_min, λ_max) of a symmetric row-major n x n matrix (LAPACK syev on a copy). Not collective.
std::pair<double, double> symmetric_eigen_range(std::vector<double> a, PetscInt n);

/// Samples [begin, end) of a set of n sharded over the ranks; select() picks the local part of a batch
/// (sorted global indices, replicated). Not collective.
class LocalSamples {
 public:
  LocalSamples() = default;
  LocalSamples(PetscInt begin, PetscInt end, PetscInt n) : begin_(begin), end_(end), n_(n) {}
  /// Local samples of `batch`; an index outside [0, n) is an InputError naming `what`.
  void select(const Batch& batch, const std::string& what) {
    if (batch.full) {
      first_ = nullptr;
      count_ = end_ - begin_;
      global_ = n_;
      return;
    }
    const auto idx = batch.indices;
    if (idx.empty()) throw InputError("empty batch on " + what);
    if (idx.front() < 0 || idx.back() >= n_)
      throw InputError("batch index out of range [0, " + std::to_string(n_) + ") on " + what);
    const auto lo = std::lower_bound(idx.begin(), idx.end(), begin_);
    const auto hi = std::lower_bound(lo, idx.end(), end_);
    first_ = idx.data() + (lo - idx.begin());
    count_ = static_cast<PetscInt>(hi - lo);
    global_ = static_cast<PetscInt>(idx.size());
  }
  PetscInt count() const { return count_; }  ///< local samples of the batch
  /// Local number (0-based from begin) of the k-th local sample of the batch.
  PetscInt local(PetscInt k) const { return first_ ? first_[k] - begin_ : k; }
  PetscInt global_size() const { return global_; }  ///< the batch's global size (divisor of means)
  PetscInt begin() const { return begin_; }
  PetscInt end() const { return end_; }
  PetscInt total() const { return n_; }

 private:
  PetscInt begin_ = 0, end_ = 0, n_ = 0;
  const PetscInt* first_ = nullptr;
  PetscInt count_ = 0, global_ = 0;
};

/// v's owned entries <- full[begin .. end) of a replicated array in v's global numbering. Not collective.
inline void write_owned(Vec v, const double* full) {
  PetscInt begin = 0, end = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &begin, &end));
  petsc::WriteView o(v);
  for (PetscInt i = begin; i < end; ++i) o[i - begin] = full[i];
}

}  // namespace bilevel::detail
