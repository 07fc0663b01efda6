/// \file Data sets in PETSc's binary format, read and written with MPI-IO by row blocks.
#include "bilevel/data/petsc_binary.hpp"

#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "binary_io.hpp"
#include "libsvm_parse.hpp"
#include "local_csr.hpp"

namespace bilevel {
namespace binary {

std::string meta_text(const BinaryMeta& meta) {
  std::ostringstream out;
  out.precision(17);
  out << "# bilevel data set in PETSc binary format (matrix, then labels)\n"
      << "format bilevel-petsc-binary 1\n"
      << "rows " << meta.rows << "\nfeatures " << meta.features << "\nnonzeros " << meta.nonzeros
      << "\nindex_base " << meta.index_base << "\nindex_zero_seen " << (meta.index_zero_seen ? 1 : 0)
      << "\norigin " << meta.origin << "\nlabels";
  for (double v : meta.labels) out << ' ' << v;
  out << "\nsource " << meta.source << "\n";
  return out.str();
}

BinaryMeta parse_meta(const std::string& text, const std::string& path) {
  BinaryMeta meta;
  std::istringstream in(text);
  std::string line;
  bool format = false, rows = false, features = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    bool ok = true;
    if (key == "format") {
      std::string name;
      int version = 0;
      ok = static_cast<bool>(fields >> name >> version) && name == "bilevel-petsc-binary" && version == 1;
      format = ok;
    } else if (key == "rows") {
      ok = rows = static_cast<bool>(fields >> meta.rows);
    } else if (key == "features") {
      ok = features = static_cast<bool>(fields >> meta.features);
    } else if (key == "nonzeros") {
      ok = static_cast<bool>(fields >> meta.nonzeros);
    } else if (key == "index_base") {
      ok = static_cast<bool>(fields >> meta.index_base) && (meta.index_base == 0 || meta.index_base == 1);
    } else if (key == "index_zero_seen") {
      int v = 0;
      ok = static_cast<bool>(fields >> v);
      meta.index_zero_seen = v != 0;
    } else if (key == "origin") {
      ok = static_cast<bool>(fields >> meta.origin) && (meta.origin == "libsvm" || meta.origin == "idx");
    } else if (key == "labels") {
      for (double v = 0; fields >> v;) meta.labels.push_back(v);
      ok = fields.eof();
    } else if (key == "source") {
      std::getline(fields >> std::ws, meta.source);
    }
    if (!ok) throw InputError(path + ": malformed line '" + line.substr(0, 60) + "'");
  }
  if (!format || !rows || !features)
    throw InputError(path + ": not a bilevel data-set header (needs format, rows, features)");
  return meta;
}

}  // namespace binary

namespace {

using binary::kIntBytes;
using binary::kRealBytes;
using binary::Layout;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// MPI-IO file handle, closed on destruction (collective, like MPI_File_close).
class MpiFile {
 public:
  MpiFile(MPI_Comm comm, const std::string& path, int mode) : path_(path) {
    const int err = MPI_File_open(comm, path.c_str(), mode, MPI_INFO_NULL, &fh_);
    int ok = err == MPI_SUCCESS ? 1 : 0, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_LAND, comm);
    if (!all) {
      if (ok) MPI_File_close(&fh_);
      throw InputError("cannot open " + path + " with MPI-IO");
    }
  }
  MpiFile(const MpiFile&) = delete;
  MpiFile& operator=(const MpiFile&) = delete;
  ~MpiFile() { MPI_File_close(&fh_); }

  /// Collective read of n values at byte `offset` (n may differ per rank, 0 included).
  template <typename T>
  void read_all(std::int64_t offset, T* out, std::int64_t n, MPI_Datatype type) {
    check(MPI_File_read_at_all(fh_, offset, out, static_cast<int>(n), type, MPI_STATUS_IGNORE), "read");
  }
  template <typename T>
  void write_all(std::int64_t offset, const T* in, std::int64_t n, MPI_Datatype type) {
    check(MPI_File_write_at_all(fh_, offset, in, static_cast<int>(n), type, MPI_STATUS_IGNORE), "write");
  }
  MPI_File get() const { return fh_; }

 private:
  void check(int err, const char* what) const {
    if (err != MPI_SUCCESS) throw InputError(std::string("cannot ") + what + " " + path_ + " with MPI-IO");
  }
  std::string path_;
  MPI_File fh_ = MPI_FILE_NULL;
};

const MPI_Datatype kIntType = MPIU_INT;

}  // namespace

bool is_petsc_binary(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot open " + path + ": " + std::strerror(errno));
  PetscInt word = 0;
  if (!in.read(reinterpret_cast<char*>(&word), sizeof word)) return false;
  binary::swap_bytes(&word, 1);
  return word == binary::kMatClassId;
}

BinaryMeta read_binary_meta(const std::string& path) {
  const std::string meta_path = path + ".meta";
  return binary::parse_meta(slurp(meta_path), meta_path);
}

void write_petsc_binary(const Dataset& data, const std::string& path) {
  int rank = 0;
  MPI_Comm_rank(data.comm, &rank);
  const PetscInt m = data.local_rows();
  std::vector<PetscInt> lengths(static_cast<std::size_t>(m)), cols;
  std::vector<PetscScalar> vals;
  std::vector<double> labels(static_cast<std::size_t>(m));
  collective(data.comm, [&] {
    for (PetscInt i = 0; i < m; ++i) {
      PetscInt n = 0;
      const PetscInt* c = nullptr;
      const PetscScalar* v = nullptr;
      BILEVEL_PETSC_CALL(MatGetRow(data.local, i, &n, &c, &v));
      PetscInt kept = 0;
      for (PetscInt k = 0; k < n; ++k) {
        if (data.format == DataFormat::Dense && v[k] == PetscScalar(0)) continue;
        cols.push_back(c[k]);
        vals.push_back(v[k]);
        ++kept;
      }
      BILEVEL_PETSC_CALL(MatRestoreRow(data.local, i, &n, &c, &v));
      lengths[static_cast<std::size_t>(i)] = kept;
      labels[static_cast<std::size_t>(i)] =
          data.class_values.empty() ? static_cast<double>(data.labels[static_cast<std::size_t>(i)])
                                    : data.class_values[static_cast<std::size_t>(data.labels[i])];
    }
  });
  std::int64_t nz_local = static_cast<std::int64_t>(cols.size()), nz_before = 0, nz = 0;
  MPI_Exscan(&nz_local, &nz_before, 1, MPI_INT64_T, MPI_SUM, data.comm);
  if (rank == 0) nz_before = 0;
  MPI_Allreduce(&nz_local, &nz, 1, MPI_INT64_T, MPI_SUM, data.comm);
  if (nz >= PETSC_MAX_INT)
    throw InputError(path + ": more than 2^31 nonzeros do not fit 32-bit PETSc indices");
  const Layout layout{data.n_rows, nz};

  binary::swap_bytes(lengths.data(), lengths.size());
  binary::swap_bytes(cols.data(), cols.size());
  binary::swap_bytes(vals.data(), vals.size());
  binary::swap_bytes(labels.data(), labels.size());
  collective(data.comm, [&] {
    if (rank == 0) std::remove(path.c_str());  // MPI-IO does not truncate
  });
  MpiFile file(data.comm, path, MPI_MODE_CREATE | MPI_MODE_WRONLY);
  PetscInt header[4] = {binary::kMatClassId, data.n_rows, data.n_features, static_cast<PetscInt>(nz)};
  PetscInt vec_header[2] = {binary::kVecClassId, data.n_rows};
  binary::swap_bytes(header, 4);
  binary::swap_bytes(vec_header, 2);
  const int mine = rank == 0 ? 1 : 0;
  file.write_all(0, header, 4 * mine, kIntType);
  file.write_all(layout.row_lengths() + data.row_begin * kIntBytes, lengths.data(), m, kIntType);
  file.write_all(layout.cols() + nz_before * kIntBytes, cols.data(), nz_local, kIntType);
  file.write_all(layout.vals() + nz_before * kRealBytes, vals.data(), nz_local, MPIU_SCALAR);
  file.write_all(layout.vec_header(), vec_header, 2 * mine, kIntType);
  file.write_all(layout.labels() + data.row_begin * kRealBytes, labels.data(), m, MPI_DOUBLE);

  collective(data.comm, [&] {
    if (rank != 0) return;
    BinaryMeta meta;
    meta.rows = data.n_rows;
    meta.features = data.n_features;
    meta.nonzeros = nz;
    meta.index_base = std::max(data.index_base, 0);
    meta.index_zero_seen = data.index_zero_seen;
    meta.origin = data.fixed_width ? "idx" : "libsvm";
    meta.labels = data.class_values;
    meta.source = data.source;
    std::ofstream out(path + ".meta");
    out << binary::meta_text(meta);
    if (!out) throw InputError("cannot write " + path + ".meta");
  });
}

Dataset read_petsc_binary(MPI_Comm comm, const std::string& path, const BinaryReadOptions& options) {
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);
  if (options.first_row < 0) throw InputError("reading " + path + ": first_row must be >= 0");
  // Rank 0 reads the header and PATH.meta; every rank parses the same text.
  std::string meta_text;
  PetscInt header[4] = {0, 0, 0, 0};
  collective(comm, [&] {
    if (rank != 0) return;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError("cannot open " + path + ": " + std::strerror(errno));
    if (!in.read(reinterpret_cast<char*>(header), sizeof header))
      throw InputError(path + ": truncated header");
    binary::swap_bytes(header, 4);
    if (header[0] != binary::kMatClassId) throw InputError(path + ": not a PETSc binary matrix file");
    meta_text = slurp(path + ".meta");
  });
  MPI_Bcast(header, 4, kIntType, 0, comm);
  int length = static_cast<int>(meta_text.size());
  MPI_Bcast(&length, 1, MPI_INT, 0, comm);
  meta_text.resize(static_cast<std::size_t>(length));
  MPI_Bcast(meta_text.data(), length, MPI_CHAR, 0, comm);
  const BinaryMeta meta = binary::parse_meta(meta_text, path + ".meta");
  const Layout layout{header[1], header[3]};
  if (meta.rows != header[1] || meta.features != header[2])
    throw InputError(path + ".meta does not describe " + path + " (rows or features differ)");
  const std::int64_t file_rows = header[1];
  if (file_rows == 0) throw InputError(path + ": no data rows");
  if (options.first_row >= file_rows)
    throw InputError(path + ": no data rows after skipping " + std::to_string(options.first_row) +
                     " (the file has " + std::to_string(file_rows) + ")");
  const std::int64_t available = file_rows - options.first_row;
  const std::int64_t selected =
      options.max_rows < 0 ? available : std::min<std::int64_t>(options.max_rows, available);
  if (selected == 0) throw InputError(path + ": no data rows selected (max_rows = 0)");

  MpiFile file(comm, path, MPI_MODE_RDONLY);
  // Pass 1: row lengths of an even block of the file's rows; rows of the selection go to owners by weight.
  const std::int64_t b0 = file_rows * rank / size, b1 = file_rows * (rank + 1) / size;
  std::vector<PetscInt> lengths(static_cast<std::size_t>(b1 - b0));
  file.read_all(layout.row_lengths() + b0 * kIntBytes, lengths.data(), b1 - b0, kIntType);
  binary::swap_bytes(lengths.data(), lengths.size());
  const std::int64_t first = options.first_row, last = first + selected;
  std::int64_t nz_local = 0, w_local = 0;
  for (std::int64_t r = b0; r < b1; ++r) {
    nz_local += lengths[r - b0];
    if (r >= first && r < last) w_local += lengths[r - b0] + 1;
  }
  std::int64_t nz_before = 0, w_before = 0, w_total = 0;
  MPI_Exscan(&nz_local, &nz_before, 1, MPI_INT64_T, MPI_SUM, comm);
  MPI_Exscan(&w_local, &w_before, 1, MPI_INT64_T, MPI_SUM, comm);
  if (rank == 0) nz_before = w_before = 0;
  MPI_Allreduce(&w_local, &w_total, 1, MPI_INT64_T, MPI_SUM, comm);
  std::vector<std::int64_t> counts(size, 0), start_nz(size, std::numeric_limits<std::int64_t>::max());
  for (std::int64_t r = b0; r < b1; ++r) {
    const std::int64_t len = lengths[r - b0];
    if (r >= first && r < last) {
      const int q = weighted_owner(w_before, len + 1, w_total, size);
      w_before += len + 1;
      ++counts[q];
      start_nz[q] = std::min(start_nz[q], nz_before);
    }
    nz_before += len;
  }
  MPI_Allreduce(MPI_IN_PLACE, counts.data(), size, MPI_INT64_T, MPI_SUM, comm);
  MPI_Allreduce(MPI_IN_PLACE, start_nz.data(), size, MPI_INT64_T, MPI_MIN, comm);

  Dataset data;
  data.comm = comm;
  data.source = path;
  data.format = DataFormat::Sparse;
  data.n_rows = static_cast<PetscInt>(selected);
  data.n_features = header[2];
  data.row_ranges.assign(static_cast<std::size_t>(size) + 1, 0);
  for (int q = 0; q < size; ++q)
    data.row_ranges[q + 1] = data.row_ranges[q] + static_cast<PetscInt>(counts[q]);
  data.row_begin = data.row_ranges[rank];
  data.row_end = data.row_ranges[rank + 1];
  data.index_base = meta.origin == "idx" ? -1 : meta.index_base;
  data.index_zero_seen = meta.index_zero_seen;
  data.fixed_width = meta.origin == "idx";

  // Pass 2: this rank's rows, read straight into the arrays its matrix is built on.
  const PetscInt m = data.local_rows();
  const std::int64_t row0 = first + data.row_begin;
  LocalCsr csr;
  csr.row_ptr.assign(static_cast<std::size_t>(m) + 1, 0);
  file.read_all(layout.row_lengths() + row0 * kIntBytes, csr.row_ptr.data() + 1, m, kIntType);
  binary::swap_bytes(csr.row_ptr.data() + 1, static_cast<std::size_t>(m));
  std::int64_t nnz = 0;
  for (PetscInt i = 0; i < m; ++i) {
    nnz += csr.row_ptr[i + 1];
    if (nnz >= PETSC_MAX_INT)
      throw InputError(path + ": more than 2^31 nonzeros on one rank; run on more ranks");
    csr.row_ptr[i + 1] = static_cast<PetscInt>(nnz);
  }
  const std::int64_t nz0 = m > 0 ? start_nz[rank] : 0;
  csr.cols.resize(static_cast<std::size_t>(nnz));
  csr.vals.resize(static_cast<std::size_t>(nnz));
  file.read_all(layout.cols() + nz0 * kIntBytes, csr.cols.data(), nnz, kIntType);
  file.read_all(layout.vals() + nz0 * kRealBytes, csr.vals.data(), nnz, MPIU_SCALAR);
  std::vector<double> labels(static_cast<std::size_t>(m));
  file.read_all(layout.labels() + row0 * kRealBytes, labels.data(), m, MPI_DOUBLE);
  binary::swap_bytes(csr.cols.data(), csr.cols.size());
  binary::swap_bytes(csr.vals.data(), csr.vals.size());
  binary::swap_bytes(labels.data(), labels.size());

  // Re-base when forced to another base than the conversion used.
  const int shift = options.index_base >= 0 && !data.fixed_width ? meta.index_base - options.index_base : 0;
  if (shift != 0) {
    if (shift < 0 && meta.index_zero_seen)
      throw InputError(path + " has feature index 0; it cannot be read 1-based (-bilevel_data_index_base)");
    data.n_features += shift;
    data.index_base = options.index_base;
  }
  libsvm::assign_labels(data, labels);
  collective(comm, [&] {
    for (PetscInt& c : csr.cols) {
      c += shift;
      if (c < 0 || c >= data.n_features)
        throw InputError(path + ": corrupt column index " + std::to_string(c));
    }
    data.local = LocalCsr::adopt(std::move(csr), data.n_features);
  });
  return data;
}

}  // namespace bilevel
