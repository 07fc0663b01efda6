/// \file Row distribution, feature padding and format conversion of row-sharded data sets.
#include "bilevel/data/dataset.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "local_csr.hpp"

namespace bilevel {
namespace {

/// A copy of a sequential AIJ matrix's rows in CSR arrays. Not collective.
LocalCsr copy_csr(Mat a) {
  PetscInt m = 0;
  const PetscInt* ia = nullptr;
  const PetscInt* ja = nullptr;
  PetscBool done = PETSC_FALSE;
  BILEVEL_PETSC_CALL(MatGetRowIJ(a, 0, PETSC_FALSE, PETSC_FALSE, &m, &ia, &ja, &done));
  if (!done) throw Error("MatGetRowIJ: the local block is not a sequential AIJ matrix");
  const PetscScalar* values = nullptr;
  BILEVEL_PETSC_CALL(MatSeqAIJGetArrayRead(a, &values));
  LocalCsr csr;
  csr.row_ptr.assign(ia, ia + m + 1);
  csr.cols.assign(ja, ja + ia[m]);
  csr.vals.assign(values, values + ia[m]);
  BILEVEL_PETSC_CALL(MatSeqAIJRestoreArrayRead(a, &values));
  BILEVEL_PETSC_CALL(MatRestoreRowIJ(a, 0, PETSC_FALSE, PETSC_FALSE, &m, &ia, &ja, &done));
  return csr;
}

/// A new zero MATSEQDENSE of m x n and its leading dimension. Not collective.
petsc::MatHandle create_dense(PetscInt m, PetscInt n, PetscScalar** array, PetscInt* lda) {
  petsc::MatHandle dense;
  BILEVEL_PETSC_CALL(MatCreateSeqDense(PETSC_COMM_SELF, m, n, nullptr, dense.out()));
  BILEVEL_PETSC_CALL(MatDenseGetLDA(dense, lda));
  BILEVEL_PETSC_CALL(MatDenseGetArray(dense, array));
  std::fill_n(*array, static_cast<std::size_t>(*lda) * static_cast<std::size_t>(n), PetscScalar(0));
  return dense;
}

petsc::MatHandle csr_to_dense(const LocalCsr& csr, PetscInt n_cols) {
  const PetscInt m = csr.rows();
  PetscScalar* array = nullptr;
  PetscInt lda = 0;
  petsc::MatHandle dense = create_dense(m, n_cols, &array, &lda);
  for (PetscInt i = 0; i < m; ++i)
    for (PetscInt k = csr.row_ptr[i]; k < csr.row_ptr[i + 1]; ++k)
      array[i + static_cast<std::size_t>(csr.cols[k]) * lda] = csr.vals[k];
  BILEVEL_PETSC_CALL(MatDenseRestoreArray(dense, &array));
  BILEVEL_PETSC_CALL(MatAssemblyBegin(dense, MAT_FINAL_ASSEMBLY));
  BILEVEL_PETSC_CALL(MatAssemblyEnd(dense, MAT_FINAL_ASSEMBLY));
  return dense;
}

/// The nonzero entries of a dense block as CSR. Not collective.
LocalCsr dense_to_csr(Mat dense) {
  PetscInt m = 0, n = 0, lda = 0;
  BILEVEL_PETSC_CALL(MatGetSize(dense, &m, &n));
  BILEVEL_PETSC_CALL(MatDenseGetLDA(dense, &lda));
  const PetscScalar* array = nullptr;
  BILEVEL_PETSC_CALL(MatDenseGetArrayRead(dense, &array));
  LocalCsr csr;
  csr.row_ptr.assign(static_cast<std::size_t>(m) + 1, 0);
  // Count per row, column by column (the storage order), then fill in the same order so that each
  // row's columns come out increasing.
  for (PetscInt j = 0; j < n; ++j)
    for (PetscInt i = 0; i < m; ++i)
      if (array[i + static_cast<std::size_t>(j) * lda] != PetscScalar(0)) ++csr.row_ptr[i + 1];
  for (PetscInt i = 0; i < m; ++i) csr.row_ptr[i + 1] += csr.row_ptr[i];
  csr.cols.resize(static_cast<std::size_t>(csr.row_ptr[m]));
  csr.vals.resize(csr.cols.size());
  std::vector<PetscInt> next(csr.row_ptr.begin(), csr.row_ptr.end() - 1);
  for (PetscInt j = 0; j < n; ++j)
    for (PetscInt i = 0; i < m; ++i) {
      const PetscScalar v = array[i + static_cast<std::size_t>(j) * lda];
      if (v == PetscScalar(0)) continue;
      csr.cols[next[i]] = j;
      csr.vals[next[i]++] = v;
    }
  BILEVEL_PETSC_CALL(MatDenseRestoreArrayRead(dense, &array));
  return csr;
}

}  // namespace

PetscInt LocalCsr::rows() const {
  return static_cast<PetscInt>(row_ptr.size()) - 1;
}

petsc::MatHandle LocalCsr::to_seqaij(PetscInt n_cols) const {
  petsc::MatHandle a;
  const PetscInt m = rows();
  BILEVEL_PETSC_CALL(MatCreate(PETSC_COMM_SELF, a.out()));
  BILEVEL_PETSC_CALL(MatSetSizes(a, m, n_cols, m, n_cols));
  BILEVEL_PETSC_CALL(MatSetType(a, MATSEQAIJ));
  BILEVEL_PETSC_CALL(MatSeqAIJSetPreallocationCSR(a, row_ptr.data(), cols.data(), vals.data()));
  return a;
}

PetscInt block_begin(PetscInt n, int size, int rank) {
  BILEVEL_ASSERT(size > 0 && rank >= 0 && rank <= size && n >= 0);
  const std::int64_t base = n / size, extra = n % size;
  return static_cast<PetscInt>(base * rank + std::min<std::int64_t>(rank, extra));
}

void reconcile_features(Dataset& data, PetscInt n_features) {
  if (data.n_features > n_features)
    throw InputError(data.source + " has " + std::to_string(data.n_features) + " features, more than the " +
                     "training data's " + std::to_string(n_features));
  if (data.n_features == n_features) return;
  collective(data.comm, [&] {
    if (data.format == DataFormat::Sparse) {
      data.local = copy_csr(data.local).to_seqaij(n_features);
      return;
    }
    PetscInt m = 0, n = 0, lda_old = 0, lda = 0;
    BILEVEL_PETSC_CALL(MatGetSize(data.local, &m, &n));
    BILEVEL_PETSC_CALL(MatDenseGetLDA(data.local, &lda_old));
    const PetscScalar* old_array = nullptr;
    PetscScalar* array = nullptr;
    petsc::MatHandle padded = create_dense(m, n_features, &array, &lda);
    BILEVEL_PETSC_CALL(MatDenseGetArrayRead(data.local, &old_array));
    for (PetscInt j = 0; j < n; ++j)
      std::copy_n(
          old_array + static_cast<std::size_t>(j) * lda_old, m, array + static_cast<std::size_t>(j) * lda);
    BILEVEL_PETSC_CALL(MatDenseRestoreArrayRead(data.local, &old_array));
    BILEVEL_PETSC_CALL(MatDenseRestoreArray(padded, &array));
    BILEVEL_PETSC_CALL(MatAssemblyBegin(padded, MAT_FINAL_ASSEMBLY));
    BILEVEL_PETSC_CALL(MatAssemblyEnd(padded, MAT_FINAL_ASSEMBLY));
    data.local = std::move(padded);
  });
  data.n_features = n_features;
}

void convert_format(Dataset& data, DataFormat format) {
  if (data.format == format) return;
  collective(data.comm, [&] {
    if (format == DataFormat::Dense)
      data.local = csr_to_dense(copy_csr(data.local), data.n_features);
    else
      data.local = dense_to_csr(data.local).to_seqaij(data.n_features);
  });
  data.format = format;
}

}  // namespace bilevel
