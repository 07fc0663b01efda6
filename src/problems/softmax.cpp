/// \file `softmax`: multinomial logistic regression with per-feature (or scalar) log-regularisers.
/// Options: -bilevel_softmax_{scalar, bias_weight, initial_x, n_val, format, model_comm}.
///
/// Notation per row i: a'_i = [a_i; 1], z_i = [W; bᵀ]ᵀ a'_i, p_i = softmax(z_i), λ_j = e^{x_j}.
///   ∇_y g   = (1/n) Σ a'_i ⊗ (p_i − e_{l_i}) + λ_j W_j (rows j < n_features) + μ_b b
///   H V     = (1/n) Σ a'_i ⊗ s_i + λ_j V_j + μ_b V_b,   u_i = Vᵀ a'_i,  s_i = p_i ∘ (u_i − p_i·u_i)
///   ∇_x g_j = 1/2 λ_j ||W_j||²,   (J V)_j = λ_j W_j·V_j   (scalar x: the sums over j)
#include "bilevel/problems/softmax.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/memory.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/petsc/vec_access.hpp"
#include "data_files.hpp"
#include "multinomial.hpp"

namespace bilevel {

SoftmaxOptions SoftmaxOptions::from_options(MPI_Comm comm) {
  petsc::OptionsReader reader(
      comm,
      "bilevel_softmax_",
      "Problem softmax, multinomial logistic-regression hyperparameters (-bilevel_softmax_*)");
  SoftmaxOptions o;
  o.scalar = reader.boolean("scalar", o.scalar, "one regulariser for all features (dx = 1)");
  o.bias_weight = reader.real("bias_weight", o.bias_weight, "l2 weight on the bias", 0.0);
  o.initial_x = reader.real("initial_x", o.initial_x, "starting log-regulariser x_j", -50.0, 50.0);
  o.n_val = reader.integer("n_val", o.n_val, "validation rows taken from the end of the training file", 1);
  o.format = reader.choice("format", o.format, {"auto", "dense", "sparse"}, "storage of the data blocks");
  o.model_comm =
      reader.choice("model_comm",
                    o.model_comm,
                    {"auto", "gather", "owners"},
                    "how sparse rows get the model: owners (entries the rows use), gather (whole model)");
  return o;
}

SoftmaxProblem::SoftmaxProblem(Dataset train,
                               Dataset validation,
                               std::optional<Dataset> test,
                               const SoftmaxOptions& options)
    : comm_(train.comm), options_(options) {
  // Whole rows of [W; bᵀ] per rank: row j's K entries and x_j live together. Sparse sides are compressed:
  // each rank receives only the model rows its data rows use and adds its sums onto their owners.
  const detail::ModelComm mode = options_.model_comm == "gather"   ? detail::ModelComm::Gather
                                 : options_.model_comm == "owners" ? detail::ModelComm::Owners
                                                                   : detail::ModelComm::Auto;
  engine_ = std::make_unique<detail::MultinomialEngine>(std::move(train),
                                                        std::move(validation),
                                                        std::move(test),
                                                        options_.format,
                                                        detail::ModelLayout::Rows,
                                                        "softmax",
                                                        mode);
  n_features_ = engine_->n_features();
  classes_ = engine_->classes();
  row_begin_ = engine_->y_begin() / classes_;
  row_end_ = engine_->y_end() / classes_;
  lambda_ = std::make_unique<detail::ExpRegularisers>();
}

SoftmaxProblem::~SoftmaxProblem() = default;

std::unique_ptr<SoftmaxProblem> SoftmaxProblem::from_files(MPI_Comm comm,
                                                           const std::string& train,
                                                           const std::string& validation,
                                                           const std::string& test,
                                                           const SoftmaxOptions& options) {
  const DataFormat read_format = options.format == "sparse" ? DataFormat::Sparse : DataFormat::Dense;
  const int base = detail::data_index_base_option(comm);
  Dataset tr, va;
  if (validation.empty()) {
    const PetscInt total = detail::count_rows(comm, train);
    if (options.n_val >= total)
      throw InputError(train + ": has " + std::to_string(total) +
                       " rows, not more than -bilevel_softmax_n_val (" + std::to_string(options.n_val) + ")");
    tr = detail::read_rows(comm, train, 0, total - options.n_val, read_format, base);
    va = detail::read_rows(comm, train, total - options.n_val, options.n_val, read_format, base);
  } else {
    tr = detail::read_rows(comm, train, 0, -1, read_format, base);
    va = detail::read_rows(comm, validation, 0, -1, read_format, base);
  }
  std::optional<Dataset> te;
  if (!test.empty()) te = detail::read_rows(comm, test, 0, -1, read_format, base);
  detail::settle_files({&tr, &va, te ? &*te : nullptr}, base);
  return std::make_unique<SoftmaxProblem>(std::move(tr), std::move(va), std::move(te), options);
}

petsc::VecHandle SoftmaxProblem::create_lower_vec() const {
  return engine_->create_lower_vec();
}

petsc::VecHandle SoftmaxProblem::create_upper_vec() const {
  return detail::create_feature_vec(comm_, options_.scalar, row_begin_, row_end_, n_features_);
}

Capability SoftmaxProblem::capabilities() const {
  return detail::data_capabilities(engine_->test() != nullptr);
}

DatasetSizes SoftmaxProblem::dataset_sizes() const {
  return {engine_->train().data.n_rows, engine_->validation().data.n_rows};
}

std::int64_t SoftmaxProblem::local_data_bytes() const {
  return engine_->local_data_bytes();
}

ProblemHints SoftmaxProblem::hints() const {
  ProblemHints h;
  h.upper_stepper = "adam";
  h.upper_step = 0.2;
  h.x_lower_bound = -20.0;
  h.x_upper_bound = 10.0;
  return h;
}

void SoftmaxProblem::initial_point(Vec x, Vec y) {
  BILEVEL_PETSC_CALL(VecSet(x, options_.initial_x));
  BILEVEL_PETSC_CALL(VecSet(y, 0.0));
}

DataFormat SoftmaxProblem::format() const {
  return engine_->train().data.format;
}

void SoftmaxProblem::check_layouts(Vec x, Vec y) const {
  if (y) engine_->check_lower(y);
  if (x) {
    PetscInt n = 0;
    BILEVEL_PETSC_CALL(VecGetSize(x, &n));
    const PetscInt dx = options_.scalar ? 1 : n_features_;
    if (n != dx)
      throw InputError("softmax: x has size " + std::to_string(n) + ", expected " + std::to_string(dx));
  }
}

const PetscScalar* SoftmaxProblem::regularisers(Vec x) {
  return lambda_->of(x, options_.scalar);
}

std::span<const PetscScalar> SoftmaxProblem::ridge(Vec x) {
  const PetscScalar* lam = regularisers(x);
  const PetscInt K = classes_, nl = K * (row_end_ - row_begin_);
  // Rebuilt only when λ changed: a per-feature λ is recomputed when x's local content changes (its
  // pointer and values stay put otherwise), a scalar λ is compared by value.
  const detail::VecKey key = detail::vec_key(x);
  const PetscObjectId id = key.id;
  const PetscObjectState state = key.state;
  if (static_cast<PetscInt>(ridge_.size()) == nl && id == ridge_id_ && state == ridge_state_ &&
      (!options_.scalar || lam[0] == ridge_scalar_))
    return ridge_;
  ridge_.resize(static_cast<std::size_t>(nl));
  for (PetscInt j = row_begin_; j < row_end_; ++j) {  // λ_j on W_jk, μ_b on the bias
    const PetscScalar r =
        j >= n_features_ ? options_.bias_weight : (options_.scalar ? lam[0] : lam[j - row_begin_]);
    std::fill_n(ridge_.begin() + (j - row_begin_) * K, K, r);
  }
  ridge_id_ = id;
  ridge_state_ = state;
  ridge_scalar_ = options_.scalar ? lam[0] : 0;
  return ridge_;
}

PetscReal SoftmaxProblem::upper_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  return engine_->upper_value(y, batch);
}

void SoftmaxProblem::upper_grad_impl(Vec x, Vec y, const Batch& batch, Vec gx, Vec gy) {
  check_layouts(x, y);
  if (gx) BILEVEL_PETSC_CALL(VecSet(gx, 0.0));  // f does not depend on x
  if (gy) engine_->upper_gradient(y, batch, gy);
}

PetscReal SoftmaxProblem::lower_value_impl(Vec x, Vec y, const Batch& batch) {
  check_layouts(x, y);
  const PetscScalar* ym = engine_->model(engine_->train(), y);
  PetscInt n = 0;
  const double loss = engine_->loss_pass(engine_->train(), batch, ym, nullptr, nullptr, &n);
  // 1/2 Σ_j λ_j ||W_j||² + μ_b/2 ||b||² over this rank's rows of [W; bᵀ]
  const std::span<const PetscScalar> rho = ridge(x);
  petsc::ReadView yl(y);
  double reg = 0;
  for (std::size_t l = 0; l < rho.size(); ++l)
    reg += rho[l] * yl[static_cast<PetscInt>(l)] * yl[static_cast<PetscInt>(l)];
  PetscScalar sums[2] = {loss, 0.5 * reg};
  detail::sum_over_ranks(comm_, std::span<PetscScalar>(sums, 2));
  return sums[0] / static_cast<PetscReal>(n) + sums[1];
}

void SoftmaxProblem::lower_grad_y_impl(Vec x, Vec y, const Batch& batch, Vec gy) {
  check_layouts(x, y);
  // (1/n) Σ a'_i ⊗ (p_i − e_l) + λ_j W_j (+ μ_b b)
  engine_->gradient(engine_->train(), y, batch, nullptr, ridge(x), gy);
}

void SoftmaxProblem::lower_grad_x_impl(Vec x, Vec y, const Batch& /*batch*/, Vec gx) {
  check_layouts(x, y);
  const PetscScalar* lam = regularisers(x);
  const PetscInt K = classes_, jend = std::min(row_end_, n_features_);
  petsc::ReadView yv(y);
  // ∂g/∂x_j = 1/2 λ_j ||W_j||² (scalar: summed over j)
  double total = 0;
  petsc::WriteView out(gx);
  for (PetscInt j = row_begin_; j < jend; ++j) {
    double s = 0;
    for (PetscInt k = 0; k < K; ++k) s += yv[(j - row_begin_) * K + k] * yv[(j - row_begin_) * K + k];
    if (options_.scalar)
      total += s;
    else
      out[j - row_begin_] = 0.5 * lam[j - row_begin_] * s;
  }
  if (options_.scalar) {
    const double lam0 = lam[0];
    total = detail::sum_over_ranks(comm_, total);
    if (out.size() > 0) out[0] = 0.5 * lam0 * total;
  }
}

void SoftmaxProblem::lower_hvp_impl(Vec x, Vec y, const Batch& batch, Vec w, Vec out) {
  lower_hvp_multi_impl(x, y, batch, std::span<const Vec>(&w, 1), std::span<const Vec>(&out, 1));
}

void SoftmaxProblem::lower_hvp_multi_impl(
    Vec x, Vec y, const Batch& batch, std::span<const Vec> w, std::span<const Vec> out) {
  check_layouts(x, y);
  engine_->hvp(y, batch, nullptr, w, out, ridge(x));  // (1/n) Σ a'_i ⊗ s_i + λ_j V_j + μ_b V_b
}

void SoftmaxProblem::lower_jvp_impl(Vec x, Vec y, const Batch& /*batch*/, Vec w, Vec out) {
  check_layouts(x, y);
  const PetscScalar* lam = regularisers(x);
  const PetscInt K = classes_, jend = std::min(row_end_, n_features_);
  petsc::ReadView yv(y), wv(w);
  petsc::WriteView o(out);
  // (J w)_j = λ_j W_j·V_j (scalar: Σ_j λ W_j·V_j)
  double total = 0;
  for (PetscInt j = row_begin_; j < jend; ++j) {
    double s = 0;
    for (PetscInt k = 0; k < K; ++k) s += yv[(j - row_begin_) * K + k] * wv[(j - row_begin_) * K + k];
    if (options_.scalar)
      total += s;
    else
      o[j - row_begin_] = lam[j - row_begin_] * s;
  }
  if (options_.scalar) {
    const double lam0 = lam[0];
    total = detail::sum_over_ranks(comm_, total);
    if (o.size() > 0) o[0] = lam0 * total;
  }
}

TestMetrics SoftmaxProblem::evaluate_test(Vec x, Vec y) {
  if (!engine_->test()) throw NotImplemented("softmax: no test set was given");
  check_layouts(x, y);
  return engine_->evaluate(*engine_->test(), y);
}

std::optional<PetscReal> SoftmaxProblem::validation_accuracy(Vec x, Vec y) {
  check_layouts(x, y);
  return engine_->evaluate(engine_->validation(), y).accuracy;
}

}  // namespace bilevel
