#include "bilevel/petsc/options.hpp"

#include <petscviewer.h>

#include <cmath>
#include <cstdlib>
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

std::string OptionsReader::key(std::string_view name) const { return "-" + prefix_ + std::string(name); }

bool OptionsReader::has(std::string_view name) const {
  PetscBool set = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscOptionsHasName(nullptr, nullptr, key(name).c_str(), &set));
  return set;
}

std::optional<std::string> OptionsReader::value(std::string_view name) const {
  keys_read_->insert(key(name));
  std::vector<char> buf(4096, 0);
  PetscBool set = PETSC_FALSE;
  BILEVEL_PETSC_CALL(PetscOptionsGetString(nullptr, nullptr, key(name).c_str(), buf.data(), buf.size(), &set));
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

PetscReal OptionsReader::real(std::string_view name, PetscReal def, std::string_view help,
                              std::optional<PetscReal> min, std::optional<PetscReal> max) {
  help_line(name, shown_default(name, format_real(def)), help);
  const std::optional<std::string> given = value(name);
  if (!given) return def;
  const std::string& text = *given;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  std::string range = "a real number";
  if (min && max) range = "a real number in [" + format_real(*min) + ", " + format_real(*max) + "]";
  else if (min) range = "a real number >= " + format_real(*min);
  else if (max) range = "a real number <= " + format_real(*max);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || (min && v < *min) || (max && v > *max))
    throw InputError("bad value '" + text + "' for option " + key(name) + ": expected " + range);
  return v;
}

PetscInt OptionsReader::integer(std::string_view name, PetscInt def, std::string_view help,
                                std::optional<PetscInt> min, std::optional<PetscInt> max) {
  help_line(name, shown_default(name, std::to_string(def)), help);
  const std::optional<std::string> given = value(name);
  if (!given) return def;
  const std::string& text = *given;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  std::string range = "an integer";
  if (min && max) range = "an integer in [" + std::to_string(*min) + ", " + std::to_string(*max) + "]";
  else if (min) range = "an integer >= " + std::to_string(*min);
  else if (max) range = "an integer <= " + std::to_string(*max);
  if (text.empty() || *end != '\0' || (min && v < *min) || (max && v > *max))
    throw InputError("bad value '" + text + "' for option " + key(name) + ": expected " + range);
  return static_cast<PetscInt>(v);
}

bool OptionsReader::boolean(std::string_view name, bool def, std::string_view help) {
  help_line(name, shown_default(name, def ? "true" : "false"), help);
  const std::optional<std::string> given = value(name);
  if (!given) return def;
  const std::string& t = *given;
  if (t.empty() || t == "1" || t == "true" || t == "yes" || t == "on" || t == "TRUE") return true;
  if (t == "0" || t == "false" || t == "no" || t == "off" || t == "FALSE") return false;
  throw InputError("bad value '" + t + "' for option " + key(name) + ": expected true or false");
}

std::string OptionsReader::string(std::string_view name, std::string_view def, std::string_view help) {
  help_line(name, shown_default(name, std::string(def)), help);
  const std::optional<std::string> given = value(name);
  return given ? *given : std::string(def);
}

std::string OptionsReader::choice(std::string_view name, std::string_view def,
                                  const std::vector<std::string>& choices, std::string_view help) {
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : "|") + c;
  const std::string v = string(name, def, std::string(help) + " (" + list + ")");
  for (const auto& c : choices)
    if (c == v) return v;
  throw InputError("bad value '" + v + "' for option " + key(name) + ": expected one of " + list);
}

}  // namespace bilevel::petsc
