/// The built-in methods: one line each (PETSc's TaoRegisterAll). Each create_<name>() lives in
/// src/algorithms/<name>/.
#include "bilevel/core/registry.hpp"

namespace bilevel {

std::unique_ptr<Algorithm> create_aidcg();
std::unique_ptr<Algorithm> create_stocbio();

void register_builtin_algorithms(AlgorithmRegistry& r) {
  r.add("aidcg", "AID with CG on the lower Hessian (Ji et al. 2021)", create_aidcg);
  r.add("stocbio", "stochastic bilevel with Neumann series (Ji et al. 2021)", create_stocbio);
}

}  // namespace bilevel
