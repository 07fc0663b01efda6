#pragma once
/// \file Problems by name, for the programs (bilevel-solve, bilevel-bench).
#include <memory>
#include <string>
#include <vector>

#include "bilevel/core/problem.hpp"

namespace bilevel {

/// What the command line says about data (DESIGN.md flags).
struct ProblemInputs {
  std::string train, validation, test;  ///< --train, --validation, --test (LIBSVM or IDX)
  std::string dataset;                  ///< --dataset fashion-mnist
  std::uint64_t seed = 0;               ///< --seed
};

/// Creates problem `name` (one of problem_names()) from the inputs and its -bilevel_<name>_*
/// options. Bad names or missing files are InputErrors naming the flag. Collective on comm.
std::shared_ptr<BilevelProblem> make_problem(MPI_Comm comm,
                                             const std::string& name,
                                             const ProblemInputs& inputs);
std::vector<std::string> problem_names();
/// Reads the -bilevel_<name>_* options of every problem but quadratic (logreg, softmax, hyperclean,
/// finite_sum_quadratic, spectral_logsumexp, hyper_representation, multitask) without loading or generating
/// any data, so that -help lists them; their values are validated as when a run reads them. Collective.
void read_data_problem_options(MPI_Comm comm);

}  // namespace bilevel
