#include "bilevel/core/batch_sampler.hpp"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace bilevel {

std::uint64_t counter_random(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter) {
  // SplitMix64 finaliser applied to a mix of the three words: a bijective, well-mixed hash, so the
  // sequence of a (seed, stream) pair is a pure function of the counter.
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ (stream + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
  z += counter * 0x94D049BB133111EBull + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double counter_uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter) {
  return static_cast<double>(counter_random(seed, stream, counter) >> 11) * 0x1.0p-53;
}

double counter_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t counter) {
  // Box-Muller on draws 2k and 2k+1; u1 in (0, 1].
  const double u1 = 1.0 - counter_uniform(seed, stream, 2 * counter);
  const double u2 = counter_uniform(seed, stream, 2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

std::pair<double, double> counter_normal_pair(std::uint64_t seed,
                                              std::uint64_t stream,
                                              std::uint64_t counter) {
  const double u1 = 1.0 - counter_uniform(seed, stream, 2 * counter);
  const double u2 = counter_uniform(seed, stream, 2 * counter + 1);
  const double r = std::sqrt(-2.0 * std::log(u1)), t = 2.0 * M_PI * u2;
  return {r * std::cos(t), r * std::sin(t)};
}

Batch BatchSampler::next(PetscInt n, PetscInt size) {
  const std::uint64_t draw = draws_++;
  if (size <= 0 || size >= n) return Batch::all();
  buffer_.clear();
  // Floyd's algorithm: `size` distinct indices with exactly `size` random draws, deterministic in
  // (seed, stream, draw).
  std::unordered_set<PetscInt> chosen;
  chosen.reserve(static_cast<std::size_t>(size) * 2);
  std::uint64_t c = 0;
  const std::uint64_t stream = stream_ * 0x100000001B3ull + draw;
  for (PetscInt j = n - size; j < n; ++j) {
    const auto t =
        static_cast<PetscInt>(counter_random(seed_, stream, c++) % static_cast<std::uint64_t>(j + 1));
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  buffer_.assign(chosen.begin(), chosen.end());
  std::sort(buffer_.begin(), buffer_.end());
  return Batch::of(buffer_);
}

}  // namespace bilevel
