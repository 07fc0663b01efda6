/// \file Parallel reader of IDX image and label files (MNIST, Fashion-MNIST).
#include "bilevel/data/idx.hpp"

#include <fcntl.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/data/stream.hpp"
#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "local_csr.hpp"
#include "read_count.hpp"

namespace bilevel {
namespace {

constexpr std::uint32_t kImageMagic = 0x00000803;  // unsigned bytes, 3 dimensions
constexpr std::uint32_t kLabelMagic = 0x00000801;  // unsigned bytes, 1 dimension
constexpr std::size_t kBatchBytes = std::size_t{1} << 20;

std::size_t read_fully(InputStream& in, unsigned char* buffer, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const std::size_t got = in.read(reinterpret_cast<char*>(buffer) + done, n - done);
    if (got == 0) break;
    done += got;
  }
  return done;
}

std::uint32_t big_endian_32(const unsigned char* bytes) {
  return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) | (std::uint32_t{bytes[2]} << 8) |
         std::uint32_t{bytes[3]};
}

std::string hex32(std::uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", static_cast<unsigned>(value));
  return text;
}

/// An IDX file opened and positioned after its header; records are read in order. A plain file is read
/// with pread at each record's offset (records have a fixed size), so skipping records reads nothing; a
/// compressed one is decompressed from its start.
class IdxFile {
 public:
  IdxFile() = default;
  IdxFile(const IdxFile&) = delete;
  IdxFile& operator=(const IdxFile&) = delete;
  IdxFile(IdxFile&& o) noexcept { *this = std::move(o); }
  IdxFile& operator=(IdxFile&& o) noexcept {
    std::swap(path_, o.path_);
    std::swap(in_, o.in_);
    std::swap(fd_, o.fd_);
    std::swap(offset_, o.offset_);
    std::swap(records_, o.records_);
    std::swap(record_bytes_, o.record_bytes_);
    std::swap(position_, o.position_);
    return *this;
  }
  ~IdxFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  /// Opens `path` and checks its magic number. Not collective.
  IdxFile(std::string path, std::uint32_t magic, const char* kind) : path_(std::move(path)) {
    if (compression_of(path_) == FileCompression::None) {
      do {
        fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
      } while (fd_ < 0 && errno == EINTR);
      if (fd_ < 0) throw InputError("cannot open " + path_ + ": " + std::strerror(errno));
    } else {
      in_ = InputStream::open(path_);
    }
    unsigned char word[4];
    if (fetch(word, 4) < 4) throw InputError(path_ + ": not an IDX " + kind + " file (too short)");
    const std::uint32_t found = big_endian_32(word);
    if (found != magic)
      throw InputError(path_ + ": not an IDX " + kind + " file (magic " + hex32(found) + ")");
    const unsigned dims = magic & 0xffu;
    record_bytes_ = 1;
    for (unsigned d = 0; d < dims; ++d) {
      if (fetch(word, 4) < 4) throw InputError(path_ + ": truncated IDX header");
      const std::int64_t extent = big_endian_32(word);
      if (d == 0) {
        records_ = extent;
      } else {
        record_bytes_ *= extent;
        if (record_bytes_ >= PETSC_MAX_INT) throw InputError(path_ + ": IDX records too large");
      }
    }
  }

  const std::string& path() const { return path_; }
  std::int64_t records() const { return records_; }
  std::int64_t record_bytes() const { return record_bytes_; }

  /// Reads the next `count` records into `out` (count * record_bytes() bytes). Not collective.
  void read(std::int64_t count, unsigned char* out) {
    const auto want = static_cast<std::size_t>(count * record_bytes_);
    const std::size_t got = fetch(out, want);
    if (got < want) truncated(got);
    position_ += count;
  }

  /// Skips the next `count` records (a plain file: without reading them). Not collective.
  void skip(std::int64_t count) {
    if (fd_ >= 0) {
      offset_ += count * record_bytes_;
      position_ += count;
      return;
    }
    std::vector<unsigned char> scratch(
        std::min(kBatchBytes, static_cast<std::size_t>(count * record_bytes_)));
    std::int64_t left = count * record_bytes_;
    while (left > 0) {
      const auto want = static_cast<std::size_t>(std::min<std::int64_t>(left, scratch.size()));
      const std::size_t got = fetch(scratch.data(), want);
      if (got < want) truncated(count * record_bytes_ - left + got);
      left -= want;
    }
    position_ += count;
  }

 private:
  /// Up to n bytes from the current place (fewer only at the end of the file).
  std::size_t fetch(unsigned char* buffer, std::size_t n) {
    if (!in_) {
      std::size_t done = 0;
      while (done < n) {
        const ssize_t got = ::pread(fd_, buffer + done, n - done, static_cast<off_t>(offset_));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw InputError("cannot read " + path_ + ": " + std::strerror(errno));
        if (got == 0) break;
        done += static_cast<std::size_t>(got);
        offset_ += got;
      }
      detail::add_data_file_bytes_read(static_cast<std::int64_t>(done));
      return done;
    }
    return read_fully(*in_, buffer, n);
  }

  [[noreturn]] void truncated(std::size_t bytes_into_read) const {
    const std::int64_t record = position_ + static_cast<std::int64_t>(bytes_into_read) / record_bytes_;
    throw InputError(path_ + ": truncated at record " + std::to_string(record));
  }

  std::string path_;
  std::unique_ptr<InputStream> in_;  // compressed files
  int fd_ = -1;                      // plain files
  std::int64_t offset_ = 0;          // plain files: the next byte to read
  std::int64_t records_ = 0;
  std::int64_t record_bytes_ = 1;
  std::int64_t position_ = 0;
};

/// Reads `rows` images into a MATSEQDENSE rows x pixels, column-major, scaled. Not collective.
petsc::MatHandle read_dense(IdxFile& images, PetscInt rows, double scale) {
  const std::int64_t pixels = images.record_bytes();
  petsc::MatHandle a;
  BILEVEL_PETSC_CALL(
      MatCreateSeqDense(PETSC_COMM_SELF, rows, static_cast<PetscInt>(pixels), nullptr, a.out()));
  PetscInt lda = 0;
  BILEVEL_PETSC_CALL(MatDenseGetLDA(a, &lda));
  PetscScalar* array = nullptr;
  BILEVEL_PETSC_CALL(MatDenseGetArray(a, &array));
  const std::int64_t batch = std::max<std::int64_t>(1, static_cast<std::int64_t>(kBatchBytes) / pixels);
  std::vector<unsigned char> buffer(static_cast<std::size_t>(std::min<std::int64_t>(batch, rows) * pixels));
  try {
    for (PetscInt first = 0; first < rows; first += static_cast<PetscInt>(batch)) {
      const PetscInt count = static_cast<PetscInt>(std::min<std::int64_t>(batch, rows - first));
      images.read(count, buffer.data());
      // Column by column, so that the writes into column-major storage are contiguous.
      for (std::int64_t j = 0; j < pixels; ++j) {
        PetscScalar* column = array + j * lda + first;
        for (PetscInt i = 0; i < count; ++i) column[i] = scale * buffer[i * pixels + j];
      }
    }
  } catch (...) {
    (void)MatDenseRestoreArray(a, &array);
    throw;
  }
  BILEVEL_PETSC_CALL(MatDenseRestoreArray(a, &array));
  BILEVEL_PETSC_CALL(MatAssemblyBegin(a, MAT_FINAL_ASSEMBLY));
  BILEVEL_PETSC_CALL(MatAssemblyEnd(a, MAT_FINAL_ASSEMBLY));
  return a;
}

/// Reads `rows` images into a MATSEQAIJ of their nonzero pixels, scaled. Not collective.
petsc::MatHandle read_sparse(IdxFile& images, PetscInt rows, double scale) {
  const std::int64_t pixels = images.record_bytes();
  const std::int64_t batch = std::max<std::int64_t>(1, static_cast<std::int64_t>(kBatchBytes) / pixels);
  std::vector<unsigned char> buffer(static_cast<std::size_t>(std::min<std::int64_t>(batch, rows) * pixels));
  LocalCsr csr;
  csr.row_ptr.reserve(static_cast<std::size_t>(rows) + 1);
  for (PetscInt first = 0; first < rows; first += static_cast<PetscInt>(batch)) {
    const PetscInt count = static_cast<PetscInt>(std::min<std::int64_t>(batch, rows - first));
    images.read(count, buffer.data());
    for (PetscInt i = 0; i < count; ++i) {
      const unsigned char* image = buffer.data() + i * pixels;
      for (std::int64_t j = 0; j < pixels; ++j) {
        if (image[j] == 0) continue;
        csr.cols.push_back(static_cast<PetscInt>(j));
        csr.vals.push_back(scale * image[j]);
      }
      csr.row_ptr.push_back(static_cast<PetscInt>(csr.cols.size()));
    }
  }
  return LocalCsr::adopt(std::move(csr), static_cast<PetscInt>(pixels));
}

}  // namespace

Dataset read_idx(MPI_Comm comm,
                 const std::string& images,
                 const std::string& labels,
                 const IdxReadOptions& options) {
  if (options.first_row < 0)
    throw InputError("reading " + images + ": first_row must be >= 0, got " +
                     std::to_string(options.first_row));
  if (!std::isfinite(options.scale))
    throw InputError("reading " + images + ": the pixel scale must be finite");
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);

  // Every rank opens both files and checks their headers.
  IdxFile image_file, label_file;
  collective(comm, [&] {
    image_file = IdxFile(images, kImageMagic, "image");
    label_file = IdxFile(labels, kLabelMagic, "label");
    if (image_file.records() != label_file.records())
      throw InputError(images + " has " + std::to_string(image_file.records()) + " images but " + labels +
                       " has " + std::to_string(label_file.records()) + " labels");
  });
  const std::int64_t n = image_file.records();
  if (n == 0) throw InputError(images + ": no images");
  if (options.first_row >= n)
    throw InputError(images + ": no images after skipping " + std::to_string(options.first_row) +
                     " (the file has " + std::to_string(n) + ")");
  const std::int64_t available = n - options.first_row;
  const std::int64_t selected =
      options.max_rows < 0 ? available : std::min<std::int64_t>(options.max_rows, available);
  if (selected == 0) throw InputError(images + ": no images selected (max_rows = 0)");

  Dataset data;
  data.comm = comm;
  data.source = images;
  data.format = options.format;
  data.fixed_width = true;
  data.n_rows = static_cast<PetscInt>(selected);
  data.n_features = static_cast<PetscInt>(image_file.record_bytes());
  data.row_ranges.resize(static_cast<std::size_t>(size) + 1);
  for (int r = 0; r <= size; ++r) data.row_ranges[r] = block_begin(data.n_rows, size, r);
  data.row_begin = data.row_ranges[rank];
  data.row_end = data.row_ranges[rank + 1];

  // Each rank reads its own block: plain files from the block's offset, compressed ones decompressed up to
  // it.
  collective(comm, [&] {
    const std::int64_t skip = options.first_row + data.row_begin;
    const PetscInt rows = data.local_rows();
    image_file.skip(skip);
    data.local = options.format == DataFormat::Dense ? read_dense(image_file, rows, options.scale)
                                                     : read_sparse(image_file, rows, options.scale);
    std::vector<unsigned char> bytes(static_cast<std::size_t>(rows));
    label_file.skip(skip);
    label_file.read(rows, bytes.data());
    data.labels.assign(bytes.begin(), bytes.end());
  });

  PetscInt local_max = -1, max_label = -1;
  for (PetscInt label : data.labels) local_max = std::max(local_max, label);
  MPI_Allreduce(&local_max, &max_label, 1, MPIU_INT, MPI_MAX, comm);
  data.n_classes = max_label + 1;
  data.class_values.resize(static_cast<std::size_t>(data.n_classes));
  for (PetscInt c = 0; c < data.n_classes; ++c) data.class_values[c] = static_cast<double>(c);
  return data;
}

std::string fashion_mnist_dir() {
  return "/usr/share/datasets/fashion-mnist";
}

}  // namespace bilevel
