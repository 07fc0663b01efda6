#pragma once
/// \file Private parts of `multitask` (include/bilevel/problems/multitask.hpp): the episodes, the per-task
/// kernels on row-major dense blocks, and the episode generators (src/problems/multitask_episodes.cpp).
/// Not installed.
#include <vector>

#include "bilevel/problems/multitask.hpp"
#include "data_parallel.hpp"
#include "small_dense.hpp"

namespace bilevel {

/// One task's support and query examples (row-major, p columns) and their labels in 0..k-1.
struct Episode {
  std::vector<double> support, query;
  std::vector<PetscInt> support_label, query_label;
};

/// The episodes of tasks [begin, end) (support k·s rows, query k·q rows), a pure function of (seed, task).
/// Not collective.
std::vector<Episode> synthetic_episodes(const MultitaskOptions& o, PetscInt begin, PetscInt end);
/// The same from the first `pool` Fashion-MNIST training images (read on every rank of comm); *features
/// becomes 784. Collective on comm.
std::vector<Episode> image_episodes(
    MPI_Comm comm, const MultitaskOptions& o, PetscInt begin, PetscInt end, PetscInt* features);

namespace detail {

/// C (m x l) = A (m x n) B (n x l), row-major; accumulate adds to C. Not collective.
inline void matmul(const double* a,
                   const double* b,
                   double* c,
                   PetscInt m,
                   PetscInt n,
                   PetscInt l,
                   bool accumulate = false) {
  if (!accumulate) std::fill(c, c + m * l, 0.0);
  for (PetscInt i = 0; i < m; ++i)
    for (PetscInt j = 0; j < n; ++j) {
      const double aij = a[i * n + j];
      if (aij == 0) continue;
      for (PetscInt k = 0; k < l; ++k) c[i * l + k] += aij * b[j * l + k];
    }
}
/// C (n x l) += s Aᵀ B with A (m x n), B (m x l). Not collective.
inline void matmul_tn_add(
    const double* a, const double* b, double* c, PetscInt m, PetscInt n, PetscInt l, double s) {
  for (PetscInt i = 0; i < m; ++i)
    for (PetscInt j = 0; j < n; ++j) {
      const double aij = s * a[i * n + j];
      if (aij == 0) continue;
      for (PetscInt k = 0; k < l; ++k) c[j * l + k] += aij * b[i * l + k];
    }
}
/// C (m x n) += s A Bᵀ with A (m x l), B (n x l). Not collective.
inline void matmul_nt_add(
    const double* a, const double* b, double* c, PetscInt m, PetscInt n, PetscInt l, double s) {
  for (PetscInt i = 0; i < m; ++i)
    for (PetscInt j = 0; j < n; ++j) {
      double t = 0;
      for (PetscInt k = 0; k < l; ++k) t += a[i * l + k] * b[j * l + k];
      c[i * n + j] += s * t;
    }
}

}  // namespace detail

struct MultitaskProblem::Impl {
  PetscInt p = 0, r = 0, k = 0, ns = 0, nq = 0, tasks = 0;
  double ridge = 0;
  detail::LocalSamples local;  // this rank's tasks [begin, end) of T
  std::vector<Episode> episodes;
  detail::Gatherer gather_w{true};  // tracks W's changes: the features below are cached per W
  std::uint64_t cached_generation = ~std::uint64_t{0};
  std::vector<std::vector<double>> support_features, query_features;  // S_t W, Q_t W of the local tasks
  std::vector<double> z, zv, res, m, grad_w, a;

  /// Gathers W to every rank and, when it changed, recomputes S_t W and Q_t W of the local tasks (the only
  /// O(n p r) products; heads, HVPs and residuals then cost O(n r k)). Collective.
  const double* gather(Vec x) {
    const double* w = gather_w.gather(x);
    if (gather_w.generation() != cached_generation) {
      support_features.resize(episodes.size());
      query_features.resize(episodes.size());
      for (std::size_t t = 0; t < episodes.size(); ++t) {
        support_features[t].resize(static_cast<std::size_t>(ns * r));
        query_features[t].resize(static_cast<std::size_t>(nq * r));
        detail::matmul(episodes[t].support.data(), w, support_features[t].data(), ns, p, r);
        detail::matmul(episodes[t].query.data(), w, query_features[t].data(), nq, p, r);
      }
      cached_generation = gather_w.generation();
    }
    return w;
  }
  /// z = S_t W (or Q_t W) of local task t at the last gathered W.
  void load(PetscInt t, bool query) {
    z = query ? query_features[static_cast<std::size_t>(t)] : support_features[static_cast<std::size_t>(t)];
  }
  /// z as load() and the residual P = z Y − E (n x k) into res.
  void residual(PetscInt t, bool query, const double* y) {
    load(t, query);
    const Episode& e = episodes[static_cast<std::size_t>(t)];
    const std::vector<PetscInt>& labels = query ? e.query_label : e.support_label;
    const auto n = static_cast<PetscInt>(labels.size());
    res.resize(static_cast<std::size_t>(n * k));
    detail::matmul(z.data(), y, res.data(), n, r, k);
    for (PetscInt i = 0; i < n; ++i) res[i * k + labels[i]] -= 1.0;
  }
  /// The head of the local task number j in a local array of y.
  double* head(double* ya, PetscInt j) const { return ya + j * r * k; }
  const double* head(const double* ya, PetscInt j) const { return ya + j * r * k; }
};

}  // namespace bilevel
