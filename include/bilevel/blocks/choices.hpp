#pragma once
/// \file Options whose value is one of a few names, read into an enum: the name is compared once, when the
/// option is read; the code then switches on the enum.
#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// One allowed value of an enum option: its name in the options database and its enumerator.
template <typename E>
struct Named {
  std::string_view name;
  E value;
};

/// The name of `value` in `table` ("?" if absent). Not collective.
template <typename E, std::size_t N>
const char* name_of(E value, const std::array<Named<E>, N>& table) {
  for (const auto& c : table)
    if (c.value == value) return c.name.data();
  return "?";
}

/// Reads -<prefix><key> as one of the names of `table` (anything else is an InputError listing them) and
/// returns its enumerator; `def` is the default. Collective (as OptionsReader).
template <typename E, std::size_t N>
E read_choice(petsc::OptionsReader& opts,
              std::string_view key,
              E def,
              const std::array<Named<E>, N>& table,
              std::string_view help) {
  std::vector<std::string> names;
  for (const auto& c : table) names.emplace_back(c.name);
  const std::string got = opts.choice(key, name_of(def, table), names, help);
  for (const auto& c : table)
    if (got == c.name) return c.value;
  throw Error("read_choice: " + got + " is not in the table");  // unreachable: choice() checked it
}

}  // namespace bilevel
