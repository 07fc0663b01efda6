#pragma once
/// \file Private to `logreg`'s sources (logreg.cpp: the oracles; logreg_hvp.cpp: the Hessian-vector
/// product): one data set of the problem and the per-row curvature of the logistic loss.
#include <cmath>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "bilevel/problems/logreg.hpp"
#include "data_parallel.hpp"
#include "logreg_kernels.hpp"

namespace bilevel {

namespace detail {
/// d = σ(z)(1 − σ(z)) = e / (1 + e)², e = e^{−|z|}.
inline double logistic_curvature(double z) {
  const double e = std::exp(-std::abs(z)), inv = 1.0 / (1.0 + e);
  return e * inv * inv;
}
}  // namespace detail

/// One data set: its rows, labels as ±1, the curvature cache d (training side only) and work buffers.
/// Sparse rows address the side's compressed model (detail::LocalColumns: the columns its local rows use,
/// then the intercept); dense rows address the whole model gathered to every rank.
struct LogregProblem::Side {
  Dataset data;
  std::vector<PetscReal> sign;  // b_i ∈ {−1, +1} per local row
  std::vector<PetscReal> d;     // d_i = σ(z_i)(1 − σ(z_i)) at the y of `stamps`
  detail::RowStamps stamps;
  detail::LocalRows rows;
  std::vector<PetscScalar> z;  // dense path: per-row products
  bool caches_curvature = false;
  bool sparse = false;
  detail::LocalColumns cols;          // sparse: the columns of the local rows (indices renumbered)
  detail::TrackedModel model;         // sparse: y on those columns
  PetscInt c_pos = 0;                 // position of the intercept in the side's model arrays
  PetscInt width = 0;                 // entries of the side's model arrays (compressed, or dy)
  std::vector<PetscScalar> acc, dir;  // sparse: compressed sums and gathered directions
  detail::HvpWork hvp_work;           // sparse: work arrays of the HVP kernels
  bool strict_rows = false;           // sparse: no repeated column within a row (vector scatter allowed)
};

}  // namespace bilevel
