#pragma once
/// \file Scoped access to the local part of a Vec (PISM's VecArray): get in the constructor, restore in
/// the destructor. Not collective.
#include <petscvec.h>

#include <span>

#include "bilevel/petsc/error.hpp"

namespace bilevel::petsc {

class ReadView {
 public:
  explicit ReadView(Vec v) : v_(v) {
    BILEVEL_PETSC_CALL(VecGetArrayRead(v_, &data_));
    BILEVEL_PETSC_CALL(VecGetLocalSize(v_, &n_));
  }
  ReadView(const ReadView&) = delete;
  ReadView& operator=(const ReadView&) = delete;
  ~ReadView() { (void)VecRestoreArrayRead(v_, &data_); }
  const PetscScalar& operator[](PetscInt i) const { return data_[i]; }
  const PetscScalar* data() const { return data_; }
  PetscInt size() const { return n_; }
  std::span<const PetscScalar> span() const { return {data_, static_cast<std::size_t>(n_)}; }

 private:
  Vec v_;
  const PetscScalar* data_ = nullptr;
  PetscInt n_ = 0;
};

class WriteView {
 public:
  explicit WriteView(Vec v) : v_(v) {
    BILEVEL_PETSC_CALL(VecGetArray(v_, &data_));
    BILEVEL_PETSC_CALL(VecGetLocalSize(v_, &n_));
  }
  WriteView(const WriteView&) = delete;
  WriteView& operator=(const WriteView&) = delete;
  ~WriteView() { (void)VecRestoreArray(v_, &data_); }
  PetscScalar& operator[](PetscInt i) { return data_[i]; }
  PetscScalar* data() { return data_; }
  PetscInt size() const { return n_; }
  std::span<PetscScalar> span() { return {data_, static_cast<std::size_t>(n_)}; }

 private:
  Vec v_;
  PetscScalar* data_ = nullptr;
  PetscInt n_ = 0;
};

}  // namespace bilevel::petsc
