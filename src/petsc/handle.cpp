#include "bilevel/petsc/handle.hpp"

#include "bilevel/petsc/error.hpp"

namespace bilevel::petsc {

VecHandle duplicate(Vec v) {
  VecHandle out;
  BILEVEL_PETSC_CALL(VecDuplicate(v, out.out()));
  return out;
}

}  // namespace bilevel::petsc
