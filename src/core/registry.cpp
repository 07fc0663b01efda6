#include "bilevel/core/registry.hpp"

#include "bilevel/petsc/error.hpp"

namespace bilevel {

void AlgorithmRegistry::add(const std::string& name, const std::string& description, Factory factory) {
  if (!entries_.emplace(name, Entry{description, std::move(factory)}).second)
    throw Error("algorithm '" + name + "' is already registered");
}

std::vector<std::string> AlgorithmRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

std::string AlgorithmRegistry::names_requiring_at_most(Capability have) const {
  std::string out;
  for (const auto& [name, entry] : entries_) {
    const auto need = static_cast<unsigned>(entry.factory()->requirements());
    if ((need & ~static_cast<unsigned>(have)) == 0) out += (out.empty() ? "" : ", ") + name;
  }
  return out;
}

std::unique_ptr<Algorithm> AlgorithmRegistry::create(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    std::string list;
    for (const auto& n : names()) list += (list.empty() ? "" : ", ") + n;
    throw InputError("unknown method '" + name + "' for -bilevel_type/--method: expected one of " + list);
  }
  return it->second.factory();
}

AlgorithmRegistry& algorithm_registry() {
  static AlgorithmRegistry registry = [] {
    AlgorithmRegistry r;
    register_builtin_algorithms(r);
    return r;
  }();
  return registry;
}

}  // namespace bilevel
