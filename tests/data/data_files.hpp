#pragma once
/// \file Helpers of the data-reader tests: a scratch folder shared by the ranks, files written by rank 0
/// (plain or compressed), and checks on expected InputError messages.
#include <bzlib.h>
#include <gtest/gtest.h>
#include <lzma.h>
#include <mpi.h>
#include <petscmat.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "bilevel/data/dataset.hpp"
#include "bilevel/petsc/error.hpp"

namespace bilevel::data_test {

enum class Compression { None, Gzip, Bzip2, Xz };

inline const char* suffix(Compression c) {
  switch (c) {
    case Compression::Gzip:
      return ".gz";
    case Compression::Bzip2:
      return ".bz2";
    case Compression::Xz:
      return ".xz";
    default:
      return "";
  }
}

/// `data` compressed in one stream (gzip member, bzip2 stream, xz stream).
inline std::string compress(const std::string& data, Compression c) {
  std::string out;
  if (c == Compression::None) return data;
  if (c == Compression::Gzip) {
    z_stream z{};
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      throw std::runtime_error("zlib");
    out.resize(deflateBound(&z, data.size()));
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
    out.resize(z.total_out);
    deflateEnd(&z);
  } else if (c == Compression::Bzip2) {
    auto size = static_cast<unsigned>(data.size() + data.size() / 100 + 600);
    out.resize(size);
    if (BZ2_bzBuffToBuffCompress(
            out.data(), &size, const_cast<char*>(data.data()), static_cast<unsigned>(data.size()), 9, 0, 0) !=
        BZ_OK)
      throw std::runtime_error("bzip2");
    out.resize(size);
  } else {
    out.resize(lzma_stream_buffer_bound(data.size()));
    std::size_t pos = 0;
    if (lzma_easy_buffer_encode(6,
                                LZMA_CHECK_CRC64,
                                nullptr,
                                reinterpret_cast<const uint8_t*>(data.data()),
                                data.size(),
                                reinterpret_cast<uint8_t*>(out.data()),
                                &pos,
                                out.size()) != LZMA_OK)
      throw std::runtime_error("xz");
    out.resize(pos);
  }
  return out;
}

/// A fresh folder under $TMPDIR (or /tmp) made by rank 0 and known to every rank; removed on
/// destruction. Construction and destruction are collective on PETSC_COMM_WORLD.
class ScratchDir {
 public:
  ScratchDir() {
    MPI_Comm_rank(PETSC_COMM_WORLD, &rank_);
    std::string path;
    if (rank_ == 0) {
      const char* tmp = std::getenv("TMPDIR");
      std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/bilevel-data-XXXXXX";
      if (::mkdtemp(pattern.data()) == nullptr) pattern.clear();
      path = pattern;
    }
    int length = static_cast<int>(path.size());
    MPI_Bcast(&length, 1, MPI_INT, 0, PETSC_COMM_WORLD);
    path.resize(static_cast<std::size_t>(length));
    MPI_Bcast(path.data(), length, MPI_CHAR, 0, PETSC_COMM_WORLD);
    if (path.empty()) throw std::runtime_error("cannot create a scratch folder");
    path_ = path;
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    MPI_Barrier(PETSC_COMM_WORLD);
    std::error_code ignored;
    if (rank_ == 0) std::filesystem::remove_all(path_, ignored);
  }

  /// Rank 0 writes `bytes` to the file `name` (compressed if asked); every rank gets its path after a
  /// barrier. Collective.
  std::string write(const std::string& name,
                    const std::string& bytes,
                    Compression c = Compression::None) const {
    const std::string path = path_ + "/" + name;
    if (rank_ == 0) {
      std::ofstream out(path, std::ios::binary);
      const std::string data = compress(bytes, c);
      out.write(data.data(), static_cast<std::streamsize>(data.size()));
    }
    MPI_Barrier(PETSC_COMM_WORLD);
    return path;
  }

  const std::string& path() const { return path_; }

 private:
  int rank_ = 0;
  std::string path_;
};

/// The message of the InputError that f() throws, or a description of what happened instead.
template <typename F>
std::string input_error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not an InputError: ") + e.what();
  }
  return "no exception";
}

/// Success if `message` contains every one of `parts` and is one line.
inline ::testing::AssertionResult mentions(const std::string& message,
                                           std::initializer_list<std::string> parts) {
  for (const std::string& part : parts)
    if (message.find(part) == std::string::npos)
      return ::testing::AssertionFailure() << "'" << message << "' does not contain '" << part << "'";
  if (message.find('\n') != std::string::npos)
    return ::testing::AssertionFailure() << "'" << message << "' is not one line";
  return ::testing::AssertionSuccess();
}

/// Row `global_row` of a data set (owned by this rank), all n_features columns. Not collective.
inline std::vector<double> owned_row(const Dataset& data, PetscInt global_row) {
  std::vector<double> row(static_cast<std::size_t>(data.n_features), 0.0);
  const PetscInt local = global_row - data.row_begin;
  PetscInt n = 0;
  const PetscInt* cols = nullptr;
  const PetscScalar* vals = nullptr;
  BILEVEL_PETSC_CALL(MatGetRow(data.local, local, &n, &cols, &vals));
  for (PetscInt k = 0; k < n; ++k) row[static_cast<std::size_t>(cols[k])] = vals[k];
  BILEVEL_PETSC_CALL(MatRestoreRow(data.local, local, &n, &cols, &vals));
  return row;
}

/// Sum over ranks of a local count. Collective on PETSC_COMM_WORLD.
inline long long sum_over_ranks(long long local) {
  long long total = 0;
  MPI_Allreduce(&local, &total, 1, MPI_LONG_LONG, MPI_SUM, PETSC_COMM_WORLD);
  return total;
}

/// Stored entries of the local block. Not collective.
inline long long local_nonzeros(const Dataset& data) {
  MatInfo info;
  BILEVEL_PETSC_CALL(MatGetInfo(data.local, MAT_LOCAL, &info));
  return static_cast<long long>(info.nz_used);
}

}  // namespace bilevel::data_test
