#pragma once
// Small in-memory data sets for the problem tests: a known global matrix (a pure function of (i, j)),
// each rank holding its block of rows as a Dataset (sparse or dense), plus helpers to compare distributed
// Vecs with serial reference computations done redundantly on every rank.
#include <petscmat.h>
#include <petscvec.h>

#include <cmath>
#include <functional>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace testdata {

/// The global matrix, row-major, and the labels.
struct Global {
  PetscInt rows = 0, cols = 0, classes = 0;
  std::vector<double> a;  // rows × cols, row-major
  std::vector<PetscInt> labels;
  double at(PetscInt i, PetscInt j) const { return a[static_cast<std::size_t>(i * cols + j)]; }
};

/// Entry (i, j) is nonzero for about `density` of the pairs; values in [−1, 1]; labels correlated with
/// the features (the class of the largest of `classes` fixed projections, with every 7th row shuffled).
inline Global make_global(
    PetscInt rows, PetscInt cols, PetscInt classes, unsigned salt, double density = 0.45) {
  Global g;
  g.rows = rows;
  g.cols = cols;
  g.classes = classes;
  g.a.assign(static_cast<std::size_t>(rows * cols), 0.0);
  g.labels.assign(static_cast<std::size_t>(rows), 0);
  for (PetscInt i = 0; i < rows; ++i) {
    for (PetscInt j = 0; j < cols; ++j) {
      const unsigned h =
          static_cast<unsigned>(i * 2654435761u) ^ static_cast<unsigned>(j * 40503u + salt * 97u);
      if ((h % 1000u) < static_cast<unsigned>(density * 1000))
        g.a[static_cast<std::size_t>(i * cols + j)] = std::sin(1.3 * i + 0.7 * j + salt);
    }
    double best = -1e300;
    for (PetscInt c = 0; c < classes; ++c) {
      double s = 0;
      for (PetscInt j = 0; j < cols; ++j) s += g.at(i, j) * std::cos(0.9 * c * (j + 1) + salt);
      if (s > best) {
        best = s;
        g.labels[static_cast<std::size_t>(i)] = c;
      }
    }
    if (i % 7 == 3) g.labels[static_cast<std::size_t>(i)] = (i / 7 + salt) % classes;
  }
  return g;
}

/// The rows of `g` that this rank owns (even block split), as a Dataset in the given format. Collective.
inline bilevel::Dataset to_dataset(MPI_Comm comm, const Global& g, bilevel::DataFormat format) {
  int size = 1, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  bilevel::Dataset d;
  d.comm = comm;
  d.source = "synthetic";
  d.n_rows = g.rows;
  d.n_features = g.cols;
  d.row_begin = bilevel::block_begin(g.rows, size, rank);
  d.row_end = bilevel::block_begin(g.rows, size, rank + 1);
  for (int r = 0; r <= size; ++r) d.row_ranges.push_back(bilevel::block_begin(g.rows, size, r));
  d.format = format;
  d.n_classes = g.classes;
  for (PetscInt c = 0; c < g.classes; ++c) d.class_values.push_back(static_cast<double>(c));
  const PetscInt m = d.local_rows();
  for (PetscInt i = d.row_begin; i < d.row_end; ++i)
    d.labels.push_back(g.labels[static_cast<std::size_t>(i)]);
  if (format == bilevel::DataFormat::Dense) {
    BILEVEL_PETSC_CALL(MatCreateSeqDense(PETSC_COMM_SELF, m, g.cols, nullptr, d.local.out()));
    PetscScalar* v = nullptr;
    PetscInt lda = 0;
    BILEVEL_PETSC_CALL(MatDenseGetLDA(d.local, &lda));
    BILEVEL_PETSC_CALL(MatDenseGetArray(d.local, &v));
    for (PetscInt i = 0; i < m; ++i)
      for (PetscInt j = 0; j < g.cols; ++j) v[i + j * lda] = g.at(d.row_begin + i, j);
    BILEVEL_PETSC_CALL(MatDenseRestoreArray(d.local, &v));
  } else {
    std::vector<PetscInt> ia(1, 0), ja;
    std::vector<PetscScalar> va;
    for (PetscInt i = 0; i < m; ++i) {
      for (PetscInt j = 0; j < g.cols; ++j) {
        const double x = g.at(d.row_begin + i, j);
        if (x == 0) continue;
        ja.push_back(j);
        va.push_back(x);
      }
      ia.push_back(static_cast<PetscInt>(ja.size()));
    }
    BILEVEL_PETSC_CALL(MatCreate(PETSC_COMM_SELF, d.local.out()));
    BILEVEL_PETSC_CALL(MatSetSizes(d.local, m, g.cols, m, g.cols));
    BILEVEL_PETSC_CALL(MatSetType(d.local, MATSEQAIJ));
    BILEVEL_PETSC_CALL(MatSeqAIJSetPreallocationCSR(d.local, ia.data(), ja.data(), va.data()));
  }
  BILEVEL_PETSC_CALL(MatAssemblyBegin(d.local, MAT_FINAL_ASSEMBLY));
  BILEVEL_PETSC_CALL(MatAssemblyEnd(d.local, MAT_FINAL_ASSEMBLY));
  return d;
}

/// Sets v_i = f(i) for the global index i. Collective.
inline void fill(Vec v, const std::function<double(PetscInt)>& f) {
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  bilevel::petsc::WriteView w(v);
  for (PetscInt i = lo; i < hi; ++i) w[i - lo] = f(i);
}

/// The whole of v on every rank. Collective.
inline std::vector<double> gather(Vec v) {
  VecScatter sc = nullptr;
  Vec all = nullptr;
  BILEVEL_PETSC_CALL(VecScatterCreateToAll(v, &sc, &all));
  BILEVEL_PETSC_CALL(VecScatterBegin(sc, v, all, INSERT_VALUES, SCATTER_FORWARD));
  BILEVEL_PETSC_CALL(VecScatterEnd(sc, v, all, INSERT_VALUES, SCATTER_FORWARD));
  std::vector<double> out;
  {
    bilevel::petsc::ReadView r(all);
    out.assign(r.data(), r.data() + r.size());
  }
  BILEVEL_PETSC_CALL(VecScatterDestroy(&sc));
  BILEVEL_PETSC_CALL(VecDestroy(&all));
  return out;
}

/// max_i |a_i − b_i| / max(1, max_i |b_i|).
inline double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0, s = 1;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d = std::max(d, std::abs(a[i] - b[i]));
    s = std::max(s, std::abs(b[i]));
  }
  return a.size() == b.size() ? d / s : 1e300;
}

}  // namespace testdata
