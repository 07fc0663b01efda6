/// \file Row distribution, feature padding and format conversion of row-sharded data sets.
#include "bilevel/data/dataset.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "local_csr.hpp"

namespace bilevel {
namespace {

/// Read access to a sequential AIJ matrix's CSR arrays where they are (MatGetRowIJ and the value array),
/// restored when it goes out of scope. Not collective.
class CsrRead {
 public:
  explicit CsrRead(Mat a) : a_(a) {
    PetscBool done = PETSC_FALSE;
    BILEVEL_PETSC_CALL(MatGetRowIJ(a_, 0, PETSC_FALSE, PETSC_FALSE, &m, &ia, &ja, &done));
    if (!done) throw Error("MatGetRowIJ: the local block is not a sequential AIJ matrix");
    BILEVEL_PETSC_CALL(MatSeqAIJGetArrayRead(a_, &values));
  }
  CsrRead(const CsrRead&) = delete;
  CsrRead& operator=(const CsrRead&) = delete;
  ~CsrRead() {
    PetscBool done = PETSC_FALSE;
    (void)MatSeqAIJRestoreArrayRead(a_, &values);
    (void)MatRestoreRowIJ(a_, 0, PETSC_FALSE, PETSC_FALSE, &m, &ia, &ja, &done);
  }
  PetscInt m = 0;
  const PetscInt* ia = nullptr;
  const PetscInt* ja = nullptr;
  const PetscScalar* values = nullptr;

 private:
  Mat a_;
};

/// A copy of a sequential AIJ matrix's rows in CSR arrays. Not collective.
LocalCsr copy_csr(Mat a) {
  const CsrRead r(a);
  LocalCsr csr;
  csr.row_ptr.assign(r.ia, r.ia + r.m + 1);
  csr.cols.assign(r.ja, r.ja + r.ia[r.m]);
  csr.vals.assign(r.values, r.values + r.ia[r.m]);
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

/// The sequential AIJ block `a` as a MATSEQDENSE of n_cols columns. Not collective.
petsc::MatHandle csr_to_dense(Mat a, PetscInt n_cols) {
  const CsrRead r(a);  // no copy of the matrix
  PetscScalar* array = nullptr;
  PetscInt lda = 0;
  petsc::MatHandle dense = create_dense(r.m, n_cols, &array, &lda);
  for (PetscInt i = 0; i < r.m; ++i)
    for (PetscInt k = r.ia[i]; k < r.ia[i + 1]; ++k)
      array[i + static_cast<std::size_t>(r.ja[k]) * lda] = r.values[k];
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

namespace {
constexpr const char* kCsrKey = "bilevel_csr";

PetscErrorCode destroy_csr(void* csr) {
  delete static_cast<LocalCsr*>(csr);
  return 0;
}

/// A MATSEQAIJ on the arrays of `csr` (kept alive by `container`). Not collective.
petsc::MatHandle wrap(LocalCsr& csr, PetscContainer container, PetscInt n_cols) {
  petsc::MatHandle a;
  BILEVEL_PETSC_CALL(MatCreateSeqAIJWithArrays(
      PETSC_COMM_SELF, csr.rows(), n_cols, csr.row_ptr.data(), csr.cols.data(), csr.vals.data(), a.out()));
  BILEVEL_PETSC_CALL(PetscObjectCompose(
      reinterpret_cast<PetscObject>(a.get()), kCsrKey, reinterpret_cast<PetscObject>(container)));
  return a;
}
}  // namespace

petsc::MatHandle LocalCsr::adopt(LocalCsr&& csr, PetscInt n_cols) {
  auto* owned = new LocalCsr(std::move(csr));
  PetscContainer container = nullptr;
  if (PetscContainerCreate(PETSC_COMM_SELF, &container) != 0) {
    delete owned;
    throw Error("PetscContainerCreate failed");
  }
  BILEVEL_PETSC_CALL(PetscContainerSetPointer(container, owned));
  BILEVEL_PETSC_CALL(PetscContainerSetUserDestroy(container, destroy_csr));
  try {
    petsc::MatHandle a = wrap(*owned, container, n_cols);
    BILEVEL_PETSC_CALL(PetscContainerDestroy(&container));  // the Mat holds the reference now
    return a;
  } catch (...) {
    (void)PetscContainerDestroy(&container);
    throw;
  }
}

LocalCsr* LocalCsr::owned_by(Mat a) {
  PetscObject found = nullptr;
  BILEVEL_PETSC_CALL(PetscObjectQuery(reinterpret_cast<PetscObject>(a), kCsrKey, &found));
  if (!found) return nullptr;
  void* pointer = nullptr;
  BILEVEL_PETSC_CALL(PetscContainerGetPointer(reinterpret_cast<PetscContainer>(found), &pointer));
  return static_cast<LocalCsr*>(pointer);
}

petsc::MatHandle LocalCsr::with_columns(Mat a, PetscInt n_cols) {
  if (LocalCsr* csr = owned_by(a)) {
    PetscObject container = nullptr;
    BILEVEL_PETSC_CALL(PetscObjectQuery(reinterpret_cast<PetscObject>(a), kCsrKey, &container));
    return wrap(*csr, reinterpret_cast<PetscContainer>(container), n_cols);
  }
  return adopt(copy_csr(a), n_cols);
}

PetscInt block_begin(PetscInt n, int size, int rank) {
  BILEVEL_ASSERT(size > 0 && rank >= 0 && rank <= size && n >= 0);
  const std::int64_t base = n / size, extra = n % size;
  return static_cast<PetscInt>(base * rank + std::min<std::int64_t>(rank, extra));
}

int weighted_owner(std::int64_t before, std::int64_t weight, std::int64_t total, int size) {
  if (total <= 0) return 0;
  // midpoint 2 before + weight over 2 total, scaled by size, without overflow for realistic totals
  const long double share = (2.0L * before + weight) * size / (2.0L * total);
  return static_cast<int>(std::clamp<long double>(std::floor(share), 0, size - 1));
}

void unify_index_base(const std::vector<Dataset*>& sets, int forced) {
  if (forced >= 0) return;
  bool zero = false;
  for (const Dataset* d : sets)
    if (d && d->index_base >= 0) zero = zero || d->index_zero_seen;
  if (!zero) return;
  for (Dataset* d : sets) {
    if (!d || d->index_base != 1) continue;
    // Column j of a 1-based reading is the file's index j + 1; 0-based it is column j + 1.
    collective(d->comm, [&] {
      if (d->format != DataFormat::Sparse) throw Error("unify_index_base: a LIBSVM data set stored dense");
      if (!LocalCsr::owned_by(d->local)) d->local = LocalCsr::with_columns(d->local, d->n_features);
      LocalCsr* csr = LocalCsr::owned_by(d->local);
      BILEVEL_ASSERT(csr != nullptr);
      for (PetscInt& col : csr->cols) ++col;  // before the new Mat sees the arrays
      d->local = LocalCsr::with_columns(d->local, d->n_features + 1);
    });
    d->n_features += 1;
    d->index_base = 0;
  }
}

void reconcile_features(Dataset& data, PetscInt n_features) {
  if (data.n_features > n_features)
    throw InputError(data.source + " has " + std::to_string(data.n_features) + " features, more than the " +
                     "training data's " + std::to_string(n_features));
  if (data.n_features == n_features) return;
  if (data.fixed_width)
    throw InputError(data.source + " has " + std::to_string(data.n_features) +
                     " features per image, not the " + std::to_string(n_features) + " of the training data");
  collective(data.comm, [&] {
    if (data.format == DataFormat::Sparse) {
      data.local = LocalCsr::with_columns(data.local, n_features);
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
      data.local = csr_to_dense(data.local, data.n_features);
    else
      data.local = LocalCsr::adopt(dense_to_csr(data.local), data.n_features);
  });
  data.format = format;
}

}  // namespace bilevel
