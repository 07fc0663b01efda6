/// \file `multitask`'s episodes: each task's classes and examples are pure functions of (seed, task), so a
/// rank builds only its own tasks and the problem is the same at every rank count.
#include <numeric>
#include <string>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/data/idx.hpp"
#include "multitask_impl.hpp"

namespace bilevel {
namespace {

// Streams of the counter-based generator (problems use streams >= 100).
constexpr std::uint64_t kPrototype = 151, kClassPick = 152, kExample = 153, kImagePick = 154;

/// The first `count` entries of a permutation of `items` drawn on (seed, stream, base + j): partial
/// Fisher-Yates. Not collective.
template <typename T>
std::vector<T> pick(
    std::vector<T> items, PetscInt count, std::uint64_t seed, std::uint64_t stream, std::uint64_t base) {
  const auto n = static_cast<std::uint64_t>(items.size());
  for (std::uint64_t j = 0; j < static_cast<std::uint64_t>(count); ++j) {
    const std::uint64_t r = j + counter_random(seed, stream, base + j) % (n - j);
    std::swap(items[j], items[r]);
  }
  items.resize(static_cast<std::size_t>(count));
  return items;
}

/// Task t's k classes out of `classes`, in the order that gives their labels 0..k-1.
std::vector<PetscInt> task_classes(const MultitaskOptions& o, PetscInt classes, PetscInt t) {
  std::vector<PetscInt> all(static_cast<std::size_t>(classes));
  std::iota(all.begin(), all.end(), 0);
  return pick(all, o.ways, o.seed, kClassPick, static_cast<std::uint64_t>(t) * classes);
}

}  // namespace

std::vector<Episode> synthetic_episodes(const MultitaskOptions& o, PetscInt begin, PetscInt end) {
  const PetscInt p = o.features, per_class = o.shots + o.queries;
  std::vector<Episode> out;
  for (PetscInt t = begin; t < end; ++t) {
    Episode e;
    const std::vector<PetscInt> cls = task_classes(o, o.classes, t);
    for (PetscInt slot = 0; slot < o.ways; ++slot)
      for (PetscInt j = 0; j < per_class; ++j) {
        const bool support = j < o.shots;
        auto& rows = support ? e.support : e.query;
        (support ? e.support_label : e.query_label).push_back(slot);
        const std::uint64_t example = static_cast<std::uint64_t>((t * o.ways + slot) * per_class + j);
        for (PetscInt f = 0; f < p; ++f)  // μ_c + σ ξ
          rows.push_back(counter_normal(o.seed, kPrototype, static_cast<std::uint64_t>(cls[slot] * p + f)) +
                         o.spread *
                             counter_normal(o.seed, kExample, example * static_cast<std::uint64_t>(p) + f));
      }
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<Episode> image_episodes(
    MPI_Comm comm, const MultitaskOptions& o, PetscInt begin, PetscInt end, PetscInt* features) {
  const std::string dir = o.images_dir.empty() ? fashion_mnist_dir() : o.images_dir;
  IdxReadOptions ro;
  ro.max_rows = o.pool;
  ro.format = DataFormat::Dense;
  // every rank reads the pool (tasks draw from all of it); the reader is collective on its communicator
  Dataset pool =
      read_idx(PETSC_COMM_SELF, dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz", ro);
  MPI_Barrier(comm);
  const PetscInt p = pool.n_features, classes = pool.n_classes, per_class = o.shots + o.queries;
  *features = p;
  if (o.ways > classes)
    throw InputError("option -bilevel_multitask_ways: the image pool has only " + std::to_string(classes) +
                     " classes");
  std::vector<std::vector<PetscInt>> by_class(static_cast<std::size_t>(classes));
  for (PetscInt i = 0; i < pool.local_rows(); ++i)
    by_class[static_cast<std::size_t>(pool.labels[static_cast<std::size_t>(i)])].push_back(i);
  for (const auto& c : by_class)
    if (static_cast<PetscInt>(c.size()) < per_class)
      throw InputError("option -bilevel_multitask_pool: a class has " + std::to_string(c.size()) +
                       " images in the pool, fewer than shots + queries = " + std::to_string(per_class));
  detail::DenseView pixels(pool.local);
  std::vector<Episode> out;
  for (PetscInt t = begin; t < end; ++t) {
    Episode e;
    const std::vector<PetscInt> cls = task_classes(o, classes, t);
    for (PetscInt slot = 0; slot < o.ways; ++slot) {
      const auto images = pick(by_class[static_cast<std::size_t>(cls[slot])],
                               per_class,
                               o.seed,
                               kImagePick,
                               static_cast<std::uint64_t>((t * o.ways + slot)) * 1000003u);
      for (PetscInt j = 0; j < per_class; ++j) {
        const bool support = j < o.shots;
        auto& rows = support ? e.support : e.query;
        (support ? e.support_label : e.query_label).push_back(slot);
        for (PetscInt f = 0; f < p; ++f) rows.push_back(pixels.values[images[j] + f * pixels.lda]);
      }
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace bilevel
