#include "bilevel/petsc/options.hpp"

#include <petscviewer.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "bilevel/petsc/error.hpp"

namespace bilevel::petsc {
namespace {

std::string format_real(PetscReal v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

/// The keys every OptionsReader of the process has read (known_option_names).
std::set<std::string>& known_keys() {
  static std::set<std::string> keys;
  return keys;
}

/// Levenshtein distance (insertions, deletions, substitutions) between a and b.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

OptionsReader::OptionsReader(MPI_Comm comm, std::string prefix, std::string title)
    : comm_(comm), prefix_(std::move(prefix)), title_(std::move(title)) {
  PetscBool help = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscOptionsHasHelp(nullptr, &help));
  help_ = help;
  if (help_ && !title_.empty()) BILEVEL_PETSC_CALL(PetscPrintf(comm_, "%s:\n", title_.c_str()));
}

OptionsReader OptionsReader::sub(std::string_view sub, std::string title) const {
  OptionsReader r(comm_, prefix_ + std::string(sub), std::move(title));
  r.keys_read_ = keys_read_;
  for (const auto& [name, v] : defaults_)
    if (name.size() > sub.size() && std::string_view(name).substr(0, sub.size()) == sub)
      r.defaults_.emplace(name.substr(sub.size()), v);
  return r;
}

std::string OptionsReader::key(std::string_view name) const {
  std::string k = "-" + prefix_ + std::string(name);
  known_keys().insert(k);
  return k;
}

bool OptionsReader::given(std::string_view name) const {
  PetscBool set = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscOptionsHasName(nullptr, nullptr, key(name).c_str(), &set));
  return set || defaults_.find(name) != defaults_.end();
}

std::optional<std::string> OptionsReader::value(std::string_view name) const {
  keys_read_->insert(key(name));
  std::vector<char> buf(4096, 0);
  PetscBool set = PETSC_FALSE;
  BILEVEL_PETSC_CALL(
      PetscOptionsGetString(nullptr, nullptr, key(name).c_str(), buf.data(), buf.size(), &set));
  if (set) return std::string(buf.data());
  const auto it = defaults_.find(name);
  if (it != defaults_.end()) return it->second;
  return std::nullopt;
}

std::string OptionsReader::shown_default(std::string_view name, const std::string& code_default) const {
  const auto it = defaults_.find(name);
  return it != defaults_.end() ? it->second : code_default;
}

void OptionsReader::help_line(std::string_view name, const std::string& def, std::string_view help) const {
  if (!help_) return;
  const std::string k = key(name);
  const std::string h(help);
  BILEVEL_PETSC_CALL(PetscPrintf(comm_, "  %s <%s>: %s\n", k.c_str(), def.c_str(), h.c_str()));
}

PetscReal OptionsReader::real(std::string_view name,
                              PetscReal def,
                              std::string_view help,
                              std::optional<PetscReal> min,
                              std::optional<PetscReal> max) {
  help_line(name, shown_default(name, format_real(def)), help);
  const std::optional<std::string> given = value(name);
  if (!given) return def;
  const std::string& text = *given;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  std::string range = "a real number";
  if (min && max)
    range = "a real number in [" + format_real(*min) + ", " + format_real(*max) + "]";
  else if (min)
    range = "a real number >= " + format_real(*min);
  else if (max)
    range = "a real number <= " + format_real(*max);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || (min && v < *min) || (max && v > *max))
    throw InputError("bad value '" + text + "' for option " + key(name) + ": expected " + range);
  return v;
}

template <typename T>
std::optional<T> OptionsReader::parse_integer(std::string_view name, T lo, T hi) const {
  const std::optional<std::string> given = value(name);
  if (!given) return std::nullopt;
  const std::string& text = *given;
  const char* begin = text.data();
  const char* end = begin + text.size();
  const bool plus = begin != end && *begin == '+';  // "+5", but not "+-5"
  if (plus) ++begin;
  T v{};
  const bool digits_next =
      begin != end && (std::isdigit(static_cast<unsigned char>(*begin)) || (!plus && *begin == '-'));
  const auto [stop, ec] = std::from_chars(begin, end, v, 10);
  // std::from_chars reports a value outside T as result_out_of_range: rejected, never wrapped
  if (!digits_next || ec != std::errc() || stop != end || v < lo || v > hi)
    throw InputError("bad value '" + text + "' for option " + key(name) + ": expected an integer in [" +
                     std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

PetscInt OptionsReader::integer(std::string_view name,
                                PetscInt def,
                                std::string_view help,
                                std::optional<PetscInt> min,
                                std::optional<PetscInt> max) {
  help_line(name, shown_default(name, std::to_string(def)), help);
  const std::int64_t lo = std::max<std::int64_t>(min.value_or(PETSC_MIN_INT), PETSC_MIN_INT);
  const std::int64_t hi = std::min<std::int64_t>(max.value_or(PETSC_MAX_INT), PETSC_MAX_INT);
  const std::optional<std::int64_t> v = parse_integer<std::int64_t>(name, lo, hi);
  return v ? static_cast<PetscInt>(*v) : def;
}

std::int64_t OptionsReader::integer64(std::string_view name,
                                      std::int64_t def,
                                      std::string_view help,
                                      std::optional<std::int64_t> min,
                                      std::optional<std::int64_t> max) {
  help_line(name, shown_default(name, std::to_string(def)), help);
  const std::optional<std::int64_t> v =
      parse_integer<std::int64_t>(name,
                                  min.value_or(std::numeric_limits<std::int64_t>::min()),
                                  max.value_or(std::numeric_limits<std::int64_t>::max()));
  return v.value_or(def);
}

std::uint64_t OptionsReader::unsigned64(std::string_view name, std::uint64_t def, std::string_view help) {
  help_line(name, shown_default(name, std::to_string(def)), help);
  const std::optional<std::uint64_t> v =
      parse_integer<std::uint64_t>(name, 0, std::numeric_limits<std::uint64_t>::max());
  return v.value_or(def);
}

namespace {
std::string lowercase(std::string t) {
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  return t;
}
// PETSc's spellings (PetscOptionsStringToBool), already lowercased; a bare key is true
std::optional<bool> parse_bool(const std::string& t) {
  if (t.empty() || t == "1" || t == "true" || t == "yes" || t == "on") return true;
  if (t == "0" || t == "false" || t == "no" || t == "off") return false;
  return std::nullopt;
}
}  // namespace

bool OptionsReader::boolean(std::string_view name, bool def, std::string_view help) {
  help_line(name, shown_default(name, def ? "true" : "false"), help);
  const std::optional<std::string> given = value(name);
  if (!given) return def;
  if (const std::optional<bool> b = parse_bool(lowercase(*given))) return *b;
  throw InputError("bad value '" + *given + "' for option " + key(name) +
                   ": expected true or false (also yes/no, on/off, 1/0, in any case)");
}

std::optional<bool> OptionsReader::boolean_or_auto(std::string_view name, std::string_view help) {
  help_line(name, shown_default(name, "auto"), help);
  const std::optional<std::string> given = value(name);
  if (!given) return std::nullopt;
  const std::string t = lowercase(*given);
  if (t == "auto") return std::nullopt;
  if (const std::optional<bool> b = parse_bool(t)) return *b;
  throw InputError("bad value '" + *given + "' for option " + key(name) +
                   ": expected auto, true or false (also yes/no, on/off, 1/0, in any case)");
}

std::optional<OptionsReader::Viewer> OptionsReader::viewer(std::string_view name, std::string_view help) {
  help_line(name, "false", std::string(help) + " (ascii[:FILE[:FORMAT]]; bare: stdout)");
  const std::optional<std::string> given = value(name);
  if (!given) return std::nullopt;
  const std::optional<bool> spelled = parse_bool(lowercase(*given));
  if (spelled && !*spelled) return std::nullopt;
  Viewer v;
  if (spelled) {
    v.viewer = ViewerHandle::borrow(PETSC_VIEWER_STDOUT_(comm_));
    return v;
  }
  PetscBool set = PETSC_FALSE;
  PetscViewer raw = nullptr;
  const std::string k = key(name);
  const PetscErrorCode ierr =
      PetscOptionsGetViewer(comm_, nullptr, nullptr, k.c_str(), &raw, &v.format, &set);
  if (ierr || !set || !raw)
    throw InputError(
        "bad value '" + *given + "' for option " + k +
        ": expected a viewer TYPE[:FILE[:FORMAT[:MODE]]] (ascii, ascii:FILE, ascii::ascii_info_detail, "
        "ascii:FILE.csv:ascii_csv) or true/false");
  v.viewer = ViewerHandle(raw);
  return v;
}

std::string OptionsReader::string(std::string_view name, std::string_view def, std::string_view help) {
  help_line(name, shown_default(name, std::string(def)), help);
  const std::optional<std::string> given = value(name);
  return given ? *given : std::string(def);
}

std::string OptionsReader::choice(std::string_view name,
                                  std::string_view def,
                                  const std::vector<std::string>& choices,
                                  std::string_view help) {
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : "|") + c;
  const std::string v = string(name, def, std::string(help) + " (" + list + ")");
  for (const auto& c : choices)
    if (c == v) return v;
  throw InputError("bad value '" + v + "' for option " + key(name) + ": expected one of " + list);
}

std::vector<std::string> known_option_names() {
  return std::vector<std::string>(known_keys().begin(), known_keys().end());
}

std::vector<std::string> unused_options(std::string_view prefix) {
  PetscInt n = 0;
  char** names = nullptr;
  char** values = nullptr;
  BILEVEL_PETSC_CALL(PetscOptionsLeftGet(nullptr, &n, &names, &values));
  std::vector<std::string> out;
  for (PetscInt i = 0; i < n; ++i) {
    std::string_view name = names[i];
    if (!name.empty() && name.front() == '-') name.remove_prefix(1);  // the database stores names without it
    if (name.substr(0, prefix.size()) != prefix) continue;
    std::string key(1, '-');
    key.append(name);
    out.push_back(std::move(key));
  }
  BILEVEL_PETSC_CALL(PetscOptionsLeftRestore(nullptr, &n, &names, &values));
  std::sort(out.begin(), out.end());
  return out;
}

std::string closest_known_option(std::string_view name) {
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, name.size() / 5) + 1;
  for (const std::string& known : known_keys()) {
    if (known == name) continue;
    const std::size_t d = edit_distance(name, known);
    if (d < best_distance) {
      best_distance = d;
      best = known;
    }
  }
  return best;
}

namespace {
std::string& current_prefix() {
  static std::string prefix;
  return prefix;
}
}  // namespace

const std::string& options_prefix() {
  return current_prefix();
}
std::string prefixed(std::string_view own) {
  return current_prefix() + std::string(own);
}

ScopedOptionsPrefix::ScopedOptionsPrefix(std::string prefix) : previous_(std::move(current_prefix())) {
  current_prefix() = std::move(prefix);
}
ScopedOptionsPrefix::~ScopedOptionsPrefix() {
  current_prefix() = std::move(previous_);
}

}  // namespace bilevel::petsc
