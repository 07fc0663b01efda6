// Building blocks of the zeroth-order methods (blocks/zeroth_order/): the directions, and the pieces their
// grouped executor stands on (petsc/subcomm.hpp, summing OracleCounts over ranks). At 1, 2 and 3 ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "bilevel/blocks/zeroth_order/directions.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"
#include "bilevel/petsc/subcomm.hpp"

namespace {

using bilevel::Directions;
using bilevel::DirectionType;
using bilevel::petsc::VecHandle;

constexpr std::uint64_t kSeed = 11;

VecHandle make_vec(MPI_Comm comm, PetscInt n) {
  VecHandle v;
  VecCreateMPI(comm, PETSC_DECIDE, n, v.out());
  return v;
}

/// The whole of v on every rank of its communicator. Collective.
std::vector<PetscReal> gather(Vec v) {
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

/// v_i = f(i) for the owned global indices i. Not collective.
template <typename F>
void fill(Vec v, F f) {
  PetscInt lo = 0, hi = 0;
  VecGetOwnershipRange(v, &lo, &hi);
  PetscScalar* a = nullptr;
  VecGetArray(v, &a);
  for (PetscInt i = lo; i < hi; ++i) a[i - lo] = f(i);
  VecRestoreArray(v, &a);
}

/// The Q directions of iteration k on `comm`, gathered: u[j][i]. Collective.
std::vector<std::vector<PetscReal>> directions(MPI_Comm comm,
                                               DirectionType type,
                                               PetscInt q,
                                               PetscInt dim,
                                               const std::vector<PetscInt>& rows,
                                               PetscInt k = 0) {
  Directions d;
  d.setup(type, q, dim, !rows.empty(), kSeed);
  d.draw(k, rows);
  std::vector<VecHandle> u;
  for (PetscInt j = 0; j < q; ++j) u.push_back(make_vec(comm, dim));
  std::vector<Vec> raw(u.begin(), u.end());
  d.form(raw);
  std::vector<std::vector<PetscReal>> out;
  for (Vec v : raw) out.push_back(gather(v));
  return out;
}

PetscReal dot(const std::vector<PetscReal>& a, const std::vector<PetscReal>& b) {
  PetscReal s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

/// (1/Q) Σ_j u_j u_jᵀ, dim × dim row-major.
std::vector<PetscReal> second_moment(const std::vector<std::vector<PetscReal>>& u) {
  const std::size_t n = u[0].size();
  std::vector<PetscReal> m(n * n, 0.0);
  for (const auto& v : u)
    for (std::size_t a = 0; a < n; ++a)
      for (std::size_t b = 0; b < n; ++b) m[a * n + b] += v[a] * v[b] / static_cast<PetscReal>(u.size());
  return m;
}

const std::vector<PetscInt> kRows = {13, 2, 7, 2, 18, 7, 4};  // support S = {2, 4, 7, 13, 18}, d = 5
const std::set<PetscInt> kSupport = {2, 4, 7, 13, 18};

TEST(ZerothOrderDirections, OrthogonalOnesAreOrthogonalWithinEachBlockOfDAndHaveNormSqrtD) {
  struct Case {
    PetscInt dim, q;
    std::vector<PetscInt> rows;
  };
  for (const Case& c : {Case{7, 10, {}}, Case{20, 8, kRows}}) {
    const auto u = directions(PETSC_COMM_WORLD, DirectionType::Orthogonal, c.q, c.dim, c.rows);
    const PetscInt d = c.rows.empty() ? c.dim : static_cast<PetscInt>(kSupport.size());
    for (PetscInt i = 0; i < c.q; ++i) {
      EXPECT_NEAR(dot(u[i], u[i]), static_cast<PetscReal>(d), 1e-10 * d) << "direction " << i;
      for (PetscInt j = i + 1; j < c.q && j / d == i / d; ++j)
        EXPECT_NEAR(dot(u[i], u[j]), 0.0, 1e-10) << i << " " << j;
      for (PetscInt e = 0; e < c.dim; ++e)
        if (!c.rows.empty() && !kSupport.count(e))
          EXPECT_EQ(u[i][e], 0.0) << "entry " << e << " is off the support";
    }
    // Different blocks are independent draws, not orthogonal to each other.
    EXPECT_GT(std::abs(dot(u[0], u[d])), 1e-3);
  }
}

// With Q = d, orthogonal and coordinate directions give (1/Q) Σ_j u_j u_jᵀ = I on the support and 0
// elsewhere.
TEST(ZerothOrderDirections, OrthogonalAndCoordinateOnesWithQEqualToDHaveTheIdentityAsSecondMoment) {
  for (DirectionType type : {DirectionType::Orthogonal, DirectionType::Coordinate}) {
    for (bool restricted : {false, true}) {
      const PetscInt dim = restricted ? 20 : 6, d = restricted ? 5 : 6;
      const auto m = second_moment(
          directions(PETSC_COMM_WORLD, type, d, dim, restricted ? kRows : std::vector<PetscInt>{}, 3));
      for (PetscInt a = 0; a < dim; ++a)
        for (PetscInt b = 0; b < dim; ++b) {
          const bool on = a == b && (!restricted || kSupport.count(a));
          EXPECT_NEAR(m[a * dim + b], on ? 1.0 : 0.0, 1e-12)
              << to_string(type) << " (" << a << ", " << b << ")";
        }
    }
  }
}

// Gaussian directions: E[u uᵀ] = I. Over 2,000 draws in dimension 4 the mean of u uᵀ has standard deviation
// √(2/2000) ≈ 0.032 on the diagonal and 0.022 off it; 0.15 is about 5 of them.
TEST(ZerothOrderDirections, GaussianOnesHaveTheIdentityAsSecondMomentOnAverage) {
  const PetscInt dim = 4, q = 5, iterations = 400;
  std::vector<PetscReal> mean(dim * dim, 0.0);
  for (PetscInt k = 0; k < iterations; ++k) {
    const auto m = second_moment(directions(PETSC_COMM_WORLD, DirectionType::Gaussian, q, dim, {}, k));
    for (std::size_t e = 0; e < m.size(); ++e) mean[e] += m[e] / iterations;
  }
  for (PetscInt a = 0; a < dim; ++a)
    for (PetscInt b = 0; b < dim; ++b)
      EXPECT_NEAR(mean[a * dim + b], a == b ? 1.0 : 0.0, 0.15) << a << " " << b;
}

TEST(ZerothOrderDirections, CoordinatesAreDrawnFromTheSupportWithoutReplacementInBlocksOfD) {
  Directions d;
  d.setup(DirectionType::Coordinate, 12, 20, true, kSeed);
  d.draw(0, kRows);
  const std::vector<PetscInt> c(d.coordinates().begin(), d.coordinates().end());
  ASSERT_EQ(c.size(), 12u);
  EXPECT_EQ(d.support_size(), 5);
  EXPECT_EQ(std::set<PetscInt>(c.begin(), c.begin() + 5), kSupport);       // block 1: all of S
  EXPECT_EQ(std::set<PetscInt>(c.begin() + 5, c.begin() + 10), kSupport);  // block 2: all of S
  const std::set<PetscInt> last(c.begin() + 10, c.end());                  // block 3: 2 distinct ones of S
  EXPECT_EQ(last.size(), 2u);
  EXPECT_TRUE(std::includes(kSupport.begin(), kSupport.end(), last.begin(), last.end()));
  // Fewer than d: distinct, and another iteration draws other ones.
  Directions few;
  few.setup(DirectionType::Coordinate, 3, 50, false, kSeed);
  few.draw(0, {});
  const std::vector<PetscInt> first(few.coordinates().begin(), few.coordinates().end());
  few.draw(1, {});
  const std::vector<PetscInt> second(few.coordinates().begin(), few.coordinates().end());
  EXPECT_EQ(std::set<PetscInt>(first.begin(), first.end()).size(), 3u);
  EXPECT_NE(first, second);
}

TEST(ZerothOrderDirections, AreTheSameOnOneRankAndOnAllRanks) {
  for (DirectionType type : {DirectionType::Gaussian, DirectionType::Orthogonal, DirectionType::Coordinate}) {
    for (bool restricted : {false, true}) {
      const std::vector<PetscInt> rows = restricted ? kRows : std::vector<PetscInt>{};
      const auto self = directions(PETSC_COMM_SELF, type, 6, 20, rows, 2);
      const auto all = directions(PETSC_COMM_WORLD, type, 6, 20, rows, 2);
      for (std::size_t j = 0; j < self.size(); ++j)
        for (std::size_t i = 0; i < self[j].size(); ++i)
          EXPECT_NEAR(all[j][i], self[j][i], 1e-12) << to_string(type) << (restricted ? " restricted" : "");
    }
  }
}

// project() gives c_j = u_jᵀ w (for coordinates on the rank that owns i_j, 0 elsewhere) and combine() adds
// s Σ_j c_j u_j; with Q = d orthogonal or coordinate directions, combining the projections of w with s = 1/Q
// gives back w on the support.
TEST(ZerothOrderDirections, ProjectAndCombineGiveTheDirectionalProductsAndTheirSum) {
  const PetscInt dim = 20;
  for (DirectionType type : {DirectionType::Gaussian, DirectionType::Orthogonal, DirectionType::Coordinate}) {
    Directions d;
    d.setup(type, 5, dim, true, kSeed);
    d.draw(4, kRows);
    std::vector<VecHandle> u;
    for (int j = 0; j < 5; ++j) u.push_back(make_vec(PETSC_COMM_WORLD, dim));
    std::vector<Vec> raw(u.begin(), u.end());
    d.form(raw);
    VecHandle w = make_vec(PETSC_COMM_WORLD, dim), h = make_vec(PETSC_COMM_WORLD, dim);
    fill(w, [](PetscInt i) { return std::cos(0.7 * i + 0.1); });
    std::vector<PetscReal> c(5);
    d.project(w, raw, c);
    if (type == DirectionType::Coordinate)  // the owner's numbers
      MPI_Allreduce(MPI_IN_PLACE, c.data(), 5, MPIU_REAL, MPI_SUM, PETSC_COMM_WORLD);
    const std::vector<PetscReal> wg = gather(w);
    for (int j = 0; j < 5; ++j) EXPECT_NEAR(c[j], dot(gather(raw[j]), wg), 1e-12) << to_string(type);
    VecSet(h, 1.0);
    d.combine(c, 0.2, raw, h);
    const std::vector<PetscReal> hg = gather(h);
    for (PetscInt i = 0; i < dim; ++i) {
      PetscReal expect = 1.0;
      for (int j = 0; j < 5; ++j) expect += 0.2 * c[j] * gather(raw[j])[i];
      EXPECT_NEAR(hg[i], expect, 1e-12) << to_string(type) << " entry " << i;
      if (type != DirectionType::Gaussian)
        EXPECT_NEAR(hg[i], 1.0 + (kSupport.count(i) ? wg[i] : 0.0), 1e-12)
            << to_string(type) << " entry " << i;
    }
  }
}

TEST(ZerothOrderDirections, TypeNamesRoundTrip) {
  for (const std::string& name : bilevel::direction_type_names())
    EXPECT_EQ(to_string(*bilevel::direction_type_from_string(name)), name);
  EXPECT_FALSE(bilevel::direction_type_from_string("spherical"));
}

TEST(RedundantCopy, EveryBlockReceivesTheWholeVectorAndBlockZerosCopyComesBack) {
  int size = 1, rank = 0;
  MPI_Comm_size(PETSC_COMM_WORLD, &size);
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  const int groups = std::min(size, 2);
  bilevel::petsc::OwnedComm sub;
  const int group = sub.split_contiguous(PETSC_COMM_WORLD, groups);
  EXPECT_EQ(group, rank * groups / size);  // contiguous rank blocks
  const PetscInt n = 9;
  VecHandle full = make_vec(PETSC_COMM_WORLD, n), part = make_vec(sub.get(), n);
  fill(full, [](PetscInt i) { return 10.0 + i; });
  bilevel::petsc::RedundantCopy copy;
  copy.setup(full, part, group);
  copy.copy(full, part);
  const std::vector<PetscReal> got = gather(part);  // within the block
  for (PetscInt i = 0; i < n; ++i) EXPECT_EQ(got[i], 10.0 + i);
  VecScale(part, group == 0 ? 2.0 : -1.0);  // only block 0's values go back
  copy.copy_back(part, full);
  const std::vector<PetscReal> back = gather(full);
  for (PetscInt i = 0; i < n; ++i) EXPECT_EQ(back[i], 2 * (10.0 + i));
}

TEST(OracleCounts, AllreduceSumsEveryCounterOverTheRanks) {
  int size = 1, rank = 0;
  MPI_Comm_size(PETSC_COMM_WORLD, &size);
  MPI_Comm_rank(PETSC_COMM_WORLD, &rank);
  const std::int64_t r = rank + 1, total = static_cast<std::int64_t>(size) * (size + 1) / 2;
  bilevel::OracleCounts c{r, 2 * r, 3 * r, 4 * r, 5 * r, 6 * r, 7 * r};
  bilevel::allreduce(c, PETSC_COMM_WORLD);
  EXPECT_EQ(c.grad_f, total);
  EXPECT_EQ(c.grad_g, 2 * total);
  EXPECT_EQ(c.hvp, 3 * total);
  EXPECT_EQ(c.jvp, 4 * total);
  EXPECT_EQ(c.samples, 5 * total);
  EXPECT_EQ(c.value_f, 6 * total);
  EXPECT_EQ(c.value_g, 7 * total);
  c += bilevel::OracleCounts{1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(c.grad_f, total + 1);
  EXPECT_EQ(c.value_g, 7 * total + 1);
}

}  // namespace
