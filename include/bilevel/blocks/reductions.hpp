#pragma once
/// \file Several inner products and norms in one split reduction (PETSc's VecDotBegin/VecNormBegin ...
/// End): one MPI_Allreduce for all of them instead of one each.
#include <petscvec.h>

#include <initializer_list>

namespace bilevel {

/// out = aᵀ b.
struct DotOf {
  Vec a, b;
  PetscScalar* out;
};
/// out = ||a||₂.
struct NormOf {
  Vec a;
  PetscReal* out;
};

/// Computes every product and norm listed with one reduction. Collective on the Vecs' communicator.
void reduce_together(std::initializer_list<DotOf> dots, std::initializer_list<NormOf> norms = {});

}  // namespace bilevel
