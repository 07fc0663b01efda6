#include "bilevel/problems/factory.hpp"

#include "bilevel/petsc/error.hpp"
#include "bilevel/petsc/options.hpp"
#include "bilevel/problems/quadratic.hpp"

namespace bilevel {

std::vector<std::string> problem_names() { return {"quadratic"}; }

std::shared_ptr<BilevelProblem> make_problem(MPI_Comm comm, const std::string& name, const ProblemInputs& in) {
  petsc::OptionsReader opts(comm, "bilevel_" + name + "_", "Problem " + name + " (-bilevel_" + name + "_*)");
  if (name == "quadratic") return std::make_shared<QuadraticProblem>(comm, QuadraticOptions::from(opts, in.seed));
  std::string list;
  for (const auto& n : problem_names()) list += (list.empty() ? "" : ", ") + n;
  throw InputError("unknown problem '" + name + "' for --problem: expected one of " + list);
}

}  // namespace bilevel
