// The library's byte counters (petsc/comm_counter.hpp) against counts made by hand from the counting rule:
// the collectives themselves, logreg's Hessian-vector product in both ways of moving the model (gather and
// reduce phases), and the solver's boundary decisions (coordinator phase).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "bilevel/core/solver.hpp"
#include "bilevel/petsc/comm_counter.hpp"
#include "bilevel/problems/logreg.hpp"
#include "synthetic.hpp"

namespace {

namespace petsc = bilevel::petsc;
using petsc::CommPhase;

int size_of(MPI_Comm c) {
  int s = 1;
  MPI_Comm_size(c, &s);
  return s;
}
int rank_of(MPI_Comm c) {
  int r = 0;
  MPI_Comm_rank(c, &r);
  return r;
}
std::int64_t phase(const petsc::CommBytes& after, const petsc::CommBytes& before, CommPhase p) {
  return after[static_cast<std::size_t>(p)] - before[static_cast<std::size_t>(p)];
}

TEST(CommBytes, AllreduceAndBroadcastCountTheirRule) {
  const int P = size_of(PETSC_COMM_WORLD), rank = rank_of(PETSC_COMM_WORLD);
  const petsc::CommBytes before = petsc::comm_bytes_sent();
  std::vector<double> buf(30, 1.0);
  petsc::allreduce(PETSC_COMM_WORLD, MPI_IN_PLACE, buf.data(), 30, MPI_DOUBLE, MPI_SUM, CommPhase::Reduce);
  EXPECT_EQ(buf[7], static_cast<double>(P));  // the reduction ran
  int v = rank == 0 ? 42 : 0;
  petsc::broadcast(PETSC_COMM_WORLD, &v, 1, MPI_INT, 0, CommPhase::Coordinator);
  EXPECT_EQ(v, 42);
  const petsc::CommBytes after = petsc::comm_bytes_sent();
  // 240 bytes: 2 · 240 · (P − 1) / P per rank (0, 240, 320 at 1, 2, 3 ranks); the broadcast: 4 on the root.
  const std::int64_t expected_reduce[] = {0, 0, 240, 320};
  EXPECT_EQ(phase(after, before, CommPhase::Reduce), expected_reduce[std::min(P, 3)]);
  EXPECT_EQ(phase(after, before, CommPhase::Coordinator), rank == 0 && P > 1 ? 4 : 0);
  EXPECT_EQ(phase(after, before, CommPhase::Gather), 0);
}

/// Bytes of one HVP (at a y seen before, so only the direction moves) counted by hand from the matrix
/// pattern: owners mode sends each rank the direction's entries its rows use and returns the sums of the
/// entries it does not own; gather mode sends every rank's part to the others and allreduces the model.
/// Both add one 4-byte allreduce (did y change anywhere?).
class HvpBytes : public ::testing::TestWithParam<std::string> {};

TEST_P(HvpBytes, OneHvpSendsTheHandCountedBytes) {
  MPI_Comm comm = PETSC_COMM_WORLD;
  const int P = size_of(comm), rank = rank_of(comm);
  const testdata::Global tr = testdata::make_global(12, 9, 2, 5, 0.25),
                         va = testdata::make_global(5, 9, 2, 6);
  bilevel::LogregOptions o;
  o.model_comm = GetParam();
  bilevel::LogregProblem p(testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
                           testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
                           std::nullopt,
                           o);
  auto x = p.create_upper_vec(), y = p.create_lower_vec(), w = p.create_lower_vec(),
       out = p.create_lower_vec();
  p.initial_point(x, y);
  testdata::fill(w, [](PetscInt j) { return 0.1 * (j + 1); });
  p.lower_hvp(x, y, bilevel::Batch::all(), w, out);  // y seen once
  const petsc::CommBytes before = petsc::comm_bytes_sent();
  p.lower_hvp(x, y, bilevel::Batch::all(), w, out);
  const petsc::CommBytes after = petsc::comm_bytes_sent();

  // By hand: y = (w, c) has dy = 10 entries split PETSC_DECIDE; rank r's rows are block_begin's block.
  const PetscInt dy = 10;
  auto owner = [&](PetscInt e) {
    for (int r = 0; r < P; ++r)
      if (e < bilevel::block_begin(dy, P, r + 1)) return r;
    return P - 1;
  };
  std::vector<std::set<PetscInt>> used(static_cast<std::size_t>(P));
  for (int r = 0; r < P; ++r) {
    for (PetscInt i = bilevel::block_begin(tr.rows, P, r); i < bilevel::block_begin(tr.rows, P, r + 1); ++i)
      for (PetscInt j = 0; j < tr.cols; ++j)
        if (tr.at(i, j) != 0) used[static_cast<std::size_t>(r)].insert(j);
    used[static_cast<std::size_t>(r)].insert(9);  // the intercept
  }
  std::int64_t gather = 0, reduce = P > 1 ? 2 * 4 * (P - 1) / P : 0;
  if (GetParam() == "owners") {
    for (int r = 0; r < P; ++r)
      for (const PetscInt j : used[static_cast<std::size_t>(r)]) {
        if (r != rank && owner(j) == rank) gather += 8;  // rank r needs my entry j
        if (r == rank && owner(j) != rank) reduce += 8;  // my sum for j goes to its owner
      }
  } else {
    const PetscInt mine = bilevel::block_begin(dy, P, rank + 1) - bilevel::block_begin(dy, P, rank);
    gather = 8 * mine * (P - 1);
    reduce += P > 1 ? 2 * 8 * dy * (P - 1) / P : 0;
  }
  EXPECT_EQ(phase(after, before, CommPhase::Gather), gather);
  EXPECT_EQ(phase(after, before, CommPhase::Reduce), reduce);
  EXPECT_EQ(phase(after, before, CommPhase::Coordinator), 0);
  if (P > 1) EXPECT_GT(gather + reduce, 0);  // something was sent and counted
}

INSTANTIATE_TEST_SUITE_P(ModelComm, HvpBytes, ::testing::Values("owners", "gather"));

struct OptionGuard {
  OptionGuard(const char* key, const char* value) : key_(key) { PetscOptionsSetValue(nullptr, key, value); }
  ~OptionGuard() { PetscOptionsClearValue(nullptr, key_); }
  const char* key_;
};

/// The coordinator's traffic of a solve, by hand: one boundary decision before the loop and one after each
/// of the K iterations, each an allreduce of 3 ints (12 bytes: 2 · 12 · (P − 1) / P per rank). The solver's
/// bytes per iteration include the step's gathers and reductions and the boundary's share.
TEST(CommBytes, SolveCountsOneBoundaryDecisionPerIterationAsCoordinatorTraffic) {
  MPI_Comm comm = PETSC_COMM_WORLD;
  const int P = size_of(comm);
  const testdata::Global tr = testdata::make_global(12, 9, 2, 5, 0.25),
                         va = testdata::make_global(5, 9, 2, 6);
  auto p =
      std::make_shared<bilevel::LogregProblem>(testdata::to_dataset(comm, tr, bilevel::DataFormat::Sparse),
                                               testdata::to_dataset(comm, va, bilevel::DataFormat::Sparse),
                                               std::nullopt,
                                               bilevel::LogregOptions{});
  OptionGuard type("-bilevel_type", "aidcg"), its("-bilevel_max_it", "3"),
      final_solve("-bilevel_final_lower_solve", "false");
  bilevel::BilevelSolver solver(comm);
  solver.set_problem(p);
  solver.set_from_options();
  auto x = p->create_upper_vec(), y = p->create_lower_vec();
  p->initial_point(x, y);
  const petsc::CommBytes before = petsc::comm_bytes_sent();
  const bilevel::SolveReport r = solver.solve(x, y);
  const petsc::CommBytes after = petsc::comm_bytes_sent();

  ASSERT_EQ(r.outer_iterations, 3);
  const std::int64_t boundary = P > 1 ? 2 * 12 * (P - 1) / P : 0;  // 0, 12, 16 at 1, 2, 3 ranks
  EXPECT_EQ(phase(after, before, CommPhase::Coordinator), 4 * boundary);
  if (P == 1) {
    EXPECT_EQ(r.bytes_communicated_per_iteration, 0.0);
  } else {  // the step's HVPs moved model entries, and the boundary's 12 or 16 bytes are in the figure
    EXPECT_GT(phase(after, before, CommPhase::Gather), 0);
    EXPECT_GT(r.bytes_communicated_per_iteration, static_cast<double>(boundary));
  }
}

}  // namespace
