#pragma once
/// \file Minibatches drawn by global sample index from a counter-based generator, identical on every rank.
#include <petscsys.h>

#include <cstdint>
#include <utility>
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
/// Two independent standard normals from the same two draws (Box-Muller's cosine and sine: one logarithm,
/// square root and sincos for both); the first equals counter_normal(seed, stream, counter). Not collective.
std::pair<double, double> counter_normal_pair(std::uint64_t seed,
                                              std::uint64_t stream,
                                              std::uint64_t counter);

/// The counter_random streams of the methods' samplers and generators, one number each, so no two draws
/// of a run share a stream (the problems' own generators use streams >= 100, the derivative checker its
/// own seed).
enum class SamplerStream : std::uint64_t {
  Lower = 1,        ///< training batches of the lower-level steps on y
  Hessian = 2,      ///< training batches of the Hessian products (and of other lower oracles of a step)
  Jacobian = 3,     ///< training batches of the Jacobian product J v
  Upper = 4,        ///< validation batches of ∇f
  Directions = 7,   ///< Gaussian entries of zeroth-order directions
  Coordinates = 8,  ///< coordinates of coordinate directions
};

/// Draws minibatches of global indices in [0, n) without replacement inside a batch. Draw number k of
/// stream s is the same on every rank and at every rank count. Not collective.
class BatchSampler {
 public:
  BatchSampler() = default;
  BatchSampler(std::uint64_t seed, std::uint64_t stream) : seed_(seed), stream_(stream) {}
  BatchSampler(std::uint64_t seed, SamplerStream stream)
      : BatchSampler(seed, static_cast<std::uint64_t>(stream)) {}
  /// Next batch of `size` distinct indices in [0, n), sorted. size >= n gives the full batch.
  Batch next(PetscInt n, PetscInt size);
  /// The batch a method asks for: the next one of `size` when size > 0 and the problem has n > 0 samples,
  /// else the full set without drawing (size 0 = full batch; deterministic problems have n = 0).
  Batch draw(PetscInt n, PetscInt size) { return size > 0 && n > 0 ? next(n, size) : Batch::all(); }
  std::uint64_t draws() const { return draws_; }
  /// Continues the stream at draw number `draws` (a restart from a checkpoint). Not collective.
  void set_draws(std::uint64_t draws) { draws_ = draws; }

 private:
  std::uint64_t seed_ = 0, stream_ = 0, draws_ = 0;
  std::vector<PetscInt> buffer_;
};

/// A method's samplers, one per SamplerStream of a step (lower steps, Hessian products, the Jacobian
/// product, ∇f), seeded from the run's seed: draw k of each is the same on every rank. Not collective.
struct StepSamplers {
  StepSamplers() = default;
  explicit StepSamplers(std::uint64_t seed)
      : lower(seed, SamplerStream::Lower),
        hessian(seed, SamplerStream::Hessian),
        jacobian(seed, SamplerStream::Jacobian),
        upper(seed, SamplerStream::Upper) {}
  BatchSampler lower, hessian, jacobian, upper;
};

}  // namespace bilevel
