// The user-problem API (include/bilevel/problems/callback.hpp, docs/user-problem.md): oracles with the
// minibatch argument make a stochastic user problem that minibatch methods run on; optional oracles are
// optional (no upper_value: a NaN objective, no failure after the run); a method that needs a missing oracle
// is refused before solving, naming the oracle and the methods that do not need it; monitors set as
// TaoMonitorSet are called and destroyed; -bilevel_monitor ascii:FILE:ascii_csv writes CSV rows.
//
//   g(x, y; B) = mean_{i∈B} 1/2 ||y − c − s_i 1||² + 1/2 Σ_j e^{x_j} y_j²,   s_i = ±1/2 (even/odd i)
//   f(x, y)    = 1/2 ||y − 1||²
// so over all N samples mean s_i = 0 and y*(x) = c / (1 + e^x), with x*_j = log(c_j − 1).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "bilevel/bilevel.hpp"

namespace {

constexpr PetscInt kDim = 12, kSamples = 64;

double shift(PetscInt i) {
  return i % 2 == 0 ? -0.5 : 0.5;
}

struct Recorder {
  std::vector<std::size_t> batch_sizes;  // of the lower oracles' non-full batches
  bool sorted_in_range = true;
  int full = 0;
  void see(const bilevel::Batch& b) {
    if (b.full) {
      ++full;
      return;
    }
    batch_sizes.push_back(b.indices.size());
    for (std::size_t k = 0; k < b.indices.size(); ++k)
      if (b.indices[k] < 0 || b.indices[k] >= kSamples || (k > 0 && b.indices[k] <= b.indices[k - 1]))
        sorted_in_range = false;
  }
};

/// The problem above; `with_upper_value` adds the optional f.
std::shared_ptr<bilevel::CallbackProblem> make(
    MPI_Comm comm, Vec c, Vec work, Recorder& rec, bool with_upper_value) {
  bilevel::ProblemCallbacks cb;
  cb.lower_grad_y = [c, work, &rec](Vec x, Vec y, const bilevel::Batch& batch, Vec gy) {
    rec.see(batch);
    double mean = 0;  // mean of s_i over the batch (0 over all samples)
    if (!batch.full) {
      for (PetscInt i : batch.indices) mean += shift(i);
      mean /= static_cast<double>(batch.indices.size());
    }
    BILEVEL_PETSC_CALL(VecCopy(x, work));
    BILEVEL_PETSC_CALL(VecExp(work));
    BILEVEL_PETSC_CALL(VecPointwiseMult(gy, work, y));  // e^x ∘ y
    BILEVEL_PETSC_CALL(VecAXPY(gy, 1.0, y));
    BILEVEL_PETSC_CALL(VecAXPY(gy, -1.0, c));
    BILEVEL_PETSC_CALL(VecShift(gy, -mean));  // y − c − mean s + e^x ∘ y
  };
  cb.lower_hvp = [work, &rec](Vec x, Vec, const bilevel::Batch& batch, Vec w, Vec out) {
    rec.see(batch);
    BILEVEL_PETSC_CALL(VecCopy(x, work));
    BILEVEL_PETSC_CALL(VecExp(work));
    BILEVEL_PETSC_CALL(VecShift(work, 1.0));
    BILEVEL_PETSC_CALL(VecPointwiseMult(out, work, w));  // (1 + e^x) ∘ w
  };
  cb.lower_jvp = [work, &rec](Vec x, Vec y, const bilevel::Batch& batch, Vec w, Vec out) {
    rec.see(batch);
    BILEVEL_PETSC_CALL(VecCopy(x, work));
    BILEVEL_PETSC_CALL(VecExp(work));
    BILEVEL_PETSC_CALL(VecPointwiseMult(out, work, y));
    BILEVEL_PETSC_CALL(VecPointwiseMult(out, out, w));  // e^x ∘ y ∘ w
  };
  cb.upper_grad = [](Vec, Vec y, const bilevel::Batch&, Vec gx, Vec gy) {
    if (gx) BILEVEL_PETSC_CALL(VecSet(gx, 0.0));
    if (gy) {
      BILEVEL_PETSC_CALL(VecCopy(y, gy));
      BILEVEL_PETSC_CALL(VecShift(gy, -1.0));
    }
  };
  if (with_upper_value)
    cb.upper_value = [work](Vec, Vec y, const bilevel::Batch&) {
      BILEVEL_PETSC_CALL(VecCopy(y, work));
      BILEVEL_PETSC_CALL(VecShift(work, -1.0));
      PetscReal n = 0;
      BILEVEL_PETSC_CALL(VecNorm(work, NORM_2, &n));
      return 0.5 * n * n;
    };
  auto p = std::make_shared<bilevel::CallbackProblem>(comm, kDim, kDim, cb, "stochastic_user");
  p->set_dataset_sizes({kSamples, 0});
  bilevel::ProblemHints h;
  h.lower_lipschitz = 1.0 + std::exp(2.0);
  h.upper_step = 0.05;
  p->set_hints(h);
  return p;
}

class UserProblem : public ::testing::Test {
 protected:
  void SetUp() override {
    BILEVEL_PETSC_CALL(VecCreateMPI(comm, PETSC_DECIDE, kDim, c.out()));
    work = bilevel::petsc::duplicate(c);
    PetscInt lo = 0, hi = 0;
    BILEVEL_PETSC_CALL(VecGetOwnershipRange(c, &lo, &hi));
    bilevel::petsc::WriteView w(c);
    for (PetscInt i = lo; i < hi; ++i) w[i - lo] = 3.0 + std::sin(static_cast<double>(i));
  }
  MPI_Comm comm = PETSC_COMM_WORLD;
  bilevel::petsc::VecHandle c, work;
  Recorder rec;
};

TEST_F(UserProblem, StochasticMethodPassesMinibatchesOfGlobalSampleIndicesToTheCallbacks) {
  auto p = make(comm, c, work, rec, true);
  EXPECT_TRUE(bilevel::has(p->capabilities(), bilevel::Capability::Stochastic));
  bilevel::BilevelSolver solver(comm);
  solver.set_problem(p);
  solver.set_type("stocbio");
  solver.options().max_iterations = 30;
  solver.options().batch_size = 8;
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  const bilevel::SolveReport r = solver.solve(x, y);
  EXPECT_EQ(r.reason, bilevel::ConvergedReason::ConvergedMaxIterations);
  EXPECT_TRUE(std::isfinite(r.upper_objective));
  ASSERT_FALSE(rec.batch_sizes.empty()) << "the method passed no minibatch";
  EXPECT_EQ(*std::set<std::size_t>(rec.batch_sizes.begin(), rec.batch_sizes.end()).rbegin(), 8u);
  EXPECT_TRUE(rec.sorted_in_range);
  EXPECT_EQ(r.counts.samples > 0, true);
}

TEST_F(UserProblem, OracleWithoutTheBatchCannotServeASampledProblem) {
  bilevel::ProblemCallbacks cb;
  cb.upper_grad = [](Vec, Vec, Vec, Vec) {};
  cb.lower_grad_y = [](Vec, Vec, const bilevel::Batch&, Vec) {};
  cb.lower_hvp = [](Vec, Vec, const bilevel::Batch&, Vec, Vec) {};
  cb.lower_jvp = [](Vec, Vec, const bilevel::Batch&, Vec, Vec) {};
  bilevel::CallbackProblem p(comm, 3, 3, cb);
  EXPECT_FALSE(cb.upper_grad.takes_batch());
  EXPECT_TRUE(cb.lower_hvp.takes_batch());
  try {
    p.set_dataset_sizes({10, 0});
    FAIL() << "no error";
  } catch (const bilevel::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("upper_grad"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(bilevel::has(p.capabilities(), bilevel::Capability::Stochastic));
}

TEST_F(UserProblem, WithoutUpperValueTheObjectiveIsNaNAndTheRunSucceeds) {
  auto p = make(comm, c, work, rec, false);
  bilevel::BilevelSolver solver(comm);
  solver.set_problem(p);
  solver.set_type("aidcg");
  solver.options().max_iterations = 200;
  int calls = 0, destroyed = 0;
  struct Ctx {
    int* calls;
    int* destroyed;
  };
  solver.monitor_set(
      [](const bilevel::IterationRecord&, void* ctx) -> PetscErrorCode {
        ++*static_cast<Ctx*>(ctx)->calls;
        return 0;
      },
      new Ctx{&calls, &destroyed},
      [](void** ctx) -> PetscErrorCode {
        ++*static_cast<Ctx*>(*ctx)->destroyed;
        delete static_cast<Ctx*>(*ctx);
        *ctx = nullptr;
        return 0;
      });
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  const bilevel::SolveReport r = solver.solve(x, y);
  EXPECT_EQ(r.reason, bilevel::ConvergedReason::ConvergedMaxIterations);
  EXPECT_TRUE(std::isnan(r.upper_objective));
  EXPECT_EQ(calls, 201);  // the start point (iteration 0) and 200 iterations, as TaoMonitor
  solver.monitor_cancel();
  EXPECT_EQ(destroyed, 1);
  // full batches (deterministic method): x_j → log(c_j − 1)
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(x, &lo, &hi));
  double err = 0;
  {
    bilevel::petsc::ReadView xv(x);
    for (PetscInt i = lo; i < hi; ++i)
      err = std::max(err, std::abs(xv[i - lo] - std::log(2.0 + std::sin(static_cast<double>(i)))));
  }
  MPI_Allreduce(MPI_IN_PLACE, &err, 1, MPI_DOUBLE, MPI_MAX, comm);
  EXPECT_LT(err, 1e-2);
}

TEST_F(UserProblem, MethodNeedingAMissingOracleIsRefusedBeforeSolvingWithTheAlternatives) {
  auto p = make(comm, c, work, rec, false);
  bilevel::BilevelSolver solver(comm);
  solver.set_problem(p);
  solver.set_type("bome");
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  try {
    solver.solve(x, y);
    FAIL() << "no error";
  } catch (const bilevel::InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("lower_grad_x"), std::string::npos) << m;
    EXPECT_NE(m.find("aidcg"), std::string::npos) << m;
  }
  EXPECT_EQ(rec.full + static_cast<int>(rec.batch_sizes.size()), 0) << "an oracle ran before the refusal";
}

TEST_F(UserProblem, PrefixedMonitorWritesCsvRowsThroughAViewer) {
  auto p = make(comm, c, work, rec, true);
  const std::string file = "user_problem_monitor.csv";
  BILEVEL_PETSC_CALL(
      PetscOptionsSetValue(nullptr, "-m_bilevel_monitor", ("ascii:" + file + ":ascii_csv").c_str()));
  BILEVEL_PETSC_CALL(PetscOptionsSetValue(nullptr, "-m_bilevel_max_it", "5"));
  BILEVEL_PETSC_CALL(PetscOptionsSetValue(nullptr, "-m_bilevel_final_lower_solve", "No"));
  {
    bilevel::BilevelSolver solver(comm);
    solver.set_options_prefix("m");
    solver.append_options_prefix("_");
    EXPECT_EQ(solver.options_prefix(), "m_");
    solver.set_problem(p);
    solver.set_from_options();
    EXPECT_EQ(solver.options().max_iterations, 5);
    EXPECT_FALSE(solver.options().final_lower_solve);
    auto x = p->create_upper_vec(), y = p->create_lower_vec();
    p->initial_point(x, y);
    solver.solve(x, y);
  }  // the viewer is closed with the solver
  BILEVEL_PETSC_CALL(PetscOptionsClearValue(nullptr, "-m_bilevel_monitor"));
  BILEVEL_PETSC_CALL(PetscOptionsClearValue(nullptr, "-m_bilevel_max_it"));
  BILEVEL_PETSC_CALL(PetscOptionsClearValue(nullptr, "-m_bilevel_final_lower_solve"));
  MPI_Barrier(comm);
  std::ifstream in(file);
  std::string header, line;
  std::getline(in, header);
  EXPECT_EQ(header.rfind("iteration,wall_time_s,upper_objective", 0), 0u) << header;
  int rows = 0;
  while (std::getline(in, line)) ++rows;
  EXPECT_EQ(rows, 6);  // rows 0 (the start point) to 5
  MPI_Barrier(comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) std::remove(file.c_str());
}

}  // namespace
