#pragma once
/// \file Private to `logreg`: the steady-state sparse Hessian-vector kernels over the CSR rows of one rank,
///
///   out += scale · [A 1]ᵀ D [A 1] v,   D = diag(d),
///
/// in three memory layouts of the work arrays (the matrix itself is never copied or reordered, so every
/// other reader of the CSR arrays stays correct), each with a portable loop and an AVX-512 loop chosen at
/// run time from the CPU (never from the build machine's -march). docs/performance.md has the measurements
/// behind the rule in choose_hvp_kernel.
#include <petscsys.h>

#include <cstdint>
#include <vector>

namespace bilevel::detail {

/// The kernel of one HVP pass. `Fused`: per row t = a_i·v, then out += t a_i, with v and out separate
/// arrays (two random cache lines per nonzero). `Interleaved`: the same pass on one array of pairs
/// (v_j, out_j), so the scatter hits the line the gather just brought in (one random line per nonzero).
/// `Panel`: rows in panels of kPanelRows; per panel first all t_i = a_i·v (only v is touched at random),
/// then all out += t_i a_i (only out): each phase keeps one model-sized array in L2, the panel's rows
/// are read again from cache.
enum class HvpKernel { Auto, Fused, Interleaved, Panel };

/// Rows per panel of HvpKernel::Panel (their CSR part, about 0.5 kB per row at 40 nonzeros, stays in L2/L3
/// between the two phases).
inline constexpr PetscInt kPanelRows = 2048;

/// "auto", "fused", "interleaved", "panel". Not collective.
const char* to_string(HvpKernel k);

/// Whether this CPU runs the AVX-512 (F + VL) loops; read once. Not collective.
bool cpu_has_avx512();

/// Whether every row's column indices strictly increase (no duplicate column in a row), which the vector
/// scatter needs. One pass over the indices. Not collective.
bool rows_strictly_increasing(PetscInt rows, const PetscInt* ia, const PetscInt* ja);

/// The kernel `requested` resolves to for a model part of `width` entries (v and out are `width` doubles
/// each): Auto picks Fused while v and out together fit in kFusedModelBytes, else Interleaved. Not
/// collective.
HvpKernel choose_hvp_kernel(HvpKernel requested, PetscInt width);

/// v and out together up to this many bytes stay in L2 next to the streamed rows: Fused (measured in
/// docs/performance.md, "Sparse HVP kernels").
inline constexpr std::int64_t kFusedModelBytes = std::int64_t{1} << 20;

/// Whether this CPU's AVX-512 gathers and scatters beat the portable loops: measured yes on Intel, no on AMD
/// EPYC with AVX-512 (1.2–1.9× slower at 200k and 22 columns; docs/performance.md, "The same kernels on AMD
/// EPYC"). Read once. Not collective.
bool cpu_gathers_pay();

/// Whether `kernel` (as chosen) runs its AVX-512 loop: `allowed` (the option, the CPU and rows without
/// repeated columns) and, under Auto, only where cpu_gathers_pay(), then Interleaved always and Fused from
/// kSimdRowNonzeros nonzeros per row on average (shorter rows spend the vector loop in its masked tail). An
/// explicit -bilevel_logreg_hvp_kernel takes the AVX-512 loop whenever allowed. Not collective.
bool use_simd(HvpKernel requested, HvpKernel kernel, bool allowed, double nonzeros_per_row);

/// Mean nonzeros per row from which Auto's Fused kernel takes the AVX-512 loop (docs/performance.md).
inline constexpr double kSimdRowNonzeros = 16;

/// Work arrays of the kernels (reused across calls).
struct HvpWork {
  std::vector<PetscScalar> pairs;  ///< Interleaved: (v_j, out_j)
  std::vector<PetscScalar> t;      ///< Panel: t_i of one panel
};

/// One pass of `kernel` (not Auto): out[j] += scale Σ_i d_i (a_i·v + v_c) a_ij for j < n_features and, with
/// `intercept`, out[n_features] += scale Σ_i d_i (a_i·v + v_c), v_c = v[n_features]. `simd` selects the
/// AVX-512 loop (caller checks cpu_has_avx512 and rows_strictly_increasing). Equal to the Fused scalar loop
/// up to the order of the additions. Not collective.
void logistic_hvp(HvpKernel kernel,
                  bool simd,
                  PetscInt rows,
                  const PetscInt* ia,
                  const PetscInt* ja,
                  const PetscScalar* a,
                  const PetscReal* d,
                  PetscReal scale,
                  const PetscScalar* v,
                  PetscInt n_features,
                  bool intercept,
                  PetscScalar* out,
                  HvpWork& work);

}  // namespace bilevel::detail
