#pragma once
/// \file Typed access to the PETSc options database under a prefix, with -help lines and validation
/// messages that name the option and the allowed values.
#include <petscsys.h>
#include <petscviewer.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bilevel/petsc/handle.hpp"

namespace bilevel::petsc {

/// Reads options `-<prefix><name>` from the PETSc options database. When -help is given, each read prints
/// one line "  -<prefix><name> <default>: <help>" on rank 0 of comm, so our options appear in -help.
/// A value that does not parse, or violates a bound, throws InputError naming the option and the allowed
/// values; an integer is never wrapped: a value outside the type's range (PetscInt is 32-bit in Debian's
/// PETSc) is such an error. Booleans take PETSc's spellings in any case (true/false, yes/no, on/off, 1/0;
/// a bare key is true). Every key read is remembered for known_option_names(). Collective on comm (every
/// rank must read the same keys in the same order).
class OptionsReader {
 public:
  OptionsReader(MPI_Comm comm, std::string prefix, std::string title = "");

  PetscReal real(std::string_view name,
                 PetscReal def,
                 std::string_view help,
                 std::optional<PetscReal> min = std::nullopt,
                 std::optional<PetscReal> max = std::nullopt);
  /// An integer in [min, max] ∩ [PETSC_MIN_INT, PETSC_MAX_INT].
  PetscInt integer(std::string_view name,
                   PetscInt def,
                   std::string_view help,
                   std::optional<PetscInt> min = std::nullopt,
                   std::optional<PetscInt> max = std::nullopt);
  /// A 64-bit integer in [min, max] (iteration budgets, counts that may exceed PetscInt).
  std::int64_t integer64(std::string_view name,
                         std::int64_t def,
                         std::string_view help,
                         std::optional<std::int64_t> min = std::nullopt,
                         std::optional<std::int64_t> max = std::nullopt);
  /// An unsigned 64-bit integer in [0, 2^64 − 1] (seeds).
  std::uint64_t unsigned64(std::string_view name, std::uint64_t def, std::string_view help);
  bool boolean(std::string_view name, bool def, std::string_view help);
  /// A boolean whose default is a rule the caller applies once it knows the problem and the batch: -help
  /// shows `<auto>` (or the tuned default), `help` states the rule. nullopt when neither the database nor the
  /// tuned defaults give the option, or when its value is `auto`; else the boolean (PETSc's spellings).
  std::optional<bool> boolean_or_auto(std::string_view name, std::string_view help);
  std::string string(std::string_view name, std::string_view def, std::string_view help);
  /// One of `choices`; anything else is an InputError listing them.
  std::string choice(std::string_view name,
                     std::string_view def,
                     const std::vector<std::string>& choices,
                     std::string_view help);
  /// A viewer option, PETSc's -xxx_view convention: absent or a false spelling (false/no/off/0) → nullopt;
  /// bare or a true spelling → ASCII on stdout of comm; else PetscOptionsGetViewer's
  /// TYPE[:FILE[:FORMAT[:MODE]]] (ascii:out.txt, ascii::ascii_info_detail, ascii:trace.csv:ascii_csv). An
  /// unknown type or format is an InputError naming the option.
  struct Viewer {
    ViewerHandle viewer;
    PetscViewerFormat format = PETSC_VIEWER_DEFAULT;
  };
  std::optional<Viewer> viewer(std::string_view name, std::string_view help);
  /// True if the option is given: present in the database, or among the defaults of set_defaults (a tuned
  /// value replaces the code's default, so a rule that applies "unless given" yields to it too).
  bool given(std::string_view name) const;
  /// Defaults that replace the code's for keys absent from the database (name without prefix → value as
  /// it would be typed): the tuned settings of a (problem, method) pair (core/tuned_settings.hpp). They are
  /// validated like typed values and shown as the defaults in -help. Not collective.
  using Defaults = std::map<std::string, std::string, std::less<>>;
  void set_defaults(Defaults defaults) { defaults_ = std::move(defaults); }

  const std::string& prefix() const { return prefix_; }
  /// Every key this reader and the readers made from it by sub() have read so far ("-bilevel_max_it"), so a
  /// caller can tell which of its defaults no reader asked for. Not collective.
  const std::set<std::string>& keys_read() const { return *keys_read_; }
  /// Another reader on prefix + sub (e.g. "bilevel_" + "qnbo_"), with the defaults whose names start with
  /// sub.
  OptionsReader sub(std::string_view sub, std::string title = "") const;

 private:
  std::string key(std::string_view name) const;
  /// The value given for `name`: from the database, else from the defaults; nullopt when neither has it.
  std::optional<std::string> value(std::string_view name) const;
  /// The default shown by -help: the override from set_defaults, else the code's.
  std::string shown_default(std::string_view name, const std::string& code_default) const;
  void help_line(std::string_view name, const std::string& def, std::string_view help) const;
  /// The integer given for `name` (nullopt: absent), checked against [lo, hi]; T is a 64-bit type.
  template <typename T>
  std::optional<T> parse_integer(std::string_view name, T lo, T hi) const;
  MPI_Comm comm_;
  std::string prefix_;
  std::string title_;
  bool help_ = false;
  Defaults defaults_;
  std::shared_ptr<std::set<std::string>> keys_read_ =
      std::make_shared<std::set<std::string>>();  // shared by subs
};

/// The options prefix of the object being solved or configured (BilevelSolver::set_options_prefix), "" when
/// none: objects made inside it (KSPs, EPS, BVs, Mats) and fixed-prefix readers put it before their own
/// prefix, as PETSc's sub-objects inherit their parent's (`-a_bilevel_hyper_ksp_rtol` for prefix "a_").
/// Set for the duration of a scope by ScopedOptionsPrefix. Not collective.
const std::string& options_prefix();
/// options_prefix() + own: the prefix an object made now should take. Not collective.
std::string prefixed(std::string_view own);

/// Makes `prefix` the options_prefix() until the end of the scope (then the previous one again). Not
/// collective.
class ScopedOptionsPrefix {
 public:
  explicit ScopedOptionsPrefix(std::string prefix);
  ~ScopedOptionsPrefix();
  ScopedOptionsPrefix(const ScopedOptionsPrefix&) = delete;
  ScopedOptionsPrefix& operator=(const ScopedOptionsPrefix&) = delete;

 private:
  std::string previous_;
};

/// Every option name (with its leading dash) that an OptionsReader of this process has read, present in
/// the database or not: the options the program knows, for suggestions. Not collective.
std::vector<std::string> known_option_names();

/// Options in the database whose names start with `-<prefix>` and that nothing has read (PETSc's
/// PetscOptionsUsed), sorted, with their leading dash. Not collective.
std::vector<std::string> unused_options(std::string_view prefix);

/// The known option name (known_option_names) closest to `name` by edit distance, when it is within
/// max(2, length/5) edits; else empty. Not collective.
std::string closest_known_option(std::string_view name);

}  // namespace bilevel::petsc
