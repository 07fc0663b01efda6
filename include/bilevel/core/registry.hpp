#pragma once
/// \file Name -> factory map of algorithms; the single source of names for -bilevel_type and --method.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bilevel/core/algorithm.hpp"

namespace bilevel {

class AlgorithmRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Algorithm>()>;
  struct Entry {
    std::string description;
    Factory factory;
  };
  /// Adds a method; a duplicate name throws. Not collective (call identically on every rank).
  void add(const std::string& name, const std::string& description, Factory factory);
  /// Creates the method; an unknown name throws InputError listing the registered names.
  std::unique_ptr<Algorithm> create(const std::string& name) const;
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<std::string> names() const;
  /// The method -bilevel_type defaults to (set by register_builtin_algorithms). Not collective.
  void set_default(const std::string& name) { default_ = name; }
  const std::string& default_name() const { return default_; }
  /// Registered methods whose requirements() are all in `have`, comma-separated (advice when a method
  /// needs oracles a problem lacks). Not collective.
  std::string names_requiring_at_most(Capability have) const;
  const std::map<std::string, Entry>& entries() const { return entries_; }

 private:
  std::map<std::string, Entry> entries_;
  std::string default_;
};

/// The process-wide registry, filled with the built-in methods on first use (register_builtin_algorithms).
AlgorithmRegistry& algorithm_registry();
/// Explicit registration of every built-in method (src/algorithms/register_all.cpp).
void register_builtin_algorithms(AlgorithmRegistry& registry);

}  // namespace bilevel
