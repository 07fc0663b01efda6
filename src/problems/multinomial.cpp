#include "multinomial.hpp"

#include <dlfcn.h>
#include <zlib.h>

#include <climits>
#include <cstdlib>

namespace bilevel::detail {

void adopt_dense(Dataset& data, std::vector<PetscScalar>& dense) {
  if (data.format != DataFormat::Dense) return;
  const PetscInt m = data.local_rows(), nf = data.n_features;
  dense.resize(static_cast<std::size_t>(m * nf));
  {
    DenseView A(data.local);
    for (PetscInt j = 0; j < nf; ++j)
      for (PetscInt i = 0; i < m; ++i) dense[static_cast<std::size_t>(i * nf + j)] = A.values[i + j * A.lda];
  }
  data.local.reset();
}

bool optimized_blas() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&BLASgemm_), &info) || !info.dli_fname) return false;
  char resolved[PATH_MAX];
  const std::string path =
      realpath(info.dli_fname, resolved) ? std::string(resolved) : std::string(info.dli_fname);
  return path.find("openblas") != std::string::npos || path.find("blis") != std::string::npos ||
         path.find("mkl") != std::string::npos;
}

double density(const Dataset& data) {
  double nz = 0;
  if (data.format == DataFormat::Sparse) {
    MatInfo info;
    BILEVEL_PETSC_CALL(MatGetInfo(data.local, MAT_LOCAL, &info));
    nz = info.nz_used;
  } else {
    DenseView A(data.local);
    for (PetscInt j = 0; j < data.n_features; ++j)
      for (PetscInt i = 0; i < data.local_rows(); ++i) nz += A.values[i + j * A.lda] != 0 ? 1 : 0;
  }
  nz = sum_over_ranks(data.comm, nz);
  const double total =
      static_cast<double>(data.n_rows) * static_cast<double>(std::max<PetscInt>(data.n_features, 1));
  return total > 0 ? nz / total : 0;
}

PetscInt idx_records(MPI_Comm comm, const std::string& path) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  long long count = -1;
  if (rank == 0) {
    if (gzFile f = gzopen(path.c_str(), "rb")) {
      unsigned char header[8];
      if (gzread(f, header, 8) == 8)
        count = (static_cast<long long>(header[4]) << 24) | (header[5] << 16) | (header[6] << 8) | header[7];
      gzclose(f);
    }
  }
  BILEVEL_PETSC_CALL(MPI_Bcast(&count, 1, MPI_LONG_LONG, 0, comm));
  if (count < 0) throw InputError(path + ": cannot read the IDX header");
  return static_cast<PetscInt>(count);
}

std::string idx_labels_for(const std::string& images) {
  std::string labels = images;
  const auto pos = labels.find("images-idx3");
  if (pos == std::string::npos)
    throw InputError(images + ": cannot derive the label file (expected 'images-idx3' in the name)");
  labels.replace(pos, 11, "labels-idx1");
  return labels;
}

PetscInt unify_classes(std::vector<Dataset*> sets) {
  std::vector<double> all;
  PetscInt max_classes = 0;
  for (Dataset* d : sets) {
    all.insert(all.end(), d->class_values.begin(), d->class_values.end());
    max_classes = std::max(max_classes, d->n_classes);
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  if (all.empty()) return max_classes;
  for (Dataset* d : sets) {
    if (d->class_values.empty()) continue;
    std::vector<PetscInt> map(d->class_values.size());
    for (std::size_t c = 0; c < map.size(); ++c)
      map[c] =
          static_cast<PetscInt>(std::lower_bound(all.begin(), all.end(), d->class_values[c]) - all.begin());
    for (PetscInt& l : d->labels) l = map[static_cast<std::size_t>(l)];
    d->class_values = all;
    d->n_classes = static_cast<PetscInt>(all.size());
  }
  return static_cast<PetscInt>(all.size());
}

}  // namespace bilevel::detail
