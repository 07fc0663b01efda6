#include "bilevel/core/tuned_settings.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bilevel/petsc/error.hpp"

namespace bilevel {
namespace fs = std::filesystem;
namespace {

/// The folder of the file this function was linked into (libbilevel.so, or the program for a static link).
fs::path own_folder() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&own_folder), &info) == 0 || !info.dli_fname) return {};
  std::error_code ec;
  const fs::path self = fs::canonical(info.dli_fname, ec);
  return ec ? fs::path() : self.parent_path();
}

/// Rank 0's text of `path` (empty when it cannot be read), broadcast. Collective.
std::string read_on_rank0(MPI_Comm comm, const std::string& path, bool& ok) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::string text;
  long long size = -1;
  if (rank == 0) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::ostringstream s;
      s << in.rdbuf();
      text = s.str();
      size = static_cast<long long>(text.size());
    }
  }
  MPI_Bcast(&size, 1, MPI_LONG_LONG, 0, comm);
  ok = size >= 0;
  if (!ok) return {};
  text.resize(static_cast<std::size_t>(size));
  MPI_Bcast(text.data(), static_cast<int>(size), MPI_CHAR, 0, comm);
  return text;
}

}  // namespace

std::string TunedSettings::as_options() const {
  std::string s;
  for (const auto& [k, v] : values) s += " -bilevel_" + k + (v.empty() ? "" : " " + v);
  return s;
}

std::vector<std::string> tuned_settings_dirs(const std::string& override_dir) {
  std::vector<fs::path> candidates;
  if (!override_dir.empty()) candidates.emplace_back(override_dir);
  if (const fs::path here = own_folder(); !here.empty())
    candidates.push_back(here.parent_path() / "share" / "bilevel" / "tuned");  // <prefix>/{lib,bin}/..
#ifdef BILEVEL_SOURCE_TUNED_DIR
  candidates.emplace_back(BILEVEL_SOURCE_TUNED_DIR);
#endif
  std::vector<std::string> out;
  for (const fs::path& c : candidates) {
    std::error_code ec;
    if (fs::is_directory(c, ec)) out.push_back(c.string());
  }
  return out;
}

TunedSettings parse_tuned_settings(const std::string& file, const std::string& text) {
  TunedSettings t;
  t.file = file;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (const auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    std::istringstream words(line);
    std::string key, value, extra;
    if (!(words >> key)) continue;
    words >> value >> extra;
    const std::string where = file + ":" + std::to_string(number) + ": ";
    if (key.rfind("-bilevel_", 0) != 0 || key.size() == 9)
      throw InputError(where + "expected '-bilevel_<name> [value]', got '" + key + "'");
    if (!extra.empty() || (!value.empty() && value[0] == '-' && value.size() > 1 && std::isalpha(value[1])))
      throw InputError(where + "one option per line: '" + line + "'");
    if (!t.values.emplace(key.substr(9), value).second) throw InputError(where + key + " is given twice");
  }
  return t;
}

std::optional<TunedSettings> load_tuned_settings(MPI_Comm comm,
                                                 std::string_view problem,
                                                 std::string_view method,
                                                 const std::string& override_dir) {
  for (const std::string& dir : tuned_settings_dirs(override_dir)) {
    const std::string path =
        (fs::path(dir) / std::string(problem) / (std::string(method) + ".opts")).string();
    bool ok = false;
    const std::string text = read_on_rank0(comm, path, ok);
    if (ok) return parse_tuned_settings(path, text);
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, TunedSettings>> list_tuned_settings(MPI_Comm comm,
                                                                       const std::string& override_dir) {
  std::vector<std::pair<std::string, TunedSettings>> out;
  const std::vector<std::string> dirs = tuned_settings_dirs(override_dir);
  if (dirs.empty()) return out;
  // Names from rank 0's listing, broadcast as one string, so every rank reads the same files in order.
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  std::string names;
  if (rank == 0) {
    std::vector<std::string> found;
    std::error_code ec;
    for (const auto& p : fs::recursive_directory_iterator(dirs.front(), ec))
      if (p.is_regular_file() && p.path().extension() == ".opts")
        found.push_back(fs::relative(p.path(), dirs.front()).replace_extension().string());
    std::sort(found.begin(), found.end());
    for (const auto& f : found) names += f + "\n";
  }
  long long size = static_cast<long long>(names.size());
  MPI_Bcast(&size, 1, MPI_LONG_LONG, 0, comm);
  names.resize(static_cast<std::size_t>(size));
  MPI_Bcast(names.data(), static_cast<int>(size), MPI_CHAR, 0, comm);
  std::istringstream in(names);
  for (std::string name; std::getline(in, name);) {
    const std::string path = (fs::path(dirs.front()) / (name + ".opts")).string();
    bool ok = false;
    const std::string text = read_on_rank0(comm, path, ok);
    if (ok) out.emplace_back(name, parse_tuned_settings(path, text));
  }
  return out;
}

}  // namespace bilevel
