#pragma once
/// \file SAGA variance reduction (Defazio, Bach & Lacoste-Julien 2014) as the bilevel methods use it: SABA
/// and NSBO-SAGA (algorithms.md §3.6, §2.2).
///
/// A level's n samples are split into n_b = ⌈n / b⌉ fixed minibatches ("slots") of b consecutive global
/// indices (the last one shorter); a deterministic problem (n = 0) has one slot, the full batch. An oracle
/// o(·; B_i) evaluated on slot i is replaced by the SAGA direction
///     d = o(·; B_i) − m_i + m̄,      m̄ = (1/n_b) Σ_j m_j,
/// after which m̄ <- m̄ + (o(·; B_i) − m_i)/n_b and m_i <- o(·; B_i). With one slot d = o (no reduction).
/// The memory m_j starts at zero (benchopt's SABA). Memory: n_b vectors of the oracle's layout per table.
#include <petscvec.h>
#include <slepcbv.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "bilevel/core/batch_sampler.hpp"
#include "bilevel/core/checkpoint.hpp"
#include "bilevel/core/problem.hpp"
#include "bilevel/petsc/handle.hpp"

namespace bilevel {

/// The fixed partition of a level's samples into slots and the uniform draw of one slot per call (a
/// counter-based sampler: the same slot on every rank and at every rank count). Not collective.
class SagaSlots {
 public:
  /// `n` samples (0: deterministic, one slot), minibatches of `batch_size` (0 or >= n: one slot, the full
  /// set); slot draws come from stream `stream` of `seed`.
  void setup(PetscInt n, PetscInt batch_size, std::uint64_t seed, SamplerStream stream);
  PetscInt slots() const { return slots_; }
  /// Draws the next slot uniformly in [0, slots) and returns it; batch() is then its minibatch.
  PetscInt draw();
  /// The minibatch of the last drawn slot (full for one slot); valid until the next draw.
  Batch batch() const;
  /// Registers the draw counter for checkpoints. Not collective.
  void declare_state(StateRegistry& state, const std::string& name);

 private:
  PetscInt n_ = 0, size_ = 0, slots_ = 1, slot_ = 0;
  BatchSampler sampler_;
  std::vector<PetscInt> indices_;
};

/// One SAGA memory table: n_b vectors (a SLEPc BV in the oracle's layout) and their mean. Collective on the
/// layout's communicator (correct, setup); the arithmetic is element-wise, so the result does not depend on
/// the rank count.
class SagaTable {
 public:
  /// Allocates `slots` zero vectors like `layout` and the zero mean.
  void setup(Vec layout, PetscInt slots);
  /// fresh <- fresh − m_slot + m̄ (the SAGA direction) and updates m̄ and m_slot with the old `fresh`.
  void correct(PetscInt slot, Vec fresh);
  PetscInt slots() const { return static_cast<PetscInt>(written_.size()); }
  /// Slots written at least once. Not collective.
  PetscInt filled() const;
  /// Bytes of the table (slots + mean) summed over the ranks. Not collective.
  std::int64_t bytes() const { return bytes_; }
  /// Registers the vectors, the mean and the written flags for checkpoints. Not collective.
  void declare_state(StateRegistry& state, const std::string& name);

 private:
  petsc::BvHandle memory_;
  petsc::VecHandle mean_, old_;
  std::vector<PetscInt> written_;
  std::int64_t bytes_ = 0;
};

/// Bytes n_b tables of the given global lengths would hold (for a guard before allocating). Not collective.
std::int64_t saga_bytes(PetscInt slots, std::initializer_list<PetscInt> lengths);

}  // namespace bilevel
