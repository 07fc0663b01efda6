#include "bilevel/problems/factory.hpp"

#include "bilevel/data/idx.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/problems/finite_sum_quadratic.hpp"
#include "bilevel/problems/hyper_representation.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "bilevel/problems/logreg.hpp"
#include "bilevel/problems/multitask.hpp"
#include "bilevel/problems/quadratic.hpp"
#include "bilevel/problems/softmax.hpp"
#include "bilevel/problems/spectral_logsumexp.hpp"
#include "data_files.hpp"

namespace bilevel {

std::vector<std::string> problem_names() {
  return {"quadratic",
          "logreg",
          "softmax",
          "hyperclean",
          "finite_sum_quadratic",
          "spectral_logsumexp",
          "hyper_representation",
          "multitask"};
}

std::shared_ptr<BilevelProblem> make_problem(MPI_Comm comm,
                                             const std::string& name,
                                             const ProblemInputs& in) {
  if (name == "quadratic") {
    petsc::OptionsReader opts(comm, "bilevel_quadratic_", "Problem quadratic (-bilevel_quadratic_*)");
    return std::make_shared<QuadraticProblem>(comm, QuadraticOptions::from(opts, in.seed));
  }
  if (name == "finite_sum_quadratic") {
    petsc::OptionsReader opts(comm,
                              "bilevel_finite_sum_quadratic_",
                              "Problem finite_sum_quadratic (-bilevel_finite_sum_quadratic_*)");
    return std::make_shared<FiniteSumQuadraticProblem>(comm, FiniteSumQuadraticOptions::from(opts, in.seed));
  }
  if (name == "spectral_logsumexp") {
    petsc::OptionsReader opts(
        comm, "bilevel_spectral_logsumexp_", "Problem spectral_logsumexp (-bilevel_spectral_logsumexp_*)");
    return std::make_shared<SpectralLogsumexpProblem>(comm, SpectralLogsumexpOptions::from(opts, in.seed));
  }
  if (name == "hyper_representation") {
    petsc::OptionsReader opts(comm,
                              "bilevel_hyper_representation_",
                              "Problem hyper_representation (-bilevel_hyper_representation_*)");
    return std::make_shared<HyperRepresentationProblem>(comm,
                                                        HyperRepresentationOptions::from(opts, in.seed));
  }
  if (name == "multitask") {
    petsc::OptionsReader opts(comm, "bilevel_multitask_", "Problem multitask (-bilevel_multitask_*)");
    MultitaskOptions o = MultitaskOptions::from(opts, in.seed);
    if (!in.dataset.empty() && in.dataset != "fashion-mnist")
      throw InputError("bad value '" + in.dataset + "' for --dataset: expected fashion-mnist");
    if (!in.train.empty())
      throw InputError("problem multitask reads no --train file: use --dataset fashion-mnist");
    if (!in.dataset.empty()) o.source = EpisodeSource::FashionMnist;
    petsc::ScopedEvent ev(petsc::events().load_data);
    return std::make_shared<MultitaskProblem>(comm, o);
  }
  if (name == "logreg") {
    if (in.train.empty()) throw InputError("problem logreg needs --train FILE (LIBSVM, binary labels)");
    petsc::ScopedEvent ev(petsc::events().load_data);
    return LogregProblem::from_files(
        comm, in.train, in.validation, in.test, LogregOptions::from_options(comm));
  }
  if (name == "softmax") {
    if (in.train.empty()) throw InputError("problem softmax needs --train FILE (LIBSVM or IDX)");
    petsc::ScopedEvent ev(petsc::events().load_data);
    return SoftmaxProblem::from_files(
        comm, in.train, in.validation, in.test, SoftmaxOptions::from_options(comm));
  }
  if (name == "hyperclean") {
    HypercleanOptions o = HypercleanOptions::from_options(comm);
    petsc::ScopedEvent ev(petsc::events().load_data);
    if (!in.dataset.empty() && in.dataset != "fashion-mnist")
      throw InputError("bad value '" + in.dataset + "' for --dataset: expected fashion-mnist");
    if (in.train.empty()) return HypercleanProblem::fashion_mnist(comm, o);
    if (!in.dataset.empty()) throw InputError("give either --dataset or --train, not both");
    return HypercleanProblem::from_files(comm, in.train, in.validation, in.test, o);
  }
  std::string list;
  for (const auto& n : problem_names()) list += (list.empty() ? "" : ", ") + n;
  throw InputError("unknown problem '" + name + "' for --problem: expected one of " + list);
}

void read_data_problem_options(MPI_Comm comm) {
  LogregOptions::from_options(comm);
  SoftmaxOptions::from_options(comm);
  HypercleanOptions::from_options(comm);
  // the generated problems other than quadratic (quadratic's options are read when -help builds it)
  petsc::OptionsReader f(comm,
                         "bilevel_finite_sum_quadratic_",
                         "Problem finite_sum_quadratic (-bilevel_finite_sum_quadratic_*)");
  FiniteSumQuadraticOptions::from(f, 0);
  petsc::OptionsReader s(
      comm, "bilevel_spectral_logsumexp_", "Problem spectral_logsumexp (-bilevel_spectral_logsumexp_*)");
  SpectralLogsumexpOptions::from(s, 0);
  petsc::OptionsReader h(comm,
                         "bilevel_hyper_representation_",
                         "Problem hyper_representation (-bilevel_hyper_representation_*)");
  HyperRepresentationOptions::from(h, 0);
  petsc::OptionsReader m(comm, "bilevel_multitask_", "Problem multitask (-bilevel_multitask_*)");
  MultitaskOptions::from(m, 0).validate();
  detail::data_index_base_option(comm);
}

}  // namespace bilevel
