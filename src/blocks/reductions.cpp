#include "bilevel/blocks/reductions.hpp"

#include "bilevel/petsc/error.hpp"

namespace bilevel {

void reduce_together(std::initializer_list<DotOf> dots, std::initializer_list<NormOf> norms) {
  for (const DotOf& d : dots) BILEVEL_PETSC_CALL(VecDotBegin(d.a, d.b, d.out));
  for (const NormOf& n : norms) BILEVEL_PETSC_CALL(VecNormBegin(n.a, NORM_2, n.out));
  for (const DotOf& d : dots) BILEVEL_PETSC_CALL(VecDotEnd(d.a, d.b, d.out));
  for (const NormOf& n : norms) BILEVEL_PETSC_CALL(VecNormEnd(n.a, NORM_2, n.out));
}

}  // namespace bilevel
