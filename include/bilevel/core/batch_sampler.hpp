#pragma once
/// \file Minibatches drawn by global sample index from a counter-based generator, identical on every rank.
#include <petscsys.h>

#include <cstdint>
#include <vector>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// Counter-based generator (SplitMix64 on (seed, stream, counter)): the k-th number of a stream is a pure
/// function of (seed, stream, k), so every rank draws the same numbers without communication. Not collective.
std::uint64_t counter_random(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter);
/// Uniform double in [0, 1) from counter_random.
double counter_uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter);
/// Standard normal (Box-Muller on two counter_uniform draws).
double counter_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter);

/// Draws minibatches of global indices in [0, n) without replacement inside a batch. Draw number k of
/// stream s is the same on every rank and at every rank count. Not collective.
class BatchSampler {
 public:
  BatchSampler() = default;
  BatchSampler(std::uint64_t seed, std::uint64_t stream) : seed_(seed), stream_(stream) {}
  /// Next batch of `size` distinct indices in [0, n), sorted. size >= n gives the full batch.
  Batch next(PetscInt n, PetscInt size);
  std::uint64_t draws() const { return draws_; }
  /// Continues the stream at draw number `draws` (a restart from a checkpoint). Not collective.
  void set_draws(std::uint64_t draws) { draws_ = draws; }

 private:
  std::uint64_t seed_ = 0, stream_ = 0, draws_ = 0;
  std::vector<PetscInt> buffer_;
};

}  // namespace bilevel
