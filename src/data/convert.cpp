/// \file Streaming conversion of LIBSVM and IDX files to PETSc binary data sets (bilevel-convert).
#include <petscsys.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bilevel/data/petsc_binary.hpp"
#include "bilevel/data/stream.hpp"
#include "bilevel/petsc/error.hpp"
#include "binary_io.hpp"
#include "libsvm_parse.hpp"

namespace bilevel {
namespace {

constexpr std::size_t kCopyValues = std::size_t{1} << 17;  // values per block when joining the parts

/// A scratch file of native values beside the output, removed on destruction.
class Part {
 public:
  Part(const std::string& output, const char* name) : path_(output + "." + name + ".tmp") {
    file_ = std::fopen(path_.c_str(), "w+b");
    if (!file_) throw InputError("cannot write " + path_ + ": " + std::strerror(errno));
  }
  Part(const Part&) = delete;
  Part& operator=(const Part&) = delete;
  ~Part() {
    if (file_) std::fclose(file_);
    std::remove(path_.c_str());
  }
  template <typename T>
  void append(const T* values, std::size_t n) {
    if (n > 0 && std::fwrite(values, sizeof(T), n, file_) != n)
      throw InputError("cannot write " + path_ + ": " + std::strerror(errno));
  }
  /// Copies every value to `out` big-endian, after `adjust` on each. Not collective.
  template <typename T, typename F>
  void copy_to(std::FILE* out, const std::string& out_path, F adjust) {
    std::fflush(file_);
    std::rewind(file_);
    std::vector<T> block(kCopyValues);
    for (;;) {
      const std::size_t got = std::fread(block.data(), sizeof(T), block.size(), file_);
      if (got == 0) break;
      for (std::size_t i = 0; i < got; ++i) block[i] = adjust(block[i]);
      binary::swap_bytes(block.data(), got);
      if (std::fwrite(block.data(), sizeof(T), got, out) != got)
        throw InputError("cannot write " + out_path + ": " + std::strerror(errno));
    }
    if (std::ferror(file_)) throw InputError("cannot read " + path_);
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

/// The four parts of a data set being converted, and what is known about it so far.
struct Parts {
  explicit Parts(const std::string& output)
      : lengths(output, "rowlen"), cols(output, "cols"), vals(output, "vals"), labels(output, "labels") {}
  Part lengths, cols, vals, labels;
  std::int64_t rows = 0, nonzeros = 0;
  PetscInt max_index = -1;
  bool saw_zero = false;
  std::set<double> label_set;

  /// Appends a block of parsed rows and empties it. Not collective.
  void add(libsvm::ParsedRows& block) {
    const PetscInt m = block.csr.rows();
    std::vector<PetscInt> len(static_cast<std::size_t>(m));
    for (PetscInt i = 0; i < m; ++i) len[i] = block.csr.row_ptr[i + 1] - block.csr.row_ptr[i];
    lengths.append(len.data(), len.size());
    cols.append(block.csr.cols.data(), block.csr.cols.size());
    vals.append(block.csr.vals.data(), block.csr.vals.size());
    labels.append(block.labels.data(), block.labels.size());
    label_set.insert(block.labels.begin(), block.labels.end());
    rows += m;
    nonzeros += static_cast<std::int64_t>(block.csr.cols.size());
    max_index = std::max(max_index, block.max_index);
    saw_zero = saw_zero || block.saw_index_zero;
    if (rows >= PETSC_MAX_INT || nonzeros >= PETSC_MAX_INT)
      throw InputError("too many rows or nonzeros for 32-bit PETSc indices");
    block = libsvm::ParsedRows{};
  }

  /// Joins the parts into `output` (columns shifted down by `base`) and writes output.meta. Not collective.
  BinaryMeta finish(const std::string& output, BinaryMeta meta, int base) {
    meta.rows = rows;
    meta.nonzeros = nonzeros;
    meta.labels.assign(label_set.begin(), label_set.end());
    std::FILE* out = std::fopen(output.c_str(), "wb");
    if (!out) throw InputError("cannot write " + output + ": " + std::strerror(errno));
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(out, std::fclose);
    PetscInt header[4] = {binary::kMatClassId,
                          static_cast<PetscInt>(rows),
                          static_cast<PetscInt>(meta.features),
                          static_cast<PetscInt>(nonzeros)};
    binary::swap_bytes(header, 4);
    std::fwrite(header, sizeof(PetscInt), 4, out);
    auto same_int = [](PetscInt v) { return v; };
    auto same_real = [](double v) { return v; };
    lengths.copy_to<PetscInt>(out, output, same_int);
    cols.copy_to<PetscInt>(out, output, [base](PetscInt c) { return c - base; });
    vals.copy_to<double>(out, output, same_real);
    PetscInt vec_header[2] = {binary::kVecClassId, static_cast<PetscInt>(rows)};
    binary::swap_bytes(vec_header, 2);
    std::fwrite(vec_header, sizeof(PetscInt), 2, out);
    labels.copy_to<double>(out, output, same_real);
    if (std::ferror(out) || std::fflush(out) != 0)
      throw InputError("cannot write " + output + ": " + std::strerror(errno));
    std::ofstream meta_out(output + ".meta");
    meta_out << binary::meta_text(meta);
    if (!meta_out) throw InputError("cannot write " + output + ".meta");
    return meta;
  }
};

BinaryMeta convert_libsvm(const std::string& input,
                          const std::string& output,
                          const ConvertOptions& options) {
  Parts parts(output);
  libsvm::ParsedRows block;
  LineReader reader(InputStream::open(input));
  std::string line;
  std::int64_t line_number = 0;
  while (reader.next(line)) {
    ++line_number;
    const std::string_view text = libsvm::content_of(line);
    if (text.empty()) continue;
    try {
      libsvm::parse_line(text, options.index_base, block);
    } catch (const libsvm::LineError& e) {
      throw InputError(input + ":" + std::to_string(line_number) + ": " + e.what);
    }
    if (block.labels.size() >= options.block_rows) parts.add(block);
  }
  parts.add(block);
  if (parts.rows == 0) throw InputError(input + ": no data rows");
  const int base = options.index_base >= 0 ? options.index_base : (parts.saw_zero ? 0 : 1);
  BinaryMeta meta;
  meta.features = parts.max_index < 0 ? 0 : parts.max_index + 1 - base;
  meta.index_base = base;
  meta.index_zero_seen = parts.saw_zero;
  meta.origin = "libsvm";
  meta.source = input;
  return parts.finish(output, meta, base);
}

std::uint32_t big_endian_32(const unsigned char* b) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
}

/// Opens an IDX file and reads its header: record count and bytes per record. Not collective.
std::unique_ptr<InputStream> open_idx(const std::string& path,
                                      std::uint32_t magic,
                                      std::int64_t& records,
                                      std::int64_t& record_bytes) {
  auto in = InputStream::open(path);
  auto read = [&](unsigned char* out, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const std::size_t got = in->read(reinterpret_cast<char*>(out) + done, n - done);
      if (got == 0) throw InputError(path + ": truncated IDX header");
      done += got;
    }
  };
  unsigned char word[4];
  read(word, 4);
  if (big_endian_32(word) != magic)
    throw InputError(path + ": not an IDX file of unsigned bytes (bad magic)");
  record_bytes = 1;
  for (unsigned d = 0; d < (magic & 0xffu); ++d) {
    read(word, 4);
    if (d == 0)
      records = big_endian_32(word);
    else
      record_bytes *= big_endian_32(word);
  }
  return in;
}

BinaryMeta convert_idx(const std::string& input, const std::string& output, const ConvertOptions& options) {
  std::string label_path = options.idx_labels;
  if (label_path.empty()) {
    const auto pos = input.find("images-idx3");
    if (pos == std::string::npos)
      throw InputError(input + ": give the label file (--labels); the name has no 'images-idx3'");
    label_path = input;
    label_path.replace(pos, 11, "labels-idx1");
  }
  std::int64_t n = 0, pixels = 0, n_labels = 0, one = 0;
  auto images = open_idx(input, 0x00000803, n, pixels);
  auto labels = open_idx(label_path, 0x00000801, n_labels, one);
  if (n != n_labels)
    throw InputError(input + " has " + std::to_string(n) + " images but " + label_path + " has " +
                     std::to_string(n_labels) + " labels");
  Parts parts(output);
  libsvm::ParsedRows block;
  std::vector<unsigned char> image(static_cast<std::size_t>(pixels));
  auto read_exact = [](InputStream& in,
                       unsigned char* out,
                       std::size_t bytes,
                       const std::string& path,
                       std::int64_t record) {
    std::size_t done = 0;
    while (done < bytes) {
      const std::size_t got = in.read(reinterpret_cast<char*>(out) + done, bytes - done);
      if (got == 0) throw InputError(path + ": truncated at record " + std::to_string(record));
      done += got;
    }
  };
  for (std::int64_t r = 0; r < n; ++r) {
    read_exact(*images, image.data(), image.size(), input, r);
    unsigned char label = 0;
    read_exact(*labels, &label, 1, label_path, r);
    for (std::int64_t j = 0; j < pixels; ++j) {
      if (image[j] == 0) continue;
      block.csr.cols.push_back(static_cast<PetscInt>(j));
      block.csr.vals.push_back(options.scale * image[j]);
    }
    block.csr.row_ptr.push_back(static_cast<PetscInt>(block.csr.cols.size()));
    block.labels.push_back(label);
    if (block.labels.size() >= options.block_rows) parts.add(block);
  }
  parts.add(block);
  if (parts.rows == 0) throw InputError(input + ": no images");
  BinaryMeta meta;
  meta.features = pixels;
  meta.index_base = 0;
  meta.origin = "idx";
  meta.source = input;
  return parts.finish(output, meta, 0);
}

}  // namespace

BinaryMeta convert_to_petsc_binary(const std::string& input,
                                   const std::string& output,
                                   const ConvertOptions& options) {
  if (options.index_base < -1 || options.index_base > 1)
    throw InputError("index base must be auto, 0 or 1, got " + std::to_string(options.index_base));
  if (options.block_rows == 0) throw InputError("block_rows must be positive");
  // IDX by its magic (after decompression): 0x00000803.
  bool idx = false;
  {
    auto in = InputStream::open(input);
    unsigned char word[4] = {1, 1, 1, 1};
    std::size_t done = 0;
    while (done < 4) {
      const std::size_t got = in->read(reinterpret_cast<char*>(word) + done, 4 - done);
      if (got == 0) break;
      done += got;
    }
    idx = done == 4 && big_endian_32(word) == 0x00000803;
  }
  return idx ? convert_idx(input, output, options) : convert_libsvm(input, output, options);
}

}  // namespace bilevel
