#include "bilevel/blocks/saga.hpp"

#include <algorithm>
#include <numeric>

#include "bilevel/petsc/error.hpp"

namespace bilevel {

void SagaSlots::setup(PetscInt n, PetscInt batch_size, std::uint64_t seed, SamplerStream stream) {
  n_ = n;
  size_ = batch_size;
  slots_ = (n > 0 && batch_size > 0 && batch_size < n) ? (n + batch_size - 1) / batch_size : 1;
  slot_ = 0;
  sampler_ = BatchSampler(seed, stream);
}

PetscInt SagaSlots::draw() {
  if (slots_ == 1) return slot_ = 0;
  // one index of [0, n_b) from the counter-based sampler (a "batch" of one slot)
  slot_ = sampler_.next(slots_, 1).indices[0];
  return slot_;
}

Batch SagaSlots::batch() const {
  if (slots_ == 1) return Batch::all();
  auto& idx = const_cast<std::vector<PetscInt>&>(indices_);
  const PetscInt lo = slot_ * size_, hi = std::min(n_, lo + size_);
  idx.resize(static_cast<std::size_t>(hi - lo));
  std::iota(idx.begin(), idx.end(), lo);  // B_i = {i b, ..., min((i+1) b, n) − 1}
  return Batch::of(idx);
}

void SagaSlots::declare_state(StateRegistry& state, const std::string& name) {
  state.add(name, sampler_);
}

std::int64_t saga_bytes(PetscInt slots, std::initializer_list<PetscInt> lengths) {
  std::int64_t total = 0;
  for (PetscInt n : lengths)
    total += (static_cast<std::int64_t>(slots) + 1) * n * static_cast<std::int64_t>(sizeof(PetscScalar));
  return total;
}

void SagaTable::setup(Vec layout, PetscInt slots) {
  PetscInt n = 0;
  BILEVEL_PETSC_CALL(VecGetSize(layout, &n));
  BILEVEL_PETSC_CALL(BVCreate(PetscObjectComm(reinterpret_cast<PetscObject>(layout)), memory_.out()));
  BILEVEL_PETSC_CALL(BVSetSizesFromVec(memory_, layout, slots));
  BILEVEL_PETSC_CALL(BVSetType(memory_, BVSVEC));
  BILEVEL_PETSC_CALL(BVSetActiveColumns(memory_, 0, slots));
  BILEVEL_PETSC_CALL(BVScale(memory_, 0.0));  // m_j = 0
  mean_ = petsc::duplicate(layout);
  old_ = petsc::duplicate(layout);
  BILEVEL_PETSC_CALL(VecSet(mean_, 0.0));
  written_.assign(static_cast<std::size_t>(slots), 0);
  bytes_ = saga_bytes(slots, {n});
}

void SagaTable::correct(PetscInt slot, Vec fresh) {
  written_[static_cast<std::size_t>(slot)] = 1;
  if (written_.size() == 1) return;  // one slot: m̄ = m_0 and d = o exactly
  const PetscReal inv = 1.0 / static_cast<PetscReal>(written_.size());
  Vec m = nullptr;
  BILEVEL_PETSC_CALL(BVGetColumn(memory_, slot, &m));
  BILEVEL_PETSC_CALL(VecCopy(m, old_));   // m_i
  BILEVEL_PETSC_CALL(VecCopy(fresh, m));  // m_i <- o
  BILEVEL_PETSC_CALL(BVRestoreColumn(memory_, slot, &m));
  BILEVEL_PETSC_CALL(VecAYPX(old_, -1.0, fresh));         // δ = o − m_i
  BILEVEL_PETSC_CALL(VecWAXPY(fresh, 1.0, old_, mean_));  // d = δ + m̄ = o − m_i + m̄
  BILEVEL_PETSC_CALL(VecAXPY(mean_, inv, old_));          // m̄ <- m̄ + δ / n_b
}

PetscInt SagaTable::filled() const {
  return static_cast<PetscInt>(std::count(written_.begin(), written_.end(), 1));
}

void SagaTable::declare_state(StateRegistry& state, const std::string& name) {
  state.add(name + ".memory", memory_.get());
  state.add(name + ".mean", mean_.get());
  state.add(name + ".written", written_);
}

}  // namespace bilevel
