/// The built-in methods: one line each (PETSc's TaoRegisterAll). Each create_<name>() lives in
/// src/algorithms/<name>/.
#include "bilevel/core/registry.hpp"

namespace bilevel {

std::unique_ptr<Algorithm> create_aidcg();
std::unique_ptr<Algorithm> create_stocbio();
std::unique_ptr<Algorithm> create_lancbio();
std::unique_ptr<Algorithm> create_subbio();
std::unique_ptr<Algorithm> create_pzobo();
std::unique_ptr<Algorithm> create_bome();
std::unique_ptr<Algorithm> create_qnbo();
std::unique_ptr<Algorithm> create_nbo();
std::unique_ptr<Algorithm> create_itd();
std::unique_ptr<Algorithm> create_amigo();
std::unique_ptr<Algorithm> create_f2sa();
std::unique_ptr<Algorithm> create_soba();
std::unique_ptr<Algorithm> create_saba();
std::unique_ptr<Algorithm> create_ttsa();

void register_builtin_algorithms(AlgorithmRegistry& r) {
  r.add("aidcg", "AID with CG on the lower Hessian (Ji et al. 2021)", create_aidcg);
  r.add("stocbio", "stochastic bilevel with Neumann series (Ji et al. 2021)", create_stocbio);
  r.add("lancbio", "dynamic Lanczos Krylov-subspace hypergradient (Yang, Gao & Yuan 2025)", create_lancbio);
  r.add("subbio", "two-dimensional subspace hypergradient (Yang, Gao & Yuan 2025)", create_subbio);
  r.add("pzobo", "zeroth-order response-Jacobian hypergradient (Sow, Ji & Liang 2022)", create_pzobo);
  r.add("bome", "value-function method with a dynamic barrier (Liu et al. 2022)", create_bome);
  r.add("qnbo", "quasi-Newton lower solve + secant inverse-Hessian products (Fang et al. 2025)", create_qnbo);
  r.add("nbo",
        "inexact-Newton curvature-aware hypergradient: NBO-GD/CG, NSBO-SGD (Dong et al. 2025)",
        create_nbo);
  r.add("itd",
        "reverse-mode differentiation through K unrolled lower steps (Franceschi et al. 2017)",
        create_itd);
  r.add("amigo", "amortized implicit differentiation, AmIGO-GD/CG (Arbel & Mairal 2022)", create_amigo);
  r.add("f2sa", "fully first-order penalty method (Kwon et al. 2023)", create_f2sa);
  r.add("soba", "single-loop SOBA and MA-SOBA (Dagreou, Ablin, Vaiter & Moreau 2022)", create_soba);
  r.add("saba", "SOBA with SAGA variance reduction, and MA-SABA (Dagreou et al. 2022)", create_saba);
  r.add(
      "ttsa", "two-timescale TTSA (Hong et al. 2023) and double-loop BSA (Ghadimi & Wang 2018)", create_ttsa);
  r.set_default("aidcg");  // what -bilevel_type is when nobody chose
}

}  // namespace bilevel
