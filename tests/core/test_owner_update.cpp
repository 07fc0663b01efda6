// The coordinator decides, the owners compute (issue 13, item 5): the upper update computed by the owners
// of x's entries gives the iterates of a serial reference computation of the same rule, and the same
// iterates at every rank count (x spread over the first 1, 2, ... ranks of the run, compared bit for bit);
// the optimizer state lives in x's layout, never whole on rank 0. And a solve reports the memory and the
// coordinator's share in its summary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bilevel/bilevel.hpp"
#include "bilevel/petsc/memory.hpp"
#include "problems/synthetic.hpp"
#include "support/seed_harness.hpp"

namespace {

using bilevel::UpperStepperType;

constexpr PetscInt kN = 1001;
constexpr int kSteps = 25;

/// The direction of entry i at step k: varied signs and scales, no pattern the update could exploit.
double direction(PetscInt i, int k) {
  return std::sin(0.37 * static_cast<double>(i) + 1.3 * k) * (1 + i % 7);
}

double start(PetscInt i) {
  return 0.01 * static_cast<double>(i % 13) - 0.05;
}

struct Rule {
  UpperStepperType type;
  PetscReal step, decay, lb, ub;
};

/// The rule written out serially over all entries (upper_stepper.hpp: SGD, heavy ball, Adam of Kingma & Ba
/// 2015 Alg. 1, then the box).
std::vector<double> serial_reference(const Rule& r) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  std::vector<double> x(kN), m(kN, 0.0), s(kN, 0.0);
  for (PetscInt i = 0; i < kN; ++i) x[static_cast<std::size_t>(i)] = std::clamp(start(i), r.lb, r.ub);
  for (int k = 0; k < kSteps; ++k) {
    const double lr = r.step / std::pow(static_cast<double>(k + 1), r.decay);
    const double c1 = 1 - std::pow(b1, static_cast<double>(k + 1)),
                 c2 = 1 - std::pow(b2, static_cast<double>(k + 1));
    for (PetscInt i = 0; i < kN; ++i) {
      const auto j = static_cast<std::size_t>(i);
      const double d = direction(i, k);
      double delta = 0;
      if (r.type == UpperStepperType::Sgd) {
        delta = lr * d;
      } else if (r.type == UpperStepperType::Momentum) {
        m[j] = b1 * m[j] + d;
        delta = lr * m[j];
      } else {
        m[j] = b1 * m[j] + (1 - b1) * d;
        s[j] = b2 * s[j] + (1 - b2) * d * d;
        delta = lr * (m[j] / c1) / (std::sqrt(s[j] / c2) + eps);
      }
      x[j] = std::clamp(x[j] - delta, r.lb, r.ub);
    }
  }
  return x;
}

/// kSteps owner-computed steps on a communicator; x gathered at the end (on the members). `owned` gets the
/// largest number of entries one rank held. Collective on comm.
std::vector<double> owner_computed(MPI_Comm comm, const Rule& r, PetscInt* owned) {
  bilevel::petsc::VecHandle x, d;
  VecCreateMPI(comm, PETSC_DECIDE, kN, x.out());
  VecDuplicate(x, d.out());
  testdata::fill(x, start);
  bilevel::ProblemHints h;
  h.upper_stepper = r.type;
  h.upper_step = r.step;
  h.x_lower_bound = r.lb;
  h.x_upper_bound = r.ub;
  bilevel::UpperStepper stepper(h);
  stepper.options().decay = r.decay;
  stepper.project(x);
  stepper.setup(x);
  for (int k = 0; k < kSteps; ++k) {
    testdata::fill(d, [k](PetscInt i) { return direction(i, k); });
    stepper.step(x, d);
  }
  PetscInt local = 0;
  VecGetLocalSize(x, &local);
  MPI_Allreduce(&local, owned, 1, MPIU_INT, MPI_MAX, comm);
  return testdata::gather(x);
}

const Rule kRules[] = {{UpperStepperType::Sgd, 0.05, 0.5, -0.3, 0.25},
                       {UpperStepperType::Momentum, 0.02, 0.0, PETSC_NINFINITY, PETSC_INFINITY},
                       {UpperStepperType::Adam, 0.01, 0.0, -0.12, 0.1}};

TEST(OwnerComputedUpdate, GivesTheIteratesOfTheSerialReference) {
  int size = 1;
  MPI_Comm_size(PETSC_COMM_WORLD, &size);
  for (const Rule& r : kRules) {
    PetscInt owned = 0;
    const std::vector<double> x = owner_computed(PETSC_COMM_WORLD, r, &owned);
    const std::vector<double> ref = serial_reference(r);
    // the path under test: x split over the ranks, each updating its part
    EXPECT_EQ(owned, (kN + size - 1) / size);
    double worst = 0, moved = 0;
    for (PetscInt i = 0; i < kN; ++i) {
      const auto j = static_cast<std::size_t>(i);
      worst = std::max(worst, std::abs(x[j] - ref[j]));
      moved = std::max(moved, std::abs(x[j] - std::clamp(start(i), r.lb, r.ub)));
    }
    EXPECT_LE(worst, 1e-14) << "rule " << static_cast<int>(r.type);
    EXPECT_GT(moved, 1e-3) << "rule " << static_cast<int>(r.type);  // the steps did something
  }
}

TEST(OwnerComputedUpdate, GivesTheSameIteratesAtEveryRankCount) {
  int size = 1, rank = 0;
  MPI_Comm_size(PETSC_COMM_WORLD, &size);
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  for (const Rule& r : kRules) {
    std::vector<std::vector<double>> results;  // on rank 0: at 1, 2, ..., size ranks
    for (int n = 1; n <= size; ++n) {
      MPI_Comm sub = MPI_COMM_NULL;
      MPI_Comm_split(PETSC_COMM_WORLD, rank < n ? 0 : MPI_UNDEFINED, rank, &sub);
      if (sub != MPI_COMM_NULL) {
        PetscInt owned = 0;
        std::vector<double> x = owner_computed(sub, r, &owned);
        EXPECT_EQ(owned, (kN + n - 1) / n);
        if (rank == 0) results.push_back(std::move(x));
        MPI_Comm_free(&sub);
      }
    }
    if (rank != 0) continue;
    ASSERT_EQ(results.size(), static_cast<std::size_t>(size));
    for (int n = 2; n <= size; ++n)
      for (PetscInt i = 0; i < kN; ++i)
        ASSERT_EQ(results[static_cast<std::size_t>(n - 1)][static_cast<std::size_t>(i)],
                  results[0][static_cast<std::size_t>(i)])
            << "entry " << i << " at " << n << " ranks, rule " << static_cast<int>(r.type);
  }
}

TEST(OwnerComputedUpdate, ASolveReportsMemoryAndTheCoordinatorShare) {
  seedtest::Options opts{{"-bilevel_max_it", "5"}, {"-bilevel_final_lower_solve", "false"}};
  bilevel::QuadraticOptions q;
  q.dim_lower = 40;
  q.dim_upper = 9;
  auto problem = std::make_shared<bilevel::QuadraticProblem>(PETSC_COMM_WORLD, q);
  bilevel::BilevelSolver solver(PETSC_COMM_WORLD);
  solver.set_problem(problem);
  solver.set_from_options();
  auto x = problem->create_upper_vec(), y = problem->create_lower_vec();
  problem->initial_point(x, y);
  // Resident memory before the solve is a lower bound of the peak during it; memory read after
  // the solve is not (the runtime may map pages after the report was taken).
  const std::int64_t before = bilevel::petsc::current_rss_bytes();
  const bilevel::SolveReport report = solver.solve(x, y);

  ASSERT_EQ(report.outer_iterations, 5);
  EXPECT_GE(report.peak_rss_bytes, before);  // the max over ranks of the peak
  EXPECT_GT(report.peak_rss_bytes, 1 << 20);
  EXPECT_EQ(report.data_bytes_per_rank, 0);  // no data set
  EXPECT_GT(report.coordinator_fraction, 0.0);
  EXPECT_LT(report.coordinator_fraction, 1.0);
  const std::string json = bilevel::summary_json(report, {});
  for (const char* key : {"\"peak_rss_bytes\"", "\"data_bytes_per_rank\"", "\"coordinator_fraction\""})
    EXPECT_NE(json.find(key), std::string::npos) << key;
}

TEST(MatrixStorage, CountsValuesIndicesAndRowOffsetsOfAnAijMatrix) {
  bilevel::petsc::MatHandle a;
  MatCreateSeqAIJ(PETSC_COMM_SELF, 4, 6, 2, nullptr, a.out());
  for (PetscInt i = 0; i < 4; ++i) {
    MatSetValue(a, i, i, 1.0, INSERT_VALUES);
    MatSetValue(a, i, i + 2, 2.0, INSERT_VALUES);
  }
  MatAssemblyBegin(a, MAT_FINAL_ASSEMBLY);
  MatAssemblyEnd(a, MAT_FINAL_ASSEMBLY);
  // 8 nonzeros: 8 (value + index) + 5 row offsets
  EXPECT_EQ(bilevel::petsc::matrix_storage_bytes(a),
            8 * static_cast<std::int64_t>(sizeof(PetscScalar) + sizeof(PetscInt)) +
                5 * static_cast<std::int64_t>(sizeof(PetscInt)));
  bilevel::petsc::MatHandle d;
  MatCreateSeqDense(PETSC_COMM_SELF, 3, 5, nullptr, d.out());
  EXPECT_EQ(bilevel::petsc::matrix_storage_bytes(d), 15 * static_cast<std::int64_t>(sizeof(PetscScalar)));
}

}  // namespace
