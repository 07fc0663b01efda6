#include "bilevel/problems/factory.hpp"

#include "bilevel/data/idx.hpp"
#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/logging.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/problems/hyperclean.hpp"
#include "bilevel/problems/logreg.hpp"
#include "bilevel/problems/quadratic.hpp"
#include "bilevel/problems/softmax.hpp"
#include "data_files.hpp"

namespace bilevel {

std::vector<std::string> problem_names() {
  return {"quadratic", "logreg", "softmax", "hyperclean"};
}

std::shared_ptr<BilevelProblem> make_problem(MPI_Comm comm,
                                             const std::string& name,
                                             const ProblemInputs& in) {
  if (name == "quadratic") {
    petsc::OptionsReader opts(comm, "bilevel_quadratic_", "Problem quadratic (-bilevel_quadratic_*)");
    return std::make_shared<QuadraticProblem>(comm, QuadraticOptions::from(opts, in.seed));
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
  detail::data_index_base_option(comm);
}

}  // namespace bilevel
