#include "bilevel/blocks/zeroth_order/directions.hpp"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/vec_access.hpp"

namespace bilevel {
namespace {

constexpr auto kStreamDirections = static_cast<std::uint64_t>(SamplerStream::Directions);
constexpr auto kStreamCoordinates = static_cast<std::uint64_t>(SamplerStream::Coordinates);
constexpr DirectionType kTypes[] = {
    DirectionType::Gaussian, DirectionType::Orthogonal, DirectionType::Coordinate};

/// Modified Gram-Schmidt on the columns of the row-major d × q matrix `a`, in blocks of min(q, d)
/// consecutive columns, each column then scaled to norm √d. Not collective.
void orthogonalize_blocks(std::vector<PetscReal>& a, std::size_t d, std::size_t q) {
  const std::size_t block = std::min(q, d);
  const PetscReal radius = std::sqrt(static_cast<PetscReal>(d));
  for (std::size_t j = 0; j < q; ++j) {
    for (std::size_t i = j - j % block; i < j; ++i) {  // earlier directions of the same block, |u_i|² = d
      PetscReal c = 0;
      for (std::size_t r = 0; r < d; ++r) c += a[r * q + i] * a[r * q + j];
      for (std::size_t r = 0; r < d; ++r) a[r * q + j] -= c / static_cast<PetscReal>(d) * a[r * q + i];
    }
    PetscReal norm = 0;
    for (std::size_t r = 0; r < d; ++r) norm += a[r * q + j] * a[r * q + j];
    norm = std::sqrt(norm);
    if (norm > 0)
      for (std::size_t r = 0; r < d; ++r) a[r * q + j] *= radius / norm;
  }
}

/// f(j, l) for every coordinate i_j of `coords` that this rank owns in v's layout, l = its local index.
template <typename F>
void for_each_owned(Vec v, std::span<const PetscInt> coords, F&& f) {
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(v, &lo, &hi));
  for (std::size_t j = 0; j < coords.size(); ++j)
    if (coords[j] >= lo && coords[j] < hi) f(j, coords[j] - lo);
}

}  // namespace

const char* to_string(DirectionType type) {
  switch (type) {
    case DirectionType::Gaussian:
      return "gaussian";
    case DirectionType::Orthogonal:
      return "orthogonal";
    case DirectionType::Coordinate:
      return "coordinate";
  }
  return "?";
}

std::optional<DirectionType> direction_type_from_string(std::string_view name) {
  for (DirectionType t : kTypes)
    if (name == to_string(t)) return t;
  return std::nullopt;
}

std::vector<std::string> direction_type_names() {
  std::vector<std::string> out;
  for (DirectionType t : kTypes) out.emplace_back(to_string(t));
  return out;
}

void Directions::setup(DirectionType type, PetscInt q, PetscInt dim, bool restricted, std::uint64_t seed) {
  BILEVEL_ASSERT(q > 0 && dim > 0);
  type_ = type;
  q_ = q;
  dim_ = dim;
  restricted_ = restricted;
  seed_ = seed;
  support_.clear();
  coords_.clear();
  pool_.clear();
  if (type_ == DirectionType::Coordinate && !restricted_) {  // the pool is all of x
    pool_.resize(static_cast<std::size_t>(dim_));
    for (PetscInt i = 0; i < dim_; ++i) pool_[static_cast<std::size_t>(i)] = i;
  }
}

void Directions::draw(PetscInt k, std::span<const PetscInt> rows) {
  k_ = k;
  if (restricted_) {  // S = the distinct rows
    support_.assign(rows.begin(), rows.end());
    std::sort(support_.begin(), support_.end());
    support_.erase(std::unique(support_.begin(), support_.end()), support_.end());
    BILEVEL_ASSERT(!support_.empty());
  }
  if (type_ != DirectionType::Coordinate) return;
  // Blocks of min(Q, d) coordinates without replacement: a partial Fisher-Yates shuffle of S on
  // counter_uniform(seed, 8, k Q + t), t counting the draws. A block of d is all of S, whose order does not
  // change the estimate: it is taken as it is, with its d draws skipped.
  const std::span<const PetscInt> pool =
      restricted_ ? std::span<const PetscInt>(support_) : std::span<const PetscInt>(pool_);
  const std::size_t d = pool.size(), q = static_cast<std::size_t>(q_);
  coords_.clear();
  std::size_t t = 0;
  while (coords_.size() < q) {
    const std::size_t block = std::min(q - coords_.size(), d);
    if (block == d) {
      coords_.insert(coords_.end(), pool.begin(), pool.end());
      t += d;
      continue;
    }
    perm_.assign(pool.begin(), pool.end());
    for (std::size_t r = 0; r < block; ++r, ++t) {
      const double u = counter_uniform(seed_, kStreamCoordinates, static_cast<std::uint64_t>(k) * q + t);
      const std::size_t pick =
          r + std::min(d - r - 1, static_cast<std::size_t>(u * static_cast<double>(d - r)));
      std::swap(perm_[r], perm_[pick]);
      coords_.push_back(perm_[r]);
    }
  }
}

void Directions::form(std::span<const Vec> u) {
  BILEVEL_ASSERT(static_cast<PetscInt>(u.size()) == q_);
  PetscInt lo = 0, hi = 0;
  BILEVEL_PETSC_CALL(VecGetOwnershipRange(u[0], &lo, &hi));
  const auto q = static_cast<std::size_t>(q_);
  if (type_ == DirectionType::Coordinate) {
    const PetscReal radius = std::sqrt(static_cast<PetscReal>(support_size()));
    for (Vec v : u) BILEVEL_PETSC_CALL(VecSet(v, 0.0));
    for_each_owned(u[0], coords_, [&](std::size_t j, PetscInt l) {  // u_j = √d e_{i_j}
      petsc::WriteView w(u[j]);
      w[l] = radius;
    });
    return;
  }
  const bool orthogonal = type_ == DirectionType::Orthogonal;
  // Entries 2m and 2m+1 of u_j: the cosine and sine normal of counter_normal_pair(seed, 7, (k Q + j) ⌈dx/2⌉
  // + m), j 0-based (one Box-Muller draw for two entries).
  const std::uint64_t half = (static_cast<std::uint64_t>(dim_) + 1) / 2;
  auto pair_of = [&](std::size_t j, PetscInt i) {
    return counter_normal_pair(
        seed_,
        kStreamDirections,
        (static_cast<std::uint64_t>(k_) * q + j) * half + static_cast<std::uint64_t>(i) / 2);
  };
  auto entry = [&](std::size_t j, PetscInt i) {
    const auto [c, s] = pair_of(j, i);
    return i % 2 == 0 ? c : s;
  };
  if (restricted_) {
    // Every rank draws the rows of the d × Q block it needs (all of them to orthonormalise: redundant work,
    // no communication, the same directions at every rank count).
    const std::size_t d = support_.size();
    const auto first =
        static_cast<std::size_t>(std::lower_bound(support_.begin(), support_.end(), lo) - support_.begin());
    const auto last =
        static_cast<std::size_t>(std::lower_bound(support_.begin(), support_.end(), hi) - support_.begin());
    const std::size_t r0 = orthogonal ? 0 : first, r1 = orthogonal ? d : last;
    block_.assign(d * q, 0.0);
    for (std::size_t r = r0; r < r1; ++r)
      for (std::size_t j = 0; j < q; ++j) block_[r * q + j] = entry(j, support_[r]);
    if (orthogonal) orthogonalize_blocks(block_, d, q);
    for (std::size_t j = 0; j < q; ++j) {
      BILEVEL_PETSC_CALL(VecSet(u[j], 0.0));
      petsc::WriteView w(u[j]);
      for (std::size_t r = first; r < last; ++r) w[support_[r] - lo] = block_[r * q + j];
    }
    return;
  }
  for (std::size_t j = 0; j < q; ++j) {
    petsc::WriteView w(u[j]);
    PetscInt i = lo;
    if (i % 2 == 1 && i < hi) w[0] = entry(j, i++);
    for (; i + 1 < hi; i += 2) std::tie(w[i - lo], w[i + 1 - lo]) = pair_of(j, i);
    if (i < hi) w[i - lo] = entry(j, i);
  }
  if (!orthogonal) return;
  // Modified Gram-Schmidt on the distributed vectors, blocks of min(Q, dx), norms √dx.
  const std::size_t block = std::min(q, static_cast<std::size_t>(dim_));
  const PetscReal radius = std::sqrt(static_cast<PetscReal>(dim_));
  for (std::size_t j = 0; j < q; ++j) {
    for (std::size_t i = j - j % block; i < j; ++i) {
      PetscReal c = 0;
      BILEVEL_PETSC_CALL(VecDot(u[i], u[j], &c));
      BILEVEL_PETSC_CALL(VecAXPY(u[j], -c / static_cast<PetscReal>(dim_), u[i]));
    }
    PetscReal norm = 0;
    BILEVEL_PETSC_CALL(VecNorm(u[j], NORM_2, &norm));
    if (norm > 0) BILEVEL_PETSC_CALL(VecScale(u[j], radius / norm));
  }
}

void Directions::project(Vec w, std::span<const Vec> u, std::span<PetscReal> c) const {
  BILEVEL_ASSERT(static_cast<PetscInt>(c.size()) == q_);
  if (type_ != DirectionType::Coordinate) {
    BILEVEL_ASSERT(static_cast<PetscInt>(u.size()) == q_);
    BILEVEL_PETSC_CALL(VecMDot(w, q_, u.data(), c.data()));
    return;
  }
  const PetscReal radius = std::sqrt(static_cast<PetscReal>(support_size()));
  std::fill(c.begin(), c.end(), 0.0);
  petsc::ReadView wv(w);
  for_each_owned(w, coords_, [&](std::size_t j, PetscInt l) { c[j] = radius * wv[l]; });
}

void Directions::combine(std::span<const PetscReal> c, PetscReal s, std::span<const Vec> u, Vec h) {
  BILEVEL_ASSERT(static_cast<PetscInt>(c.size()) == q_);
  if (type_ != DirectionType::Coordinate) {
    BILEVEL_ASSERT(static_cast<PetscInt>(u.size()) == q_);
    alpha_.resize(c.size());
    for (std::size_t j = 0; j < c.size(); ++j) alpha_[j] = s * c[j];
    BILEVEL_PETSC_CALL(VecMAXPY(h, q_, alpha_.data(), const_cast<Vec*>(u.data())));
    return;
  }
  const PetscReal radius = std::sqrt(static_cast<PetscReal>(support_size()));
  petsc::WriteView hv(h);
  for_each_owned(h, coords_, [&](std::size_t j, PetscInt l) { hv[l] += s * radius * c[j]; });
}

}  // namespace bilevel
