#pragma once
/// \file Reading plain or compressed (gzip, bzip2, xz) files as one byte stream.
#include <cstddef>
#include <memory>
#include <string>

namespace bilevel {

/// A sequential reader that decompresses by the file's magic bytes (not its name). Not collective.
class InputStream {
 public:
  virtual ~InputStream() = default;
  /// Reads up to n bytes; returns the count, 0 at end of stream. Throws InputError naming the file on a
  /// corrupt stream.
  virtual std::size_t read(char* buffer, std::size_t n) = 0;
  /// Opens `path`; a missing or unreadable file is an InputError "cannot open FILE: reason".
  static std::unique_ptr<InputStream> open(const std::string& path);
};

/// How a file is compressed, by its magic bytes.
enum class FileCompression { None, Gzip, Bzip2, Xz };

/// The compression of `path` by its first bytes; a missing file is an InputError "cannot open FILE: reason".
/// Not collective.
FileCompression compression_of(const std::string& path);

/// Reads lines from an InputStream with a reusable buffer. Not collective.
class LineReader {
 public:
  explicit LineReader(std::unique_ptr<InputStream> in);
  /// Next line without the newline; false at end of stream.
  bool next(std::string& line);

 private:
  std::unique_ptr<InputStream> in_;
  std::string buf_;
  std::size_t pos_ = 0;
  bool eof_ = false;
};

}  // namespace bilevel
