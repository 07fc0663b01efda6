// Tuned settings are data: an options file per (problem, method), applied as defaults the user overrides.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "bilevel/bilevel.hpp"

namespace {
namespace fs = std::filesystem;

/// A folder made on rank 0 and removed at the end, its path known on every rank. Collective.
class TempDir {
 public:
  explicit TempDir(MPI_Comm comm) : comm_(comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    char path[4096] = {0};
    if (rank == 0) {
      std::snprintf(path, sizeof path, "%s", (fs::temp_directory_path() / "bilevel-tuned-XXXXXX").c_str());
      if (!mkdtemp(path)) path[0] = '\0';
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, comm);
    path_ = path;
  }
  ~TempDir() {
    MPI_Barrier(comm_);
    int rank = 0;
    MPI_Comm_rank(comm_, &rank);
    if (rank == 0) fs::remove_all(path_);
  }
  /// Writes `text` to path()/rel on rank 0. Collective.
  void write(const std::string& rel, const std::string& text) const {
    int rank = 0;
    MPI_Comm_rank(comm_, &rank);
    if (rank == 0) {
      fs::create_directories((fs::path(path_) / rel).parent_path());
      std::ofstream(fs::path(path_) / rel) << text;
    }
    MPI_Barrier(comm_);
  }
  const std::string& path() const { return path_; }

 private:
  MPI_Comm comm_;
  std::string path_;
};

/// Sets PETSc options for its lifetime. Not collective.
class Options {
 public:
  Options(std::initializer_list<std::pair<std::string, std::string>> kv) {
    for (const auto& [k, v] : kv) set(k, v);
  }
  ~Options() {
    for (const auto& k : keys_) PetscOptionsClearValue(nullptr, k.c_str());
  }
  void set(const std::string& k, const std::string& v) {
    PetscOptionsSetValue(nullptr, k.c_str(), v.empty() ? nullptr : v.c_str());
    keys_.push_back(k);
  }

 private:
  std::vector<std::string> keys_;
};

std::shared_ptr<bilevel::QuadraticProblem> small_quadratic() {
  bilevel::QuadraticOptions o;
  o.dim_lower = 30;
  o.dim_upper = 5;
  o.condition = 10;
  return std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, o);
}

/// What solver.view() prints, on every rank. Collective.
std::string view_text(const bilevel::BilevelSolver& solver, const TempDir& dir) {
  const std::string path = dir.path() + "/view.txt";
  PetscViewer viewer = nullptr;
  PetscViewerASCIIOpen(PETSC_COMM_WORLD, path.c_str(), &viewer);
  solver.view(viewer);
  PetscViewerDestroy(&viewer);
  MPI_Barrier(PETSC_COMM_WORLD);
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(TunedSettings, ParsesOneOptionPerLineWithComments) {
  const bilevel::TunedSettings t = bilevel::parse_tuned_settings(
      "f.opts",
      "# a comment\n\n-bilevel_max_it 7   # trailing comment\n-bilevel_pzobo_precondition\n"
      "-bilevel_upper_step -0.5\n");
  ASSERT_EQ(t.values.size(), 3u);
  EXPECT_EQ(t.values.at("max_it"), "7");
  EXPECT_EQ(t.values.at("pzobo_precondition"), "");
  EXPECT_EQ(t.values.at("upper_step"), "-0.5");
  EXPECT_EQ(t.as_options(), " -bilevel_max_it 7 -bilevel_pzobo_precondition -bilevel_upper_step -0.5");
}

TEST(TunedSettings, ABadLineIsAnInputErrorNamingFileAndLine) {
  for (const char* text : {"-bilevel_max_it 7\nmax_it 3\n",
                           "-bilevel_a 1 -bilevel_b 2\n",
                           "-ksp_rtol 1\n",
                           "-bilevel_max_it 1\n-bilevel_max_it 2\n"}) {
    try {
      bilevel::parse_tuned_settings("dir/f.opts", text);
      FAIL() << "no exception for: " << text;
    } catch (const bilevel::InputError& e) {
      EXPECT_NE(std::string(e.what()).find("dir/f.opts:"), std::string::npos) << e.what();
    }
  }
}

/// Solves the small quadratic from its initial point with the options set for the call (on top of the tuned
/// folder `dir`); returns the iterations and -bilevel_view's text. Collective.
std::pair<std::int64_t, std::string> solve_small_quadratic(
    const TempDir& dir, std::initializer_list<std::pair<std::string, std::string>> options) {
  Options o{{"-bilevel_tuned_dir", dir.path()}};
  for (const auto& [k, v] : options) o.set(k, v);
  auto problem = small_quadratic();
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(problem);
  solver.set_from_options();
  auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
  problem->initial_point(x, y);
  const bilevel::SolveReport r = solver.solve(x, y);
  return {r.outer_iterations, view_text(solver, dir)};
}

// The file of (problem, method) gives the defaults of the solver, the stepper and the method; -bilevel_view
// names the file; the user's options win; -bilevel_tuned false turns the file off.
TEST(TunedSettings, TheProblemsFileGivesDefaultsAndTheUsersOptionsWin) {
  TempDir dir(PETSC_COMM_WORLD);
  dir.write("quadratic/aidcg.opts", "-bilevel_max_it 3\n-bilevel_upper_step 0.25\n");
  const auto [tuned_its, tuned_view] = solve_small_quadratic(dir, {{"-bilevel_type", "aidcg"}});
  EXPECT_EQ(tuned_its, 3);
  EXPECT_NE(tuned_view.find("step 0.25"), std::string::npos) << tuned_view;
  EXPECT_NE(tuned_view.find("quadratic/aidcg.opts): -bilevel_max_it 3 -bilevel_upper_step 0.25"),
            std::string::npos)
      << tuned_view;
  const auto [user_its, user_view] = solve_small_quadratic(
      dir, {{"-bilevel_type", "aidcg"}, {"-bilevel_max_it", "2"}, {"-bilevel_upper_step", "0.125"}});
  EXPECT_EQ(user_its, 2);
  EXPECT_NE(user_view.find("step 0.125"), std::string::npos) << user_view;
  const auto [off_its, off_view] =
      solve_small_quadratic(dir, {{"-bilevel_type", "aidcg"}, {"-bilevel_tuned", "false"}});
  EXPECT_EQ(off_its, 100);  // the solver's own default
  EXPECT_EQ(off_view.find("defaults tuned"), std::string::npos) << off_view;
}

// A tuned value counts as given: where a method's default is a rule applied unless the option is given
// (bome's normalize: on only in the metric H^-1 by CG, so off on the quadratic), the tuned value replaces
// the rule as the user's value would.
TEST(TunedSettings, ATunedValueReplacesARuleBasedDefaultAsAUsersValueWould) {
  TempDir dir(PETSC_COMM_WORLD);
  dir.write("quadratic/bome.opts", "-bilevel_bome_normalize true\n");
  auto view = [&](const char* tuned) {
    return solve_small_quadratic(
               dir, {{"-bilevel_type", "bome"}, {"-bilevel_max_it", "1"}, {"-bilevel_tuned", tuned}})
        .second;
  };
  const std::string tuned = view("true"), rule = view("false");
  EXPECT_NE(tuned.find("/(1+lambda)"), std::string::npos) << tuned;
  EXPECT_EQ(rule.find("/(1+lambda)"), std::string::npos) << rule;
}

TEST(TunedSettings, AKeyNoReaderAsksForIsAnErrorNamingTheFile) {
  TempDir dir(PETSC_COMM_WORLD);
  dir.write("quadratic/aidcg.opts", "-bilevel_upper_stpe 0.25\n");
  Options o{{"-bilevel_tuned_dir", dir.path()}, {"-bilevel_type", "aidcg"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(small_quadratic());
  try {
    solver.set_from_options();
    FAIL() << "no exception";
  } catch (const bilevel::InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("quadratic/aidcg.opts"), std::string::npos) << m;
    EXPECT_NE(m.find("-bilevel_upper_stpe"), std::string::npos) << m;
  }
}

// Every file the project ships parses, and each of its keys is an option of the solver, the stepper or its
// method (checked on the quadratic: the keys do not depend on the problem).
TEST(TunedSettings, EveryShippedFileHoldsOnlyOptionsOfItsMethod) {
  const auto shipped = bilevel::list_tuned_settings(PETSC_COMM_WORLD);
  ASSERT_FALSE(shipped.empty()) << "no tuned settings found (cluster/tuned)";
  for (const auto& [name, settings] : shipped) {
    const std::string method = fs::path(name).filename().string();
    TempDir dir(PETSC_COMM_WORLD);
    dir.write("quadratic/" + method + ".opts", [&] {
      std::string text;
      for (const auto& [k, v] : settings.values) text += "-bilevel_" + k + " " + v + "\n";
      return text;
    }());
    Options o{{"-bilevel_tuned_dir", dir.path()}, {"-bilevel_type", method}};
    bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
    solver.set_problem(small_quadratic());
    EXPECT_NO_THROW(solver.set_from_options()) << name;
  }
}

}  // namespace
