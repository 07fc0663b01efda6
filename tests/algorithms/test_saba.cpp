// SABA (src/algorithms/saba) and the SAGA block (blocks/saga.hpp) it shares with NSBO-SAGA.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/blocks/saga.hpp"
#include "bilevel/problems/logreg.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using seedtest::Options;
using seedtest::quad;

std::shared_ptr<bilevel::BilevelProblem> small_logreg(MPI_Comm comm) {
  const auto tr = testdata::make_global(96, 7, 2, 31), va = testdata::make_global(48, 7, 2, 32);
  return std::make_shared<bilevel::LogregProblem>(testdata::to_dataset(comm, tr, bilevel::DataFormat::Dense),
                                                  testdata::to_dataset(comm, va, bilevel::DataFormat::Dense),
                                                  std::nullopt,
                                                  bilevel::LogregOptions{});
}

struct Outcome {
  bilevel::SolveReport report;
  std::vector<double> x;
};

Outcome solve(MPI_Comm comm,
              const std::string& method,
              const std::shared_ptr<bilevel::BilevelProblem>& p,
              PetscInt iterations) {
  Options o{{"-bilevel_type", method}, {"-bilevel_max_it", std::to_string(iterations)}};
  bilevel::BilevelSolver solver(comm);
  Outcome r;
  r.report = seedtest::solve_from_initial_point(solver, p, &r.x);
  return r;
}

// ------------------------------------------------------------------------------------------------------
// The block.

TEST(Saga, SlotsPartitionTheSamplesIntoFixedMinibatches) {
  bilevel::SagaSlots slots;
  slots.setup(10, 4, 3, bilevel::SamplerStream::Lower);
  ASSERT_EQ(slots.slots(), 3);  // {0..3}, {4..7}, {8, 9}
  std::set<PetscInt> seen;
  for (int k = 0; k < 60; ++k) {
    const PetscInt s = slots.draw();
    const bilevel::Batch b = slots.batch();
    ASSERT_FALSE(b.full);
    ASSERT_EQ(b.indices.size(), s == 2 ? 2u : 4u);
    EXPECT_EQ(b.indices[0], 4 * s);
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), 3u);
  slots.setup(0, 4, 3, bilevel::SamplerStream::Lower);  // no samples: one slot, the full batch
  EXPECT_EQ(slots.slots(), 1);
  EXPECT_EQ(slots.draw(), 0);
  EXPECT_TRUE(slots.batch().full);
}

TEST(Saga, OnceEverySlotIsStoredTheDirectionIsTheFullMean) {
  // oracle of slot i: the constant vector (i + 1) c. Until every slot was seen the direction is biased; then
  // o_i − m_i + m̄ = m̄ = the mean over the slots, exactly the full-batch value, whichever slot comes.
  const PetscInt n = 5;
  bilevel::petsc::VecHandle layout;
  VecCreateMPI(PETSC_COMM_WORLD, PETSC_DECIDE, 13, layout.out());
  bilevel::SagaTable table;
  table.setup(layout, n);
  EXPECT_EQ(table.filled(), 0);
  EXPECT_EQ(table.bytes(), (n + 1) * 13 * static_cast<std::int64_t>(sizeof(PetscScalar)));
  auto fresh = bilevel::petsc::duplicate(layout);
  for (PetscInt i = 0; i < n; ++i) {
    VecSet(fresh, i + 1.0);
    table.correct(i, fresh);
  }
  EXPECT_EQ(table.filled(), n);
  for (PetscInt i : {3, 0, 4}) {
    VecSet(fresh, i + 1.0);
    table.correct(i, fresh);
    PetscReal lo = 0, hi = 0;
    VecMin(fresh, nullptr, &lo);
    VecMax(fresh, nullptr, &hi);
    EXPECT_NEAR(lo, 3.0, 1e-14);  // (1 + … + 5)/5
    EXPECT_NEAR(hi, 3.0, 1e-14);
  }
}

// ------------------------------------------------------------------------------------------------------
// The method.

TEST(Saba, OnAProblemWithoutSamplesIsSobaWithConstantSteps) {
  // one slot: every SAGA direction is the oracle itself, so the iterates are SOBA's bit for bit
  const auto saba = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(30), "saba", 40);
  const auto soba = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(30), "soba", 40);
  EXPECT_EQ(saba.x, soba.x);
}

TEST(Saba, DrivesTheTrueHypergradientDownByThreeOrdersOnQuadratic) {
  const auto r0 = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(30), "saba", 0);
  const auto r = seedtest::run_quadratic(PETSC_COMM_WORLD, quad(30), "saba", 800);
  ASSERT_TRUE(r.report.true_hypergradient_norm && r0.report.true_hypergradient_norm);
  EXPECT_LT(*r.report.true_hypergradient_norm, 1e-3 * *r0.report.true_hypergradient_norm);
}

/// The residuals of the last monitored iteration.
class LastResiduals : public bilevel::Monitor {
 public:
  void on_iteration(const bilevel::IterationRecord& r) override {
    lower = r.lower_residual;
    linear = r.linear_residual;
  }
  PetscReal lower = -1, linear = -1;
};

/// ||D_y|| and ||D_v|| of the last of `iterations` iterations of `method` at an (almost) fixed x (SGD with
/// step 2^-30), with the options in force. Collective.
std::pair<PetscReal, PetscReal> residuals_at_fixed_x(const std::string& method, PetscInt iterations) {
  Options o{{"-bilevel_type", method},
            {"-bilevel_max_it", std::to_string(iterations)},
            {"-bilevel_upper_type", "sgd"},
            {"-bilevel_upper_step", "9.313225746154785e-10"},
            {"-bilevel_final_lower_solve", "0"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  auto monitor = std::make_unique<LastResiduals>();
  LastResiduals* last = monitor.get();
  solver.add_monitor(std::move(monitor));
  seedtest::solve_from_initial_point(solver, small_logreg(PETSC_COMM_WORLD));
  return {last->lower, last->linear};
}

TEST(Saba, VarianceReductionLetsConstantStepsConvergeWhereSobaStallsAtTheNoise) {
  // At a fixed x with minibatches of 16 (6 training, 3 validation slots) and the same constant steps 1/L:
  // SABA's directions D_y (SAGA on ∇_y g) and D_v vanish as y → y*(x) and v → v*(x) (the accuracy knob is
  // the run length); SOBA's minibatch gradients ∇_y g(ξ) at y ≈ y* stay at the sampling noise.
  Options o{
      {"-bilevel_saba_batch_size", "16"}, {"-bilevel_soba_batch_size", "16"}, {"-bilevel_soba_decay", "0"}};
  std::vector<std::pair<PetscReal, PetscReal>> saba;
  for (PetscInt k : {100, 400, 1600}) saba.push_back(residuals_at_fixed_x("saba", k));
  const auto soba = residuals_at_fixed_x("soba", 1600);
  EXPECT_LT(saba[1].first, saba[0].first);
  EXPECT_LT(saba[2].first, saba[1].first);
  EXPECT_LT(saba[2].second, saba[1].second);
  EXPECT_LT(saba[2].first, 1e-3 * soba.first) << "SABA " << saba[2].first << ", SOBA " << soba.first;
}

TEST(Saba, IteratesAreTheSameOnOneRankAndOnAllRanks) {
  for (const char* variant : {"saba", "ma"}) {
    Options o{{"-bilevel_saba_variant", variant}, {"-bilevel_saba_batch_size", "16"}};
    const Outcome world = solve(PETSC_COMM_WORLD, "saba", small_logreg(PETSC_COMM_WORLD), 30);
    const Outcome self = solve(PETSC_COMM_SELF, "saba", small_logreg(PETSC_COMM_SELF), 30);
    ASSERT_EQ(world.x.size(), self.x.size());
    for (std::size_t i = 0; i < self.x.size(); ++i)
      EXPECT_NEAR(world.x[i], self.x[i], 1e-10 * (1 + std::abs(self.x[i]))) << variant << " entry " << i;
  }
}

TEST(Saba, ViewStatesTheReferenceAndTheMemoryOfItsTables) {
  Options o{{"-bilevel_type", "saba"}, {"-bilevel_max_it", "1"}, {"-bilevel_saba_batch_size", "16"}};
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  seedtest::solve_from_initial_point(solver, small_logreg(PETSC_COMM_WORLD));
  const std::string text = seedtest::solver_view_text(PETSC_COMM_WORLD, solver);
  for (const char* s :
       {"SABA", "Dagreou", "NeurIPS 2022", "constant step", "SAGA memory: 6 inner", "3 outer"})
    EXPECT_NE(text.find(s), std::string::npos) << "missing '" << s << "' in:\n" << text;
}

TEST(Saba, BadOptionValuesAreInputErrors) {
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"-bilevel_saba_variant", "svrg"},
                                                        {"-bilevel_saba_max_memory", "0"},
                                                        {"-bilevel_saba_step", "-1"}}) {
    Options o{{"-bilevel_type", "saba"}, {key, value}};
    bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
    solver.set_problem(std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, quad(10)));
    EXPECT_THROW(solver.set_from_options(), bilevel::InputError) << key << " " << value;
  }
}

}  // namespace
