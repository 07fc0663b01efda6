#include "small_dense.hpp"

// clang-format off
#include <petscsys.h>
#include <petscblaslapack.h>  // after petscsys.h, which it needs
// clang-format on

namespace bilevel::detail {

std::pair<double, double> symmetric_eigen_range(std::vector<double> a, PetscInt n) {
  if (n < 1) return {0, 0};
  PetscBLASInt bn = 0, info = 0, lwork = -1;
  BILEVEL_PETSC_CALL(PetscBLASIntCast(n, &bn));
  std::vector<double> w(static_cast<std::size_t>(n));
  double query = 0;
  LAPACKsyev_("N", "L", &bn, a.data(), &bn, w.data(), &query, &lwork, &info);
  lwork = static_cast<PetscBLASInt>(query);
  std::vector<double> work(static_cast<std::size_t>(std::max<PetscBLASInt>(lwork, 1)));
  LAPACKsyev_("N", "L", &bn, a.data(), &bn, w.data(), work.data(), &lwork, &info);
  if (info != 0) throw Error("symmetric_eigen_range: LAPACK syev failed (info " + std::to_string(info) + ")");
  return {w.front(), w.back()};  // ascending
}

}  // namespace bilevel::detail
