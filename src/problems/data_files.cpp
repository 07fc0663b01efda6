/// \file Reading a problem's data files: kind detection, the index-base rule, label maps.
#include "data_files.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string_view>

#include "bilevel/data/idx.hpp"
#include "bilevel/data/libsvm.hpp"
#include "bilevel/data/petsc_binary.hpp"
#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"
#include "multinomial.hpp"

namespace bilevel::detail {
namespace {

enum class FileKind { Libsvm, Idx, Binary };

/// The kind of a data file: PETSc binary by its header (checked on rank 0), IDX by its name. Collective.
FileKind file_kind(MPI_Comm comm, const std::string& path) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  int binary = 0;
  collective(comm, [&] {
    if (rank == 0) binary = is_petsc_binary(path) ? 1 : 0;
  });
  MPI_Bcast(&binary, 1, MPI_INT, 0, comm);
  if (binary) return FileKind::Binary;
  return is_idx(path) ? FileKind::Idx : FileKind::Libsvm;
}

}  // namespace

int data_index_base_option(MPI_Comm comm) {
  petsc::OptionsReader reader(comm, "bilevel_data_", "Data files of every problem (-bilevel_data_*)");
  const std::string base =
      reader.choice("index_base",
                    "auto",
                    {"auto", "0", "1"},
                    "LIBSVM feature indices of all files: auto (0-based if any file has index 0), 0 or 1");
  return base == "auto" ? -1 : std::stoi(base);
}

Dataset read_rows(MPI_Comm comm,
                  const std::string& path,
                  PetscInt first,
                  PetscInt count,
                  DataFormat format,
                  int index_base) {
  switch (file_kind(comm, path)) {
    case FileKind::Binary: {
      BinaryReadOptions o;
      o.first_row = first;
      o.max_rows = count;
      o.index_base = index_base;
      Dataset data = read_petsc_binary(comm, path, o);
      if (data.fixed_width && format == DataFormat::Dense) convert_format(data, DataFormat::Dense);
      return data;
    }
    case FileKind::Idx: {
      IdxReadOptions o;
      o.first_row = first;
      o.max_rows = count;
      o.format = format;
      return read_idx(comm, path, idx_labels_for(path), o);
    }
    case FileKind::Libsvm:
      break;
  }
  LibsvmReadOptions o;
  o.first_row = first;
  o.max_rows = count;
  o.index_base = index_base;
  return read_libsvm(comm, path, o);
}

PetscInt count_rows(MPI_Comm comm, const std::string& path) {
  switch (file_kind(comm, path)) {
    case FileKind::Binary: {
      int rank = 0;
      MPI_Comm_rank(comm, &rank);
      long long rows = 0;
      collective(comm, [&] {
        if (rank == 0) rows = read_binary_meta(path).rows;
      });
      MPI_Bcast(&rows, 1, MPI_LONG_LONG, 0, comm);
      return static_cast<PetscInt>(rows);
    }
    case FileKind::Idx:
      return idx_records(comm, path);
    case FileKind::Libsvm:
      break;
  }
  return static_cast<PetscInt>(count_libsvm_rows(comm, path));
}

void settle_files(const std::vector<Dataset*>& sets, int index_base) {
  unify_index_base(sets, index_base);
  const Dataset* first_fixed = nullptr;
  for (const Dataset* d : sets) {
    if (!d || !d->fixed_width) continue;
    if (!first_fixed) {
      first_fixed = d;
    } else if (d->n_features != first_fixed->n_features) {
      throw InputError(d->source + " has images of " + std::to_string(d->n_features) + " pixels but " +
                       first_fixed->source + " has " + std::to_string(first_fixed->n_features) +
                       "; the IDX files of a problem must have one image size");
    }
  }
}

std::vector<double> parse_class_list(const std::string& text, const std::string& option) {
  auto bad = [&]() -> std::vector<double> {
    throw InputError("bad value '" + text + "' for " + option +
                     ": expected integers and inclusive ranges separated by commas, such as 10-19 or 1,3,5");
  };
  auto number = [&](std::string_view s) {
    long long v = 0;
    if (!s.empty() && s[0] == '+') s.remove_prefix(1);
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) bad();
    return v;
  };
  std::vector<double> out;
  std::string_view rest(text);
  if (rest.empty()) bad();
  while (true) {
    const std::size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    // A range "a-b": the '-' after the first character (so "-1" is a single negative label).
    const std::size_t dash = item.find('-', 1);
    if (dash == std::string_view::npos) {
      out.push_back(static_cast<double>(number(item)));
    } else {
      const long long a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
      if (b < a || b - a > 1000000) bad();
      for (long long v = a; v <= b; ++v) out.push_back(static_cast<double>(v));
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void binarize_labels(Dataset& data, const std::vector<double>& positive) {
  for (PetscInt& l : data.labels) {
    const double value = data.class_values[static_cast<std::size_t>(l)];
    l = std::binary_search(positive.begin(), positive.end(), value) ? 1 : 0;
  }
  data.class_values = {-1.0, 1.0};
  data.n_classes = 2;
}

bool dense_storage(const std::string& format, const Dataset& train) {
  if (format != "auto") return format == "dense";
  PetscInt nnz = 0;
  if (train.format == DataFormat::Sparse) {
    MatInfo info;
    BILEVEL_PETSC_CALL(MatGetInfo(train.local, MAT_LOCAL, &info));
    nnz = static_cast<PetscInt>(info.nz_used);
  } else {
    nnz = train.local_rows() * train.n_features;
  }
  const double rows = static_cast<double>(train.local_rows());
  const double local[2] = {12.0 * static_cast<double>(nnz) + 4.0 * rows,
                           8.0 * rows * static_cast<double>(train.n_features)};
  double sum[2] = {0, 0}, max_dense = 0;
  MPI_Allreduce(local, sum, 2, MPI_DOUBLE, MPI_SUM, train.comm);
  MPI_Allreduce(&local[1], &max_dense, 1, MPI_DOUBLE, MPI_MAX, train.comm);
  constexpr double kMaxDenseBytes = 512.0 * 1024 * 1024;
  return sum[1] <= 2.0 * sum[0] && max_dense <= kMaxDenseBytes;
}

}  // namespace bilevel::detail
