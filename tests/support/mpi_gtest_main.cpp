// MPI-aware GoogleTest main: every rank runs every test; rank 0 prints the normal report, other ranks
// print their own failures as "[rank r] file:line: ..."; every rank exits with the reduced status, so a
// failure on any rank fails the CTest case.
#include <gtest/gtest.h>
#include <mpi.h>
#include <slepcsys.h>

#include <cstdio>
#include <cstdlib>

#include "bilevel/petsc/session.hpp"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr,
                   "[rank %d] %s:%d: Failure\n%s\n",
                   rank_,
                   r.file_name() ? r.file_name() : "?",
                   r.line_number(),
                   r.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (SlepcInitialize(&argc, &argv, nullptr, nullptr)) return EXIT_FAILURE;
  bilevel::petsc::initialize_package();
  int rank = 0;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&local_failed, &any_failed, 1, MPI_INT, MPI_MAX, PETSC_COMM_WORLD);
  if (SlepcFinalize()) return EXIT_FAILURE;
  return any_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
