#pragma once
/// \file Checkpoints: everything a run needs to continue, in one file written atomically.
///
/// What a checkpoint holds is declared, not written by hand: the solver, the upper stepper, the method and
/// the problem each register references to their persistent members in a StateRegistry once (after setup);
/// write_checkpoint and read_checkpoint then walk the registry. Distributed Vecs go through PETSc's binary
/// viewer (VecView/VecLoad with MPI-IO: every rank writes and reads its own part, and a checkpoint written
/// at one rank count loads at another); scalars, counters, small replicated arrays and text go into a
/// metadata block that rank 0 appends to the same file. Layout of FILE:
///
///     PETSc binary records of the Vecs, in registration order
///     metadata (text, one "kind name value" record per line, reals as C99 hex floats: exact)
///     8 bytes: metadata length | 8 bytes: FNV-1a hash of the metadata | 8 bytes: "BLVCKPT1"
///
/// Every Vec is also summed into a checksum that does not depend on the rank count, stored in the metadata
/// and checked after loading. A truncated or corrupted file is a one-line InputError, never a crash.
#include <petscvec.h>
#include <slepcbv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace bilevel {

class BatchSampler;
struct StepSamplers;

/// References to the members that make up an object's persistent state. Names are unique within a
/// registry (prefix them with the owner: "method.v", "upper.m"). The referenced objects must outlive the
/// registry's use. Not collective.
class StateRegistry {
 public:
  /// A distributed Vec (read back into the same Vec, which must have the same global size).
  void add(const std::string& name, Vec v);
  void add(const std::string& name, std::int64_t& value);
  void add(const std::string& name, int& value);
  void add(const std::string& name, PetscReal& value);
  void add(const std::string& name, bool& value);
  /// A small array with the same contents on every rank (rank 0's is written; every rank reads it).
  void add(const std::string& name, std::vector<PetscReal>& values);
  void add(const std::string& name, std::vector<PetscInt>& values);
  /// A counter-based sampler: its draw counter (its seed and stream come from the options).
  void add(const std::string& name, BatchSampler& sampler);
  /// A step's four samplers (names prefix + "sampler_lower", ...).
  void add(const std::string& prefix, StepSamplers& samplers);
  /// Every column of a SLEPc basis (BV), each distributed like a Vec (all columns: the active ones are
  /// recorded by the owner, e.g. as an Int).
  void add(const std::string& name, BV basis);
  /// Small replicated state that is easiest to write as text (a rank-0 string; every rank loads it), for
  /// members that are not of the kinds above. `save` must not contain a newline-free requirement: any text
  /// is escaped.
  void add_text(const std::string& name,
                std::function<std::string()> save,
                std::function<void(const std::string&)> load);

  struct Entry {
    enum class Kind { Vector, Int64, Int, Real, Bool, Reals, Ints, Sampler, Basis, Text } kind;
    std::string name;
    void* ref;
  };
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  void add_entry(Entry::Kind kind, const std::string& name, void* ref);
  std::vector<Entry> entries_;

 public:
  struct TextHooks {
    std::function<std::string()> save;
    std::function<void(const std::string&)> load;
  };

 private:
  std::deque<TextHooks> texts_;  // stable addresses for the Text entries' refs
};

/// Text facts about a run, stored in a checkpoint and compared at restart ("problem" -> "logreg",
/// "option -bilevel_seed" -> "3", ...).
using CheckpointFacts = std::map<std::string, std::string>;

/// What writing a checkpoint cost.
struct CheckpointWriteStats {
  double seconds = 0;
  std::int64_t bytes = 0;
};

/// Writes every registered entry and the facts to `path` atomically: into path.tmp, fsync'ed, then renamed
/// over path by rank 0, so the previous checkpoint stays valid until the new one is complete. An unwritable
/// path is an InputError naming it and `option`. Collective on comm.
CheckpointWriteStats write_checkpoint(MPI_Comm comm,
                                      const std::string& path,
                                      const StateRegistry& state,
                                      const CheckpointFacts& facts,
                                      const std::string& option = "--checkpoint");

/// Reads the facts of a checkpoint (the metadata only), checking that the file is complete. A missing,
/// truncated or corrupted file is an InputError naming it. Collective on comm.
CheckpointFacts read_checkpoint_facts(MPI_Comm comm, const std::string& path);

/// Reads every registered entry from `path` into the referenced members. Every entry of the registry must be
/// in the file with the same kind and size (else an InputError saying which), and every Vec's checksum must
/// match. Collective on comm.
void read_checkpoint(MPI_Comm comm, const std::string& path, const StateRegistry& state);

/// "NAME, SIZE bytes" of a file (its base name and size), a fact that tells data files apart without reading
/// them; "NAME (not found)" when it cannot be read. Not collective.
std::string file_fingerprint(const std::string& path);

/// A checksum of v's entries that does not depend on how v is distributed: Σ_i mix(i, bits(v_i)) mod 2⁶⁴.
/// Collective on v's communicator.
std::uint64_t distribution_free_checksum(Vec v);

}  // namespace bilevel
