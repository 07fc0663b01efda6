#pragma once
/// \file Private to src/data: big-endian values of PETSc's binary format and the PATH.meta text.
#include <petscsys.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "bilevel/data/petsc_binary.hpp"

namespace bilevel::binary {

constexpr PetscInt kMatClassId = 1211216;  // MAT_FILE_CLASSID
constexpr PetscInt kVecClassId = 1211214;  // VEC_FILE_CLASSID
constexpr std::int64_t kIntBytes = sizeof(PetscInt);
constexpr std::int64_t kRealBytes = sizeof(double);

/// Swaps the bytes of each value in place (PETSc binary files are big-endian; this host is not). Not
/// collective.
template <typename T>
void swap_bytes(T* values, std::size_t n) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  if constexpr (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__) return;
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (sizeof(T) == 4) {
      std::uint32_t u;
      std::memcpy(&u, values + i, 4);
      u = __builtin_bswap32(u);
      std::memcpy(values + i, &u, 4);
    } else {
      std::uint64_t u;
      std::memcpy(&u, values + i, 8);
      u = __builtin_bswap64(u);
      std::memcpy(values + i, &u, 8);
    }
  }
}

/// Byte offsets of the sections of a data-set file with m rows and nz nonzeros.
struct Layout {
  std::int64_t m = 0, nz = 0;
  std::int64_t row_lengths() const { return 4 * kIntBytes; }
  std::int64_t cols() const { return row_lengths() + m * kIntBytes; }
  std::int64_t vals() const { return cols() + nz * kIntBytes; }
  std::int64_t vec_header() const { return vals() + nz * kRealBytes; }
  std::int64_t labels() const { return vec_header() + 2 * kIntBytes; }
  std::int64_t end() const { return labels() + m * kRealBytes; }
};

/// The text of PATH.meta. Not collective.
std::string meta_text(const BinaryMeta& meta);
/// Parses the text of PATH.meta (`path` for messages). Not collective.
BinaryMeta parse_meta(const std::string& text, const std::string& path);

}  // namespace bilevel::binary
