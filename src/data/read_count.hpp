#pragma once
/// \file Private to src/data: the count behind data_file_bytes_read() (stream.hpp).
#include <cstdint>

namespace bilevel::detail {

/// Adds `bytes` read from a data file by this process. Not collective.
void add_data_file_bytes_read(std::int64_t bytes);

}  // namespace bilevel::detail
