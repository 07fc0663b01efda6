/// \file `hyperclean`'s data protocol: the options, reading the sets (Fashion-MNIST: the first n_train
/// training images corrupted, the last n_val clean for validation, t10k for testing; or given files), the
/// label corruption (a function of (seed, global row) only, so no rank count changes it), and the
/// construction of the problem on the multinomial engine.
#include <algorithm>
#include <string>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/data/idx.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "data_files.hpp"
#include "kron_preconditioner.hpp"
#include "multinomial.hpp"

namespace bilevel {

namespace {

constexpr std::uint64_t kCorruptStream = 0x68636c6e00000001ull;  // "hcln" | 1: whether a row is corrupted
constexpr std::uint64_t kClassStream = 0x68636c6e00000002ull;    // which other class it gets

}  // namespace

PetscInt corrupt_label(std::uint64_t seed, PetscReal p, PetscInt row, PetscInt label, PetscInt classes) {
  if (classes < 2) return label;
  const auto r = static_cast<std::uint64_t>(row);
  if (counter_uniform(seed, kCorruptStream, r) >= p) return label;
  // a different class, uniformly: label + 1 + ⌊u (K − 1)⌋ (mod K)
  auto shift =
      static_cast<PetscInt>(counter_uniform(seed, kClassStream, r) * static_cast<double>(classes - 1));
  shift = std::min<PetscInt>(shift, classes - 2);
  return (label + 1 + shift) % classes;
}

HypercleanOptions HypercleanOptions::from_options(MPI_Comm comm) {
  petsc::OptionsReader reader(
      comm, "bilevel_hyperclean_", "Problem hyperclean, data hyper-cleaning (-bilevel_hyperclean_*)");
  HypercleanOptions o;
  o.mu = reader.real("mu", o.mu, "l2 weight on W", 0.0);
  o.mu_bias = reader.real("mu_bias", o.mu_bias, "l2 weight on the bias (negative: same as mu)");
  o.corruption = reader.real("corruption", o.corruption, "fraction of training labels changed", 0.0, 1.0);
  o.n_train = reader.integer("n_train", o.n_train, "training rows (first rows of the training file)", 1);
  o.n_val = reader.integer("n_val", o.n_val, "validation rows (last rows of the training file)", 1);
  o.format = reader.choice("format", o.format, {"auto", "dense", "sparse"}, "storage of the data blocks");
  o.seed = static_cast<std::uint64_t>(
      reader.integer("seed", static_cast<PetscInt>(o.seed), "seed of the label corruption", 0));
  o.initial_x = reader.real("initial_x", o.initial_x, "starting x_i (sample weight sigma(x_i))");
  o.cheap_preconditioner_rank = reader.integer(
      "cheap_preconditioner_rank",
      o.cheap_preconditioner_rank,
      "eigenpairs kept by the cheap preconditioner (for methods that apply M at every step; 0: exact)",
      0);
  return o;
}

HypercleanProblem::HypercleanProblem(Dataset train,
                                     Dataset validation,
                                     std::optional<Dataset> test,
                                     const HypercleanOptions& options)
    : comm_(train.comm), options_(options) {
  if (!(options_.mu > 0))
    throw InputError("-bilevel_hyperclean_mu must be > 0 (the lower level must be strongly convex in W)");
  engine_ = std::make_unique<detail::MultinomialEngine>(std::move(train),
                                                        std::move(validation),
                                                        std::move(test),
                                                        options_.format,
                                                        detail::ModelLayout::Entries,
                                                        "hyperclean");
  n_features_ = engine_->n_features();
  classes_ = engine_->classes();
  dy_ = engine_->dy();
  y_begin_ = engine_->y_begin();

  // Corrupt the training labels: a function of (seed, global row) only. The clean ones are kept for the
  // diagnostics.
  Dataset& data = engine_->train().data;
  clean_labels_ = data.labels;
  for (PetscInt i = 0; i < data.local_rows(); ++i) {
    const auto u = static_cast<std::size_t>(i);
    data.labels[u] =
        corrupt_label(options_.seed, options_.corruption, data.row_begin + i, clean_labels_[u], classes_);
  }

  // The regulariser's Hessian on y's local entries: μ on W, μ_b on b (the last K entries).
  const PetscInt nw = n_features_ * classes_;
  ridge_.resize(static_cast<std::size_t>(engine_->y_end() - y_begin_));
  for (std::size_t l = 0; l < ridge_.size(); ++l)
    ridge_[l] = y_begin_ + static_cast<PetscInt>(l) < nw ? options_.mu : options_.bias_weight();
  weight_rows_ = std::make_unique<detail::LocalRows>();
  weight_.assign(static_cast<std::size_t>(data.local_rows()), 0.5);
  dweight_.assign(static_cast<std::size_t>(data.local_rows()), 0.25);
}

HypercleanProblem::~HypercleanProblem() = default;

std::unique_ptr<HypercleanProblem> HypercleanProblem::fashion_mnist(MPI_Comm comm,
                                                                    const HypercleanOptions& options) {
  const std::string dir = fashion_mnist_dir();
  return from_files(
      comm, dir + "/train-images-idx3-ubyte.gz", "", dir + "/t10k-images-idx3-ubyte.gz", options);
}

std::unique_ptr<HypercleanProblem> HypercleanProblem::from_files(MPI_Comm comm,
                                                                 const std::string& train,
                                                                 const std::string& validation,
                                                                 const std::string& test,
                                                                 const HypercleanOptions& options) {
  const DataFormat read_format = options.format == "sparse" ? DataFormat::Sparse : DataFormat::Dense;
  const int base = detail::data_index_base_option(comm);
  const PetscInt total = detail::count_rows(comm, train);
  Dataset tr, va;
  if (validation.empty()) {
    if (options.n_train + options.n_val > total)
      throw InputError(train + ": has " + std::to_string(total) +
                       " rows, fewer than -bilevel_hyperclean_n_train (" + std::to_string(options.n_train) +
                       ") + -bilevel_hyperclean_n_val (" + std::to_string(options.n_val) + ")");
    tr = detail::read_rows(comm, train, 0, options.n_train, read_format, base);
    va = detail::read_rows(comm, train, total - options.n_val, options.n_val, read_format, base);
  } else {
    tr = detail::read_rows(comm, train, 0, std::min(options.n_train, total), read_format, base);
    va = detail::read_rows(comm, validation, 0, options.n_val, read_format, base);
  }
  std::optional<Dataset> te;
  if (!test.empty()) te = detail::read_rows(comm, test, 0, -1, read_format, base);
  detail::settle_files({&tr, &va, te ? &*te : nullptr}, base);
  return std::make_unique<HypercleanProblem>(std::move(tr), std::move(va), std::move(te), options);
}

std::span<const PetscInt> HypercleanProblem::noisy_labels() const {
  return engine_->train().data.labels;
}
std::span<const PetscInt> HypercleanProblem::clean_labels() const {
  return clean_labels_;
}
DataFormat HypercleanProblem::format() const {
  return engine_->train().data.format;
}

}  // namespace bilevel
