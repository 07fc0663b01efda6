#pragma once
/// \file Reading plain or compressed (gzip, bzip2, xz) files as one byte stream.
#include <cstddef>
#include <cstdint>
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
  /// Bytes of the file read so far (compressed bytes for a compressed file; read ahead in blocks, so a
  /// measure of progress, not a position), or -1 if the stream does not know.
  virtual std::int64_t file_bytes_read() const { return -1; }
  /// Opens `path`; a missing or unreadable file is an InputError "cannot open FILE: reason".
  static std::unique_ptr<InputStream> open(const std::string& path);
};

/// How a file is compressed, by its magic bytes.
enum class FileCompression { None, Gzip, Bzip2, Xz };

/// The compression of `path` by its first bytes; a missing file is an InputError "cannot open FILE: reason".
/// Not collective.
FileCompression compression_of(const std::string& path);

/// How many decompressing streams (gzip, bzip2, xz) this process has opened so far: each is one pass of
/// decompression over a file. Not collective.
std::int64_t decompression_passes();

/// Bytes this process has read from data files so far (through InputStream, the plain-text LIBSVM byte
/// ranges and the IDX records; file headers peeked at to detect a compression are not counted). Lets a test
/// check that a rank reads only its part of a file. Not collective.
std::int64_t data_file_bytes_read();

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
