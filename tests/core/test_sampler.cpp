#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "bilevel/bilevel.hpp"

namespace {

TEST(BatchSampler, BatchesAreDistinctSortedAndInRange) {
  bilevel::BatchSampler s(42, 1);

  const bilevel::Batch b = s.next(1000, 64);

  ASSERT_FALSE(b.full);
  ASSERT_EQ(b.indices.size(), 64u);
  std::set<PetscInt> seen(b.indices.begin(), b.indices.end());
  EXPECT_EQ(seen.size(), 64u);
  EXPECT_TRUE(std::is_sorted(b.indices.begin(), b.indices.end()));
  EXPECT_GE(*seen.begin(), 0);
  EXPECT_LT(*seen.rbegin(), 1000);
}

TEST(BatchSampler, SameSeedGivesTheSameBatchesOnEveryRank) {
  bilevel::BatchSampler s(7, 3);
  std::vector<PetscInt> mine;
  for (int k = 0; k < 5; ++k) {
    const bilevel::Batch b = s.next(5000, 100);
    mine.insert(mine.end(), b.indices.begin(), b.indices.end());
  }
  std::vector<PetscInt> root = mine;

  MPI_Bcast(root.data(), static_cast<int>(root.size()), MPIU_INT, 0, PETSC_COMM_WORLD);

  EXPECT_EQ(mine, root);
}

TEST(BatchSampler, ConsecutiveBatchesDiffer) {
  bilevel::BatchSampler s(7, 3);
  const bilevel::Batch first = s.next(5000, 50);
  const std::vector<PetscInt> a(first.indices.begin(), first.indices.end());
  const bilevel::Batch second = s.next(5000, 50);

  EXPECT_NE(a, std::vector<PetscInt>(second.indices.begin(), second.indices.end()));
  EXPECT_EQ(s.draws(), 2u);
}

TEST(CounterRandom, NormalDrawsHaveUnitVariance) {
  double sum = 0, sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double z = bilevel::counter_normal(1, 2, static_cast<std::uint64_t>(i));
    sum += z;
    sq += z * z;
  }

  EXPECT_NEAR(sum / n, 0.0, 0.03);
  EXPECT_NEAR(sq / n, 1.0, 0.05);
}

// Box-Muller's cosine and sine of one pair of draws: the first is counter_normal's number; the second is
// standard normal too and uncorrelated with the first.
TEST(CounterRandom, NormalPairsStartWithTheSingleNormalAndTheirSecondIsAnIndependentNormal) {
  double sum = 0, sq = 0, cross = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const auto [a, b] = bilevel::counter_normal_pair(1, 2, static_cast<std::uint64_t>(i));
    EXPECT_EQ(a, bilevel::counter_normal(1, 2, static_cast<std::uint64_t>(i)));
    sum += b;
    sq += b * b;
    cross += a * b;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.03);
  EXPECT_NEAR(sq / n, 1.0, 0.05);
  EXPECT_NEAR(cross / n, 0.0, 0.03);
}

}  // namespace
