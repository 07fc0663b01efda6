/// \file Parallel two-pass reader of LIBSVM/svmlight text files.
#include "bilevel/data/libsvm.hpp"

#include <mpi.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bilevel/data/stream.hpp"
#include "bilevel/petsc/collective.hpp"
#include "bilevel/petsc/error.hpp"
#include "local_csr.hpp"

namespace bilevel {
namespace {

/// What is wrong with one line; the caller adds "FILE:LINE: ".
struct LineError {
  std::string what;
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/// The line's content before any '#' comment, without surrounding white space.
std::string_view content_of(std::string_view line) {
  line = line.substr(0, line.find('#'));
  std::size_t begin = 0, end = line.size();
  while (begin < end && is_space(line[begin])) ++begin;
  while (end > begin && is_space(line[end - 1])) --end;
  return line.substr(begin, end - begin);
}

/// A token quoted for a one-line message: at most 40 characters, control bytes replaced.
std::string quoted(std::string_view token) {
  constexpr std::size_t kMax = 40;
  std::string out = "'";
  for (char c : token.substr(0, kMax)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  if (token.size() > kMax) out += "...";
  return out + "'";
}

/// Parses a whole token as a finite double ('+' allowed); false if it is not one.
bool parse_double(std::string_view token, double& value) {
  if (token.size() > 1 && token[0] == '+' && token[1] != '-' && token[1] != '+') token.remove_prefix(1);
  const char* end = token.data() + token.size();
  const auto [ptr, ec] = std::from_chars(token.data(), end, value);
  return ec == std::errc() && ptr == end;
}

double parse_number(std::string_view token, const char* what) {
  double value = 0;
  if (!parse_double(token, value)) throw LineError{std::string("non-numeric ") + what + " " + quoted(token)};
  if (!std::isfinite(value)) throw LineError{std::string("non-finite ") + what + " " + quoted(token)};
  return value;
}

/// Rows parsed from the file, with the file's own (not yet re-based) feature indices.
struct ParsedRows {
  LocalCsr csr;
  std::vector<double> labels;
  PetscInt max_index = -1;
  bool saw_index_zero = false;
};

/// Parses one data line "label [qid:Q] index:value ... " (content_of already applied) into `rows`.
void parse_line(std::string_view text, int index_base, ParsedRows& rows) {
  std::size_t pos = 0;
  auto next_token = [&]() {
    while (pos < text.size() && is_space(text[pos])) ++pos;
    const std::size_t begin = pos;
    while (pos < text.size() && !is_space(text[pos])) ++pos;
    return text.substr(begin, pos - begin);
  };

  const double label = parse_number(next_token(), "label");
  const std::size_t row_start = rows.csr.cols.size();
  std::int64_t previous = -1;
  for (std::string_view token = next_token(); !token.empty(); token = next_token()) {
    if (token.starts_with("qid:")) continue;
    const std::size_t colon = token.find(':');
    if (colon == std::string_view::npos) throw LineError{"expected INDEX:VALUE, got " + quoted(token)};
    const std::string_view index_text = token.substr(0, colon), value_text = token.substr(colon + 1);
    std::int64_t index = -1;
    const char* index_end = index_text.data() + index_text.size();
    const auto [ptr, ec] = std::from_chars(index_text.data(), index_end, index);
    if (ec != std::errc() || ptr != index_end || index < std::max(index_base, 0) || index >= PETSC_MAX_INT)
      throw LineError{"bad feature index " + quoted(index_text)};
    if (index <= previous)
      throw LineError{"feature indices not increasing (" + std::to_string(index) + " after " +
                      std::to_string(previous) + ")"};
    if (value_text.empty()) throw LineError{"feature " + std::to_string(index) + " has no value"};
    const double value = parse_number(value_text, "value");
    previous = index;
    rows.csr.cols.push_back(static_cast<PetscInt>(index));
    rows.csr.vals.push_back(value);
  }
  if (rows.csr.cols.size() > row_start) {
    rows.max_index = std::max(rows.max_index, rows.csr.cols.back());
    rows.saw_index_zero = rows.saw_index_zero || rows.csr.cols[row_start] == 0;
  }
  rows.labels.push_back(label);
  rows.csr.row_ptr.push_back(static_cast<PetscInt>(rows.csr.cols.size()));
}

/// Pass 1: the number of data rows in the file. Not collective.
std::int64_t count_data_rows(const std::string& path) {
  LineReader reader(InputStream::open(path));
  std::string line;
  std::int64_t rows = 0;
  while (reader.next(line))
    if (!content_of(line).empty()) ++rows;
  return rows;
}

/// Pass 2: parses data rows [first, last) of the file, reading no further than needed. Not collective.
ParsedRows parse_rows(const std::string& path, std::int64_t first, std::int64_t last, int index_base) {
  ParsedRows rows;
  if (first >= last) return rows;
  rows.labels.reserve(static_cast<std::size_t>(last - first));
  rows.csr.row_ptr.reserve(static_cast<std::size_t>(last - first) + 1);
  LineReader reader(InputStream::open(path));
  std::string line;
  std::int64_t line_number = 0, row = 0;
  while (row < last && reader.next(line)) {
    ++line_number;
    const std::string_view text = content_of(line);
    if (text.empty()) continue;
    if (row++ < first) continue;
    try {
      parse_line(text, index_base, rows);
    } catch (const LineError& e) {
      throw InputError(path + ":" + std::to_string(line_number) + ": " + e.what);
    }
    if (rows.csr.cols.size() >= static_cast<std::size_t>(PETSC_MAX_INT))
      throw InputError(path + ": more than 2^31 nonzeros on one rank; run on more ranks");
  }
  if (row < last) throw InputError(path + ": the file changed while being read");
  return rows;
}

/// The sorted distinct values of `local` over all ranks of comm. Collective.
std::vector<double> distinct_over_ranks(MPI_Comm comm, std::vector<double> local) {
  std::sort(local.begin(), local.end());
  local.erase(std::unique(local.begin(), local.end()), local.end());
  int size = 0;
  MPI_Comm_size(comm, &size);
  const int count = static_cast<int>(local.size());
  std::vector<int> counts(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size) + 1, 0);
  MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, comm);
  for (int r = 0; r < size; ++r) offsets[r + 1] = offsets[r] + counts[r];
  std::vector<double> all(static_cast<std::size_t>(offsets[size]));
  MPI_Allgatherv(
      local.data(), count, MPI_DOUBLE, all.data(), counts.data(), offsets.data(), MPI_DOUBLE, comm);
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
}

/// Class values for the distinct labels: binary {-1,+1} or {0,1} (also when only one of them occurs),
/// otherwise the labels themselves in sorted order.
std::vector<double> class_values_for(const std::vector<double>& labels) {
  auto within = [&](double a, double b) {
    return std::all_of(labels.begin(), labels.end(), [&](double v) { return v == a || v == b; });
  };
  if (within(-1.0, 1.0)) return {-1.0, 1.0};
  if (within(0.0, 1.0)) return {0.0, 1.0};
  return labels;
}

void check_options(const std::string& path, const LibsvmReadOptions& options) {
  auto bad = [&](const std::string& what) { throw InputError("reading " + path + ": " + what); };
  if (options.n_features < 0) bad("n_features must be >= 0, got " + std::to_string(options.n_features));
  if (options.first_row < 0) bad("first_row must be >= 0, got " + std::to_string(options.first_row));
  if (options.index_base < -1 || options.index_base > 1)
    bad("index_base must be -1 (detect), 0 or 1, got " + std::to_string(options.index_base));
}

}  // namespace

Dataset read_libsvm(MPI_Comm comm, const std::string& path, const LibsvmReadOptions& options) {
  check_options(path, options);
  int size = 0, rank = 0;
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(comm, &rank);

  // Pass 1 on every rank: count the data rows.
  std::int64_t file_rows = 0;
  collective(comm, [&] { file_rows = count_data_rows(path); });
  std::int64_t fewest = 0, most = 0;
  MPI_Allreduce(&file_rows, &fewest, 1, MPI_INT64_T, MPI_MIN, comm);
  MPI_Allreduce(&file_rows, &most, 1, MPI_INT64_T, MPI_MAX, comm);
  if (fewest != most)
    throw InputError(path + ": ranks see different files (" + std::to_string(fewest) + " and " +
                     std::to_string(most) + " data rows)");
  if (file_rows == 0) throw InputError(path + ": no data rows");
  if (options.first_row >= file_rows)
    throw InputError(path + ": no data rows after skipping " + std::to_string(options.first_row) +
                     " (the file has " + std::to_string(file_rows) + ")");
  const std::int64_t available = file_rows - options.first_row;
  const std::int64_t selected =
      options.max_rows < 0 ? available : std::min<std::int64_t>(options.max_rows, available);
  if (selected == 0) throw InputError(path + ": no data rows selected (max_rows = 0)");
  if (selected >= PETSC_MAX_INT) throw InputError(path + ": too many rows for 32-bit PETSc indices");

  Dataset data;
  data.comm = comm;
  data.source = path;
  data.format = DataFormat::Sparse;
  data.n_rows = static_cast<PetscInt>(selected);
  data.row_ranges.resize(static_cast<std::size_t>(size) + 1);
  for (int r = 0; r <= size; ++r) data.row_ranges[r] = block_begin(data.n_rows, size, r);
  data.row_begin = data.row_ranges[rank];
  data.row_end = data.row_ranges[rank + 1];

  // Pass 2: each rank parses its own block of rows.
  ParsedRows rows;
  collective(comm, [&] {
    rows = parse_rows(
        path, options.first_row + data.row_begin, options.first_row + data.row_end, options.index_base);
  });

  // Index base and width, agreed over all ranks.
  int saw_zero = rows.saw_index_zero ? 1 : 0, any_zero = 0;
  MPI_Allreduce(&saw_zero, &any_zero, 1, MPI_INT, MPI_LOR, comm);
  PetscInt max_index = -1;
  MPI_Allreduce(&rows.max_index, &max_index, 1, MPIU_INT, MPI_MAX, comm);
  const PetscInt base = options.index_base >= 0 ? options.index_base : (any_zero ? 0 : 1);
  const PetscInt found = max_index < 0 ? 0 : max_index + 1 - base;
  if (options.n_features > 0 && found > options.n_features)
    throw InputError(path + " has " + std::to_string(found) + " features, more than the " +
                     std::to_string(options.n_features) + " requested");
  data.n_features = options.n_features > 0 ? options.n_features : found;

  // Labels: class indices into the sorted class values, agreed over all ranks.
  data.class_values = class_values_for(distinct_over_ranks(comm, rows.labels));
  data.n_classes = static_cast<PetscInt>(data.class_values.size());
  data.labels.resize(rows.labels.size());
  for (std::size_t i = 0; i < rows.labels.size(); ++i)
    data.labels[i] = static_cast<PetscInt>(
        std::lower_bound(data.class_values.begin(), data.class_values.end(), rows.labels[i]) -
        data.class_values.begin());

  collective(comm, [&] {
    if (base != 0)
      for (PetscInt& col : rows.csr.cols) col -= base;
    data.local = rows.csr.to_seqaij(data.n_features);
  });
  return data;
}

}  // namespace bilevel
