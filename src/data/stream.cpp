/// \file Plain, gzip, bzip2 and xz input streams, chosen by magic bytes, and a buffered line reader.
#include "bilevel/data/stream.hpp"

#include <bzlib.h>
#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>
#include <vector>

#include "bilevel/petsc/error.hpp"
#include "read_count.hpp"

namespace bilevel {
namespace {

constexpr std::size_t kCompressedChunk = std::size_t{1} << 18;  // bytes read from disk per refill
constexpr std::size_t kLineChunk = std::size_t{1} << 20;        // bytes decoded per LineReader refill
constexpr std::size_t kMagicBytes = 6;                          // longest magic: xz's

/// A file descriptor opened for reading; the first bytes (the magic) are read ahead and served first.
class File {
 public:
  explicit File(std::string path) : path_(std::move(path)) {
    do {
      fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) throw InputError("cannot open " + path_ + ": " + std::strerror(errno));
    struct stat info {};
    if (::fstat(fd_, &info) == 0 && S_ISDIR(info.st_mode)) {
      ::close(fd_);
      fd_ = -1;
      throw InputError("cannot open " + path_ + ": " + std::strerror(EISDIR));
    }
    magic_size_ = read_raw(magic_.data(), magic_.size());
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }

  const std::string& path() const { return path_; }

  /// True if the file begins with `magic`.
  bool starts_with(const unsigned char* magic, std::size_t n) const {
    return magic_size_ >= n && std::memcmp(magic_.data(), magic, n) == 0;
  }

  /// Reads up to n bytes (fewer only at the end of the file); 0 at the end.
  std::size_t read(char* buffer, std::size_t n) {
    std::size_t done = 0;
    if (magic_pos_ < magic_size_) {
      done = std::min(n, magic_size_ - magic_pos_);
      std::memcpy(buffer, magic_.data() + magic_pos_, done);
      magic_pos_ += done;
    }
    done += read_raw(buffer + done, n - done);
    served_ += static_cast<std::int64_t>(done);
    detail::add_data_file_bytes_read(static_cast<std::int64_t>(done));
    return done;
  }
  /// Bytes served by read() so far.
  std::int64_t served() const { return served_; }

 private:
  std::size_t read_raw(char* buffer, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const ssize_t got = ::read(fd_, buffer + done, n - done);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw InputError("cannot read " + path_ + ": " + std::strerror(errno));
      }
      if (got == 0) break;
      done += static_cast<std::size_t>(got);
    }
    return done;
  }

  std::string path_;
  int fd_ = -1;
  std::array<char, kMagicBytes> magic_{};
  std::size_t magic_size_ = 0;
  std::size_t magic_pos_ = 0;
  std::int64_t served_ = 0;
};

std::int64_t g_decompression_passes = 0;
std::int64_t g_data_file_bytes_read = 0;

class PlainStream final : public InputStream {
 public:
  explicit PlainStream(std::unique_ptr<File> file) : file_(std::move(file)) {}
  std::size_t read(char* buffer, std::size_t n) override { return file_->read(buffer, n); }
  std::int64_t file_bytes_read() const override { return file_->served(); }

 private:
  std::unique_ptr<File> file_;
};

/// Shared input side of the decompressors: a compressed buffer refilled from the file.
class CompressedInput {
 public:
  explicit CompressedInput(std::unique_ptr<File> file) : file_(std::move(file)), buffer_(kCompressedChunk) {
    ++g_decompression_passes;
  }
  std::int64_t file_bytes_read() const { return file_->served(); }

  /// Refills the buffer; returns the byte count (0 at the end of the file).
  std::size_t refill() { return file_->read(buffer_.data(), buffer_.size()); }
  char* data() { return buffer_.data(); }
  const std::string& path() const { return file_->path(); }

  [[noreturn]] void corrupt(const char* format, const std::string& detail) const {
    throw InputError(path() + ": corrupt " + format + " stream (" + detail + ")");
  }

 private:
  std::unique_ptr<File> file_;
  std::vector<char> buffer_;
};

/// Largest count a decompressor's 32-bit avail_out can take.
std::size_t clamp_chunk(std::size_t n) {
  return std::min<std::size_t>(n, UINT_MAX);
}

/// gzip (one or more concatenated members) through zlib's inflate.
class GzipStream final : public InputStream {
 public:
  explicit GzipStream(std::unique_ptr<File> file) : input_(std::move(file)) {
    if (inflateInit2(&z_, 15 + 16) != Z_OK) input_.corrupt("gzip", "cannot initialise zlib");
  }
  ~GzipStream() override { inflateEnd(&z_); }

  std::size_t read(char* buffer, std::size_t n) override {
    n = clamp_chunk(n);
    std::size_t produced = 0;
    while (produced < n && !done_) {
      if (z_.avail_in == 0 && !input_end_) input_end_ = !fill();
      if (!in_member_) {
        // After a complete member another one follows only if the gzip magic does; anything else is
        // trailing padding, which gzip itself ignores.
        if (z_.avail_in == 0 || static_cast<unsigned char>(*z_.next_in) != 0x1f) {
          done_ = true;
          break;
        }
        if (inflateReset(&z_) != Z_OK) input_.corrupt("gzip", "cannot reset zlib");
        in_member_ = true;
      }
      z_.next_out = reinterpret_cast<Bytef*>(buffer + produced);
      z_.avail_out = static_cast<uInt>(n - produced);
      const int status = inflate(&z_, Z_NO_FLUSH);
      produced = n - z_.avail_out;
      if (status == Z_STREAM_END) {
        in_member_ = false;
      } else if (status == Z_BUF_ERROR) {
        // No progress: more input is needed, and there is none.
        if (z_.avail_in == 0 && input_end_) input_.corrupt("gzip", "unexpected end of file");
      } else if (status != Z_OK) {
        input_.corrupt("gzip", z_.msg ? z_.msg : "zlib error " + std::to_string(status));
      }
    }
    return produced;
  }

  std::int64_t file_bytes_read() const override { return input_.file_bytes_read(); }

 private:
  bool fill() {
    const std::size_t got = input_.refill();
    z_.next_in = reinterpret_cast<Bytef*>(input_.data());
    z_.avail_in = static_cast<uInt>(got);
    return got > 0;
  }

  CompressedInput input_;
  z_stream z_{};
  bool in_member_ = true;
  bool input_end_ = false;
  bool done_ = false;
};

/// bzip2 (one or more concatenated streams, as pbzip2 writes them) through libbz2.
class Bzip2Stream final : public InputStream {
 public:
  explicit Bzip2Stream(std::unique_ptr<File> file) : input_(std::move(file)) { init(); }
  ~Bzip2Stream() override { BZ2_bzDecompressEnd(&bz_); }

  std::size_t read(char* buffer, std::size_t n) override {
    n = clamp_chunk(n);
    std::size_t produced = 0;
    while (produced < n && !done_) {
      if (bz_.avail_in == 0 && !input_end_) input_end_ = !fill();
      if (!in_stream_) {
        if (bz_.avail_in == 0 || *bz_.next_in != 'B') {
          done_ = true;
          break;
        }
        char* next_in = bz_.next_in;
        const unsigned avail_in = bz_.avail_in;
        BZ2_bzDecompressEnd(&bz_);
        init();
        bz_.next_in = next_in;
        bz_.avail_in = avail_in;
      }
      bz_.next_out = buffer + produced;
      bz_.avail_out = static_cast<unsigned>(n - produced);
      const int status = BZ2_bzDecompress(&bz_);
      const std::size_t before = produced;
      produced = n - bz_.avail_out;
      if (status == BZ_STREAM_END) {
        in_stream_ = false;
      } else if (status != BZ_OK) {
        input_.corrupt("bzip2", describe(status));
      } else if (produced == before && bz_.avail_in == 0 && input_end_) {
        input_.corrupt("bzip2", "unexpected end of file");
      }
    }
    return produced;
  }

  std::int64_t file_bytes_read() const override { return input_.file_bytes_read(); }

 private:
  void init() {
    bz_ = bz_stream{};
    const int status = BZ2_bzDecompressInit(&bz_, 0, 0);
    if (status != BZ_OK) input_.corrupt("bzip2", describe(status));
    in_stream_ = true;
  }
  bool fill() {
    const std::size_t got = input_.refill();
    bz_.next_in = input_.data();
    bz_.avail_in = static_cast<unsigned>(got);
    return got > 0;
  }
  static std::string describe(int status) {
    switch (status) {
      case BZ_DATA_ERROR:
        return "data integrity error";
      case BZ_DATA_ERROR_MAGIC:
        return "bad magic number";
      case BZ_MEM_ERROR:
        return "out of memory";
      default:
        return "libbz2 error " + std::to_string(status);
    }
  }

  CompressedInput input_;
  bz_stream bz_{};
  bool in_stream_ = true;
  bool input_end_ = false;
  bool done_ = false;
};

/// xz (concatenated streams and stream padding included) through liblzma.
class XzStream final : public InputStream {
 public:
  explicit XzStream(std::unique_ptr<File> file) : input_(std::move(file)) {
    const lzma_ret status = lzma_stream_decoder(&lz_, UINT64_MAX, LZMA_CONCATENATED);
    if (status != LZMA_OK) input_.corrupt("xz", describe(status));
  }
  ~XzStream() override { lzma_end(&lz_); }

  std::size_t read(char* buffer, std::size_t n) override {
    std::size_t produced = 0;
    while (produced < n && !done_) {
      if (lz_.avail_in == 0 && action_ == LZMA_RUN) {
        const std::size_t got = input_.refill();
        lz_.next_in = reinterpret_cast<const std::uint8_t*>(input_.data());
        lz_.avail_in = got;
        if (got == 0) action_ = LZMA_FINISH;
      }
      lz_.next_out = reinterpret_cast<std::uint8_t*>(buffer + produced);
      lz_.avail_out = n - produced;
      const lzma_ret status = lzma_code(&lz_, action_);
      produced = n - lz_.avail_out;
      if (status == LZMA_STREAM_END) {
        done_ = true;
      } else if (status != LZMA_OK) {
        input_.corrupt("xz", describe(status));
      }
    }
    return produced;
  }

  std::int64_t file_bytes_read() const override { return input_.file_bytes_read(); }

 private:
  static std::string describe(lzma_ret status) {
    switch (status) {
      case LZMA_BUF_ERROR:
        return "unexpected end of file";
      case LZMA_DATA_ERROR:
        return "compressed data is corrupt";
      case LZMA_FORMAT_ERROR:
        return "not in the xz format";
      case LZMA_OPTIONS_ERROR:
        return "unsupported compression options";
      case LZMA_MEM_ERROR:
        return "out of memory";
      case LZMA_MEMLIMIT_ERROR:
        return "memory limit reached";
      default:
        return "liblzma error " + std::to_string(static_cast<int>(status));
    }
  }

  CompressedInput input_;
  lzma_stream lz_ = LZMA_STREAM_INIT;
  lzma_action action_ = LZMA_RUN;
  bool done_ = false;
};

constexpr unsigned char kGzipMagic[] = {0x1f, 0x8b};
constexpr unsigned char kBzip2Magic[] = {'B', 'Z', 'h'};
constexpr unsigned char kXzMagic[] = {0xfd, '7', 'z', 'X', 'Z', 0x00};

}  // namespace

std::unique_ptr<InputStream> InputStream::open(const std::string& path) {
  auto file = std::make_unique<File>(path);
  if (file->starts_with(kGzipMagic, sizeof kGzipMagic)) return std::make_unique<GzipStream>(std::move(file));
  if (file->starts_with(kBzip2Magic, sizeof kBzip2Magic))
    return std::make_unique<Bzip2Stream>(std::move(file));
  if (file->starts_with(kXzMagic, sizeof kXzMagic)) return std::make_unique<XzStream>(std::move(file));
  return std::make_unique<PlainStream>(std::move(file));
}

std::int64_t decompression_passes() {
  return g_decompression_passes;
}

std::int64_t data_file_bytes_read() {
  return g_data_file_bytes_read;
}

void detail::add_data_file_bytes_read(std::int64_t bytes) {
  g_data_file_bytes_read += bytes;
}

FileCompression compression_of(const std::string& path) {
  File file(path);
  if (file.starts_with(kGzipMagic, sizeof kGzipMagic)) return FileCompression::Gzip;
  if (file.starts_with(kBzip2Magic, sizeof kBzip2Magic)) return FileCompression::Bzip2;
  if (file.starts_with(kXzMagic, sizeof kXzMagic)) return FileCompression::Xz;
  return FileCompression::None;
}

LineReader::LineReader(std::unique_ptr<InputStream> in) : in_(std::move(in)) {}

bool LineReader::next(std::string& line) {
  for (;;) {
    const char* begin = buf_.data() + pos_;
    const std::size_t available = buf_.size() - pos_;
    const auto* newline = static_cast<const char*>(std::memchr(begin, '\n', available));
    if (newline != nullptr || (eof_ && available > 0)) {
      std::size_t length = newline != nullptr ? static_cast<std::size_t>(newline - begin) : available;
      pos_ += newline != nullptr ? length + 1 : length;
      if (length > 0 && begin[length - 1] == '\r') --length;
      line.assign(begin, length);
      return true;
    }
    if (eof_) return false;
    // Keep the partial line, append the next decoded chunk after it.
    buf_.erase(0, pos_);
    pos_ = 0;
    const std::size_t kept = buf_.size();
    buf_.resize(kept + kLineChunk);
    const std::size_t got = in_->read(buf_.data() + kept, kLineChunk);
    buf_.resize(kept + got);
    eof_ = got == 0;
  }
}

}  // namespace bilevel
