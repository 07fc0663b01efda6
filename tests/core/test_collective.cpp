#include <gtest/gtest.h>

#include "bilevel/bilevel.hpp"

namespace {

TEST(ParallelSection, FailureOnTheLastRankIsThrownOnEveryRankWithItsMessage) {
  int rank = 0, size = 1;
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  MPI_Comm_size(PETSC_COMM_WORLD, &size);
  bilevel::ParallelSection section(PETSC_COMM_WORLD);
  try {
    if (rank == size - 1) throw bilevel::InputError("data.svm:3: bad value");
  } catch (...) {
    section.failed();
  }

  try {
    section.check();
    FAIL() << "no exception on rank " << rank;
  } catch (const bilevel::InputError& e) {
    EXPECT_STREQ(e.what(), "data.svm:3: bad value");
  }
}

TEST(ParallelSection, NoFailureMeansNoException) {
  bilevel::ParallelSection section(PETSC_COMM_WORLD);

  EXPECT_NO_THROW(section.check());
}

}  // namespace
