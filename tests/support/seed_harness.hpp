#pragma once
// Helpers shared by the seed-method suites (test_lancbio, test_subbio, test_pzobo, test_bome): runs of a
// registered method through BilevelSolver on the closed-form quadratic, with PETSc options set for the
// run's duration, the final x gathered on every rank, and a monitor that recovers the method's
// hypergradient estimate from two consecutive SGD iterates.
#include <petscvec.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/bilevel.hpp"

namespace seedtest {

/// Sets PETSc options for its lifetime (cleared in the destructor). Not collective.
class Options {
 public:
  Options(std::initializer_list<std::pair<std::string, std::string>> kv) {
    for (const auto& [k, v] : kv) set(k, v);
  }
  explicit Options(const std::vector<std::pair<std::string, std::string>>& kv) {
    for (const auto& [k, v] : kv) set(k, v);
  }
  Options(const Options&) = delete;
  Options& operator=(const Options&) = delete;
  ~Options() {
    for (const auto& k : keys_) PetscOptionsClearValue(nullptr, k.c_str());
  }
  void set(const std::string& key, const std::string& value) {
    PetscOptionsSetValue(nullptr, key.c_str(), value.empty() ? nullptr : value.c_str());  // "": a bare flag
    keys_.push_back(key);
  }

 private:
  std::vector<std::string> keys_;
};

/// ||v||_2. Collective.
inline PetscReal norm(Vec v) {
  PetscReal n = 0;
  VecNorm(v, NORM_2, &n);
  return n;
}

/// ||a − b|| / ||b||. Collective.
inline PetscReal relative_error(Vec a, Vec b) {
  bilevel::petsc::VecHandle d = bilevel::petsc::duplicate(a);
  VecWAXPY(d, -1.0, b, a);
  return norm(d) / norm(b);
}

/// The quadratic with a count of the passes over the data: lower_hvp_multi calls and single products.
class CountingQuadratic : public bilevel::QuadraticProblem {
 public:
  using QuadraticProblem::QuadraticProblem;
  int multi_calls = 0, single_calls = 0;

 protected:
  void lower_hvp_impl(Vec x, Vec y, const bilevel::Batch& b, Vec w, Vec out) override {
    ++single_calls;
    QuadraticProblem::lower_hvp_impl(x, y, b, w, out);
  }
  void lower_hvp_multi_impl(
      Vec x, Vec y, const bilevel::Batch& b, std::span<const Vec> w, std::span<const Vec> out) override {
    ++multi_calls;
    for (std::size_t i = 0; i < w.size(); ++i) QuadraticProblem::lower_hvp_impl(x, y, b, w[i], out[i]);
  }
};

inline bilevel::QuadraticOptions quad(PetscReal kappa, PetscInt dim_lower = 61, PetscInt dim_upper = 7) {
  bilevel::QuadraticOptions o;
  o.dim_lower = dim_lower;
  o.dim_upper = dim_upper;
  o.condition = kappa;
  o.seed = 5;
  return o;
}

/// The whole of v on every rank. Collective.
inline std::vector<PetscReal> gather(Vec v) {
  Vec all = nullptr;
  VecScatter sc = nullptr;
  VecScatterCreateToAll(v, &sc, &all);
  VecScatterBegin(sc, v, all, INSERT_VALUES, SCATTER_FORWARD);
  VecScatterEnd(sc, v, all, INSERT_VALUES, SCATTER_FORWARD);
  const PetscScalar* a = nullptr;
  PetscInt n = 0;
  VecGetSize(all, &n);
  VecGetArrayRead(all, &a);
  std::vector<PetscReal> out(a, a + n);
  VecRestoreArrayRead(all, &a);
  VecScatterDestroy(&sc);
  VecDestroy(&all);
  return out;
}

/// Largest relative difference between two gathered iterates.
inline PetscReal max_relative_difference(const std::vector<PetscReal>& a, const std::vector<PetscReal>& b) {
  PetscReal d = a.size() == b.size() ? 0 : INFINITY;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    d = std::max(d, std::abs(a[i] - b[i]) / (1 + std::abs(b[i])));
  return d;
}

struct Run {
  bilevel::SolveReport report;
  std::vector<PetscReal> x;  ///< final x, on every rank
};

/// Sets `solver` up on `p` with the options currently set and solves once from p's initial point; the final
/// x, gathered, goes to *x_out when given. Collective on the solver's communicator.
inline bilevel::SolveReport solve_from_initial_point(bilevel::BilevelSolver& solver,
                                                     const std::shared_ptr<bilevel::BilevelProblem>& p,
                                                     std::vector<PetscReal>* x_out = nullptr) {
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  const bilevel::SolveReport report = solver.solve(x, y);
  if (x_out) *x_out = gather(x);
  return report;
}

/// Runs `method` for `iterations` outer iterations on `p` on `comm`, from the problem's initial point, with
/// the options currently set. Collective on comm.
inline Run run_method(MPI_Comm comm,
                      std::shared_ptr<bilevel::BilevelProblem> p,
                      const std::string& method,
                      PetscInt iterations) {
  Options o{{"-bilevel_type", method}, {"-bilevel_max_it", std::to_string(iterations)}};
  bilevel::BilevelSolver solver(comm);
  Run r;
  r.report = solve_from_initial_point(solver, p, &r.x);
  return r;
}

/// run_method on the quadratic `q`. Collective on comm.
inline Run run_quadratic(MPI_Comm comm,
                         const bilevel::QuadraticOptions& q,
                         const std::string& method,
                         PetscInt iterations) {
  return run_method(comm, std::make_shared<bilevel::QuadraticProblem>(comm, q), method, iterations);
}

/// What solver.view() prints, read back on every rank through a file in the temporary directory (made
/// by rank 0, removed afterwards; PetscViewerASCIIPrintf needs an ASCII viewer). Collective on comm.
inline std::string solver_view_text(MPI_Comm comm, const bilevel::BilevelSolver& solver) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  char path[4096] = {0};
  if (rank == 0) {
    const std::string pattern = (std::filesystem::temp_directory_path() / "bilevel-view-XXXXXX").string();
    std::snprintf(path, sizeof path, "%s", pattern.c_str());
    const int fd = mkstemp(path);
    if (fd >= 0) close(fd);
  }
  MPI_Bcast(path, sizeof path, MPI_CHAR, 0, comm);
  PetscViewer viewer = nullptr;
  PetscViewerASCIIOpen(comm, path, &viewer);
  solver.view(viewer);
  PetscViewerDestroy(&viewer);
  MPI_Barrier(comm);
  std::string text;
  if (FILE* f = std::fopen(path, "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, f)) text += buf;
    std::fclose(f);
  }
  MPI_Barrier(comm);
  if (rank == 0) std::remove(path);
  return text;
}

/// What -bilevel_view prints after a one-iteration solve of `method` on the quadratic (settings resolved by
/// setup). Collective on comm.
inline std::string view_text(MPI_Comm comm, const bilevel::QuadraticOptions& q, const std::string& method) {
  Options o{{"-bilevel_type", method}, {"-bilevel_max_it", "1"}};
  bilevel::BilevelSolver solver(comm);
  solve_from_initial_point(solver, std::make_shared<bilevel::QuadraticProblem>(comm, q));
  return solver_view_text(comm, solver);
}

/// Relative gap (F(x) − F*)/max(1, |F*|) of a finished run on a closed-form problem.
inline PetscReal relative_gap(const bilevel::SolveReport& r) {
  return (r.upper_objective - *r.optimal_upper_objective) /
         std::max<PetscReal>(1, std::abs(*r.optimal_upper_objective));
}

/// With the upper stepper set to plain SGD of step s, the direction the method used at iteration k is
/// h_k = (x_{k-1} − x_k)/s; this monitor compares it with the closed-form ∇F(x_{k-1}) after every
/// iteration. s is a power of two, so s h is exact and x − s h loses at most ulp(x)/s. Collective.
class EstimateProbe : public bilevel::Monitor {
 public:
  EstimateProbe(bilevel::QuadraticProblem& p, Vec x, PetscReal step)
      : p_(p),
        x_(x),
        step_(step),
        prev_(bilevel::petsc::duplicate(x)),
        exact_(bilevel::petsc::duplicate(x)),
        h_(bilevel::petsc::duplicate(x)) {
    VecCopy(x, prev_);
  }
  void on_iteration(const bilevel::IterationRecord& r) override {
    if (r.iteration == 0) return;           // the start point's row: no step yet
    p_.exact_hypergradient(prev_, exact_);  // ∇F(x_{k-1})
    VecWAXPY(h_, -1.0, x_, prev_);          // s h_k = x_{k-1} − x_k
    VecScale(h_, 1.0 / step_);
    VecAXPY(h_, -1.0, exact_);
    PetscReal err = 0, ref = 0;
    VecNorm(h_, NORM_2, &err);
    VecNorm(exact_, NORM_2, &ref);
    errors_.push_back(err / ref);
    VecCopy(x_, prev_);
  }
  const std::vector<PetscReal>& errors() const { return errors_; }

 private:
  bilevel::QuadraticProblem& p_;
  Vec x_;
  PetscReal step_;
  bilevel::petsc::VecHandle prev_, exact_, h_;
  std::vector<PetscReal> errors_;
};

/// Runs `method` for `iterations` iterations at an (almost) fixed x: SGD with the tiny step 2^-26, y
/// started at y*(x_0). Returns the relative error of the hypergradient estimate at every iteration.
/// Collective on comm.
inline std::vector<PetscReal> estimate_errors(MPI_Comm comm,
                                              const bilevel::QuadraticOptions& q,
                                              const std::string& method,
                                              PetscInt iterations) {
  const PetscReal step = std::ldexp(1.0, -26);
  Options o{{"-bilevel_type", method},
            {"-bilevel_max_it", std::to_string(iterations)},
            {"-bilevel_upper_type", "sgd"},
            {"-bilevel_upper_step", "1.4901161193847656e-08"},
            {"-bilevel_final_lower_solve", "0"}};
  auto p = std::make_shared<bilevel::QuadraticProblem>(comm, q);
  bilevel::BilevelSolver solver(comm);
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  p->exact_lower_solution(x, y);
  auto probe = std::make_unique<EstimateProbe>(*p, x, step);
  EstimateProbe* view = probe.get();
  solver.add_monitor(std::move(probe));
  solver.solve(x, y);
  return view->errors();
}

}  // namespace seedtest

#if __has_include("bilevel/problems/logreg.hpp") && __has_include("problems/synthetic.hpp")
#include "bilevel/problems/logreg.hpp"
#include "problems/synthetic.hpp"
#define SEEDTEST_HAVE_LOGREG 1

namespace seedtest {

/// F(x) = f(x, y*(x)) (validation log-loss with the lower level solved accurately) at the initial point and
/// after `iterations` of `method` on a small synthetic logreg (240 x 12 training, 120 x 12 validation,
/// sparse rows split over comm). Limit of this problem: with the default Adam step 0.2 every method
/// (aidcg included) first lowers F, then drives the regularisers e^x towards 0 after ~20 iterations,
/// where the nearly unregularised fit overfits and F explodes; the suites use 10 iterations.
/// Collective on comm.
inline std::pair<PetscReal, PetscReal> logreg_losses(MPI_Comm comm,
                                                     const std::string& method,
                                                     PetscInt iterations) {
  const auto tr = testdata::make_global(240, 12, 2, 11), va = testdata::make_global(120, 12, 2, 12);
  PetscReal out[2] = {0, 0};
  for (int run = 0; run < 2; ++run) {
    Options o{{"-bilevel_type", method}, {"-bilevel_max_it", std::to_string(run == 0 ? 0 : iterations)}};
    auto p =
        std::make_shared<bilevel::LogregProblem>(testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
                                                 testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
                                                 std::nullopt,
                                                 bilevel::LogregOptions{});
    bilevel::BilevelSolver solver(comm);
    solver.set_problem(p);
    solver.set_from_options();
    auto x = p->create_upper_vec(), y = p->create_lower_vec();
    p->initial_point(x, y);
    out[run] = solver.solve(x, y).upper_objective;
  }
  return {out[0], out[1]};
}

/// The text of -bilevel_view after 2 iterations with options `kv` (which name the method) on a small
/// synthetic logreg (300 x 7 training, 60 x 7 validation, sparse rows split over comm; it offers M and
/// minibatches), tuned settings off. Collective on comm.
inline std::string logreg_view_text(MPI_Comm comm, std::vector<std::pair<std::string, std::string>> kv) {
  const auto tr = testdata::make_global(300, 7, 2, 41), va = testdata::make_global(60, 7, 2, 42);
  auto p =
      std::make_shared<bilevel::LogregProblem>(testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
                                               testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
                                               std::nullopt,
                                               bilevel::LogregOptions{});
  kv.insert(kv.end(),
            {{"-bilevel_max_it", "2"}, {"-bilevel_final_lower_solve", "0"}, {"-bilevel_tuned", "false"}});
  Options o(kv);
  bilevel::BilevelSolver solver(comm);
  solve_from_initial_point(solver, p);
  return solver_view_text(comm, solver);
}

/// Expects `text` to contain each of `parts`; a failure names the missing part and shows the text. Not
/// collective.
inline void expect_contains(const std::string& text, std::initializer_list<const char*> parts) {
  for (const char* part : parts)
    EXPECT_NE(text.find(part), std::string::npos) << "missing '" << part << "' in:\n" << text;
}

/// The -bilevel_view texts of `method` on that logreg with a full lower batch, with minibatches of 64 rows,
/// and with minibatches of 64 and the option `-key value` given (a default chosen by batch size, and the
/// user's value winning over it). Collective on comm.
struct BatchDefaultViews {
  std::string full, mini, given;
};
inline BatchDefaultViews batch_default_views(MPI_Comm comm,
                                             const std::string& method,
                                             const std::string& key,
                                             const std::string& value) {
  return {logreg_view_text(comm, {{"-bilevel_type", method}}),
          logreg_view_text(comm, {{"-bilevel_type", method}, {"-bilevel_batch_size", "64"}}),
          logreg_view_text(comm, {{"-bilevel_type", method}, {"-bilevel_batch_size", "64"}, {key, value}})};
}

}  // namespace seedtest
#endif
