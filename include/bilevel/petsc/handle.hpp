#pragma once
/// \file Move-only owning handles on PETSc/SLEPc objects (libMesh's shape, deal.II's borrow).
#include <petscksp.h>
#include <petscmat.h>
#include <petscvec.h>
#include <slepcbv.h>
#include <slepceps.h>

#include <utility>

namespace bilevel::petsc {

template <typename T>
struct Traits;
template <>
struct Traits<Vec> {
  static PetscErrorCode destroy(Vec* v) { return VecDestroy(v); }
};
template <>
struct Traits<Mat> {
  static PetscErrorCode destroy(Mat* m) { return MatDestroy(m); }
};
template <>
struct Traits<KSP> {
  static PetscErrorCode destroy(KSP* k) { return KSPDestroy(k); }
};
template <>
struct Traits<IS> {
  static PetscErrorCode destroy(IS* i) { return ISDestroy(i); }
};
template <>
struct Traits<VecScatter> {
  static PetscErrorCode destroy(VecScatter* s) { return VecScatterDestroy(s); }
};
template <>
struct Traits<PetscViewer> {
  static PetscErrorCode destroy(PetscViewer* v) { return PetscViewerDestroy(v); }
};
template <>
struct Traits<EPS> {
  static PetscErrorCode destroy(EPS* e) { return EPSDestroy(e); }
};
template <>
struct Traits<BV> {
  static PetscErrorCode destroy(BV* b) { return BVDestroy(b); }
};

/// Owns one reference to a PETSc object; the destructor calls XXXDestroy(), so destruction is collective
/// on the object's communicator, exactly like the C call it replaces. Destruction errors are ignored
/// (a destructor may run during stack unwinding).
template <typename T>
class Handle {
 public:
  Handle() noexcept = default;
  /// Adopts a reference we own (fresh from XXXCreate). Not collective.
  explicit Handle(T obj) noexcept : obj_(obj) {}
  /// Shares an object owned elsewhere (takes a reference). Not collective.
  static Handle borrow(T obj) {
    if (obj) (void)PetscObjectReference(reinterpret_cast<PetscObject>(obj));
    return Handle(obj);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& other) noexcept : obj_(std::exchange(other.obj_, nullptr)) {}
  Handle& operator=(Handle&& other) noexcept {
    Handle tmp(std::move(other));
    std::swap(obj_, tmp.obj_);
    return *this;
  }
  ~Handle() { reset(); }

  /// Releases the reference. Collective on the object's communicator.
  void reset() noexcept {
    if (obj_) (void)Traits<T>::destroy(&obj_);
    obj_ = nullptr;
  }
  T get() const noexcept { return obj_; }
  operator T() const noexcept { return obj_; }
  /// For the XXXCreate(comm, &obj) idiom: VecCreate(comm, v.out()).
  T* out() noexcept {
    reset();
    return &obj_;
  }
  explicit operator bool() const noexcept { return obj_ != nullptr; }

 private:
  T obj_ = nullptr;
};

using VecHandle = Handle<Vec>;
using MatHandle = Handle<Mat>;
using KspHandle = Handle<KSP>;
using IsHandle = Handle<IS>;
using ScatterHandle = Handle<VecScatter>;
using ViewerHandle = Handle<PetscViewer>;
using EpsHandle = Handle<EPS>;
using BvHandle = Handle<BV>;

/// VecDuplicate as a handle. Collective.
VecHandle duplicate(Vec v);

}  // namespace bilevel::petsc
