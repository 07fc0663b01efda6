#pragma once
/// \file Settings tuned for a (problem, method) pair are data, not code: options files shipped with the
/// library (cluster/tuned/<problem>/<method>.opts in the sources, installed as
/// <prefix>/share/bilevel/tuned/<problem>/<method>.opts), applied by BilevelSolver::set_from_options as the
/// defaults of its options readers, so the user's options always win (benchopt keeps per-data-set
/// configurations the same way).
#include <petscsys.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bilevel/petsc/options.hpp"

namespace bilevel {

/// One tuned-settings file, parsed.
struct TunedSettings {
  std::string file;                       ///< the file it came from
  petsc::OptionsReader::Defaults values;  ///< option names after "-bilevel_" -> value as typed
  /// The settings as they would be typed: " -bilevel_k1 v1 -bilevel_k2 v2" (for -help and -bilevel_view).
  std::string as_options() const;
};

/// Folders searched for tuned settings, first match wins: `override_dir` when not empty
/// (-bilevel_tuned_dir), then share/bilevel/tuned next to the installed library (found from the library's
/// own location, so an installed copy is relocatable), then the source tree's cluster/tuned (a build tree).
/// Only folders that exist are returned. Not collective.
std::vector<std::string> tuned_settings_dirs(const std::string& override_dir = "");

/// Parses one options file of the PETSc form: one "-bilevel_<name> [value]" per line, '#' starts a comment,
/// blank lines are ignored. Any other line is an InputError naming FILE:LINE. Not collective.
TunedSettings parse_tuned_settings(const std::string& file, const std::string& text);

/// The tuned settings of `problem` for `method`: <dir>/<problem>/<method>.opts from the first folder of
/// tuned_settings_dirs(override_dir) that has it, read on rank 0 and broadcast (every rank parses the same
/// text), or nullopt when no folder has one. A file that cannot be parsed is an InputError on every rank.
/// Collective on comm.
std::optional<TunedSettings> load_tuned_settings(MPI_Comm comm,
                                                 std::string_view problem,
                                                 std::string_view method,
                                                 const std::string& override_dir = "");

/// Every tuned-settings file of the first folder that exists, as "problem/method" -> settings, for -help.
/// Collective on comm.
std::vector<std::pair<std::string, TunedSettings>> list_tuned_settings(MPI_Comm comm,
                                                                       const std::string& override_dir = "");

}  // namespace bilevel
