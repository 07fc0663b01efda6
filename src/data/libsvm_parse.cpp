/// \file LIBSVM line parsing and label classes, shared by the text reader and the binary converter.
#include "libsvm_parse.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "bilevel/petsc/error.hpp"

namespace bilevel::libsvm {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

std::string_view content_of(std::string_view line) {
  line = line.substr(0, line.find('#'));
  std::size_t begin = 0, end = line.size();
  while (begin < end && is_space(line[begin])) ++begin;
  while (end > begin && is_space(line[end - 1])) --end;
  return line.substr(begin, end - begin);
}

namespace {

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

}  // namespace

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

std::int64_t count_pairs(std::string_view text) {
  std::int64_t pairs = 0;
  for (std::size_t pos = 0; (pos = text.find(':', pos)) != std::string_view::npos; ++pos) ++pairs;
  for (std::size_t pos = 0; (pos = text.find("qid:", pos)) != std::string_view::npos; pos += 4) --pairs;
  return std::max<std::int64_t>(pairs, 0);
}

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

std::vector<double> class_values_for(const std::vector<double>& labels) {
  auto within = [&](double a, double b) {
    return std::all_of(labels.begin(), labels.end(), [&](double v) { return v == a || v == b; });
  };
  if (within(-1.0, 1.0)) return {-1.0, 1.0};
  if (within(0.0, 1.0)) return {0.0, 1.0};
  return labels;
}

void assign_labels(Dataset& data, const std::vector<double>& raw) {
  data.class_values = class_values_for(distinct_over_ranks(data.comm, raw));
  data.n_classes = static_cast<PetscInt>(data.class_values.size());
  data.labels.resize(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i)
    data.labels[i] =
        static_cast<PetscInt>(std::lower_bound(data.class_values.begin(), data.class_values.end(), raw[i]) -
                              data.class_values.begin());
}

}  // namespace bilevel::libsvm
