/// \file `logreg`'s steady-state sparse HVP kernels (logreg_kernels.hpp): out += scale [A 1]ᵀ D [A 1] v in
/// the Fused, Interleaved and Panel layouts, portable loops and AVX-512 loops behind a run-time CPU check.
#include "logreg_kernels.hpp"

#include <algorithm>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BILEVEL_HAVE_AVX512_LOOPS 1
#define BILEVEL_AVX512 __attribute__((target("avx512f,avx512vl")))
#else
#define BILEVEL_HAVE_AVX512_LOOPS 0
#endif

#include "bilevel/problems/logreg.hpp"

namespace bilevel::detail {

const char* to_string(HvpKernel k) {
  switch (k) {
    case HvpKernel::Auto:
      return "auto";
    case HvpKernel::Fused:
      return "fused";
    case HvpKernel::Interleaved:
      return "interleaved";
    case HvpKernel::Panel:
      return "panel";
  }
  return "?";
}

bool cpu_has_avx512() {
#if BILEVEL_HAVE_AVX512_LOOPS
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }();
  return has && sizeof(PetscInt) == 4;
#else
  return false;
#endif
}

bool rows_strictly_increasing(PetscInt rows, const PetscInt* ia, const PetscInt* ja) {
  for (PetscInt i = 0; i < rows; ++i)
    for (PetscInt p = ia[i] + 1; p < ia[i + 1]; ++p)
      if (ja[p] <= ja[p - 1]) return false;
  return true;
}

HvpKernel choose_hvp_kernel(HvpKernel requested, PetscInt width) {
  if (requested != HvpKernel::Auto) return requested;
  const std::int64_t model_bytes = 2 * static_cast<std::int64_t>(width) * 8;
  return model_bytes <= kFusedModelBytes ? HvpKernel::Fused : HvpKernel::Interleaved;
}

bool cpu_gathers_pay() {
#if BILEVEL_HAVE_AVX512_LOOPS
  static const bool pay = [] {
    __builtin_cpu_init();
    return !__builtin_cpu_is("amd");
  }();
  return pay;
#else
  return false;
#endif
}

bool use_simd(HvpKernel requested, HvpKernel kernel, bool allowed, double nonzeros_per_row) {
  if (!allowed) return false;
  if (requested != HvpKernel::Auto) return true;
  if (!cpu_gathers_pay()) return false;
  return kernel == HvpKernel::Interleaved || nonzeros_per_row >= kSimdRowNonzeros;
}

namespace {

// ---- portable loops ------------------------------------------------------------------------------------

// Interleaved: p[2j] = v_j, p[2j + 1] = out_j; t_i = d_i scale (a_i·v + v_c), out += t_i a_i. Returns Σ t_i.
PetscScalar interleaved_scalar(PetscInt rows,
                               const PetscInt* ia,
                               const PetscInt* ja,
                               const PetscScalar* a,
                               const PetscReal* d,
                               PetscReal scale,
                               PetscScalar vc,
                               PetscScalar* pairs) {
  PetscScalar tc = 0;
  for (PetscInt i = 0; i < rows; ++i) {
    const PetscInt begin = ia[i], end = ia[i + 1];
    PetscScalar t = vc;
    for (PetscInt p = begin; p < end; ++p) t += a[p] * pairs[2 * static_cast<std::size_t>(ja[p])];
    t *= scale * d[i];
    for (PetscInt p = begin; p < end; ++p) pairs[2 * static_cast<std::size_t>(ja[p]) + 1] += t * a[p];
    tc += t;
  }
  return tc;
}

// Panel: per panel of rows, t_i = d_i scale (a_i·v + v_c) for all its rows, then out += t_i a_i.
PetscScalar panel_scalar(PetscInt rows,
                         const PetscInt* ia,
                         const PetscInt* ja,
                         const PetscScalar* a,
                         const PetscReal* d,
                         PetscReal scale,
                         PetscScalar vc,
                         const PetscScalar* v,
                         PetscScalar* out,
                         PetscScalar* t) {
  PetscScalar tc = 0;
  for (PetscInt r0 = 0; r0 < rows; r0 += kPanelRows) {
    const PetscInt r1 = std::min(rows, r0 + kPanelRows);
    for (PetscInt i = r0; i < r1; ++i) {
      PetscScalar s = vc;
      for (PetscInt p = ia[i]; p < ia[i + 1]; ++p) s += a[p] * v[ja[p]];
      t[i - r0] = s * scale * d[i];
    }
    for (PetscInt i = r0; i < r1; ++i) {
      const PetscScalar ti = t[i - r0];
      for (PetscInt p = ia[i]; p < ia[i + 1]; ++p) out[ja[p]] += ti * a[p];
      tc += ti;
    }
  }
  return tc;
}

// ---- AVX-512 loops (8 nonzeros per step; the tail of a row under a mask) --------------------------------
#if BILEVEL_HAVE_AVX512_LOOPS

// The sum of the 8 lanes (GCC 12's _mm512_reduce_add_pd warns of an undefined source).
BILEVEL_AVX512 inline double sum8(__m512d x) {
  alignas(64) double b[8];
  _mm512_store_pd(b, x);
  return ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
}

// Σ_p a_p x[s·ja_p] over p ∈ [begin, end), s = 1 or 2 (stride of x in doubles).
template <int Stride>
BILEVEL_AVX512 inline double dot8(
    PetscInt begin, PetscInt end, const int* ja, const double* a, const double* x) {
  __m512d acc = _mm512_setzero_pd();
  PetscInt p = begin;
  for (; p + 8 <= end; p += 8) {
    __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ja + p));
    if constexpr (Stride == 2) idx = _mm256_slli_epi32(idx, 1);
    acc = _mm512_fmadd_pd(
        _mm512_loadu_pd(a + p), _mm512_mask_i32gather_pd(_mm512_setzero_pd(), 0xFF, idx, x, 8), acc);
  }
  if (p < end) {
    const auto m = static_cast<__mmask8>((1u << (end - p)) - 1);
    __m256i idx = _mm256_maskz_loadu_epi32(m, ja + p);
    if constexpr (Stride == 2) idx = _mm256_slli_epi32(idx, 1);
    acc = _mm512_fmadd_pd(
        _mm512_maskz_loadu_pd(m, a + p), _mm512_mask_i32gather_pd(_mm512_setzero_pd(), m, idx, x, 8), acc);
  }
  return sum8(acc);
}

// y[s·ja_p] += t a_p over p ∈ [begin, end) (distinct ja within the range: gather, fma, scatter).
template <int Stride>
BILEVEL_AVX512 inline void axpy8(
    PetscInt begin, PetscInt end, const int* ja, const double* a, double t, double* y) {
  const __m512d tv = _mm512_set1_pd(t);
  PetscInt p = begin;
  for (; p + 8 <= end; p += 8) {
    __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ja + p));
    if constexpr (Stride == 2) idx = _mm256_slli_epi32(idx, 1);
    const __m512d o = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), 0xFF, idx, y, 8);
    _mm512_i32scatter_pd(y, idx, _mm512_fmadd_pd(tv, _mm512_loadu_pd(a + p), o), 8);
  }
  if (p < end) {
    const auto m = static_cast<__mmask8>((1u << (end - p)) - 1);
    __m256i idx = _mm256_maskz_loadu_epi32(m, ja + p);
    if constexpr (Stride == 2) idx = _mm256_slli_epi32(idx, 1);
    const __m512d o = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), m, idx, y, 8);
    _mm512_mask_i32scatter_pd(y, m, idx, _mm512_fmadd_pd(tv, _mm512_maskz_loadu_pd(m, a + p), o), 8);
  }
}

BILEVEL_AVX512 double fused_avx512(PetscInt rows,
                                   const int* ia,
                                   const int* ja,
                                   const double* a,
                                   const double* d,
                                   double scale,
                                   double vc,
                                   const double* v,
                                   double* out) {
  double tc = 0;
  for (PetscInt i = 0; i < rows; ++i) {
    const double t = (vc + dot8<1>(ia[i], ia[i + 1], ja, a, v)) * scale * d[i];
    axpy8<1>(ia[i], ia[i + 1], ja, a, t, out);
    tc += t;
  }
  return tc;
}

BILEVEL_AVX512 double interleaved_avx512(PetscInt rows,
                                         const int* ia,
                                         const int* ja,
                                         const double* a,
                                         const double* d,
                                         double scale,
                                         double vc,
                                         double* pairs) {
  double tc = 0;
  for (PetscInt i = 0; i < rows; ++i) {
    const double t = (vc + dot8<2>(ia[i], ia[i + 1], ja, a, pairs)) * scale * d[i];
    axpy8<2>(ia[i], ia[i + 1], ja, a, t, pairs + 1);
    tc += t;
  }
  return tc;
}

BILEVEL_AVX512 double panel_avx512(PetscInt rows,
                                   const int* ia,
                                   const int* ja,
                                   const double* a,
                                   const double* d,
                                   double scale,
                                   double vc,
                                   const double* v,
                                   double* out,
                                   double* t) {
  double tc = 0;
  for (PetscInt r0 = 0; r0 < rows; r0 += kPanelRows) {
    const PetscInt r1 = std::min(rows, r0 + kPanelRows);
    for (PetscInt i = r0; i < r1; ++i) t[i - r0] = (vc + dot8<1>(ia[i], ia[i + 1], ja, a, v)) * scale * d[i];
    for (PetscInt i = r0; i < r1; ++i) {
      axpy8<1>(ia[i], ia[i + 1], ja, a, t[i - r0], out);
      tc += t[i - r0];
    }
  }
  return tc;
}
#endif

}  // namespace

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
                  HvpWork& work) {
  const PetscScalar vc = intercept ? v[n_features] : 0.0;
  const auto nf = static_cast<std::size_t>(n_features);
#if BILEVEL_HAVE_AVX512_LOOPS
  // The vector loops read 32-bit indices (cpu_has_avx512 is false with 64-bit PetscInt).
  const auto* ia32 = reinterpret_cast<const int*>(ia);
  const auto* ja32 = reinterpret_cast<const int*>(ja);
#else
  simd = false;
#endif
  PetscScalar tc = 0;
  switch (kernel) {
    case HvpKernel::Auto:
    case HvpKernel::Fused:
#if BILEVEL_HAVE_AVX512_LOOPS
      if (simd) {
        tc = fused_avx512(rows, ia32, ja32, a, d, scale, vc, v, out);
        break;
      }
#endif
      logistic_hvp_csr(rows, ia, ja, a, d, scale, v, n_features, intercept, out);
      return;  // adds the intercept itself
    case HvpKernel::Interleaved: {
      work.pairs.resize(2 * nf + 16);
      PetscScalar* pairs = work.pairs.data();
      for (std::size_t j = 0; j < nf; ++j) {
        pairs[2 * j] = v[j];
        pairs[2 * j + 1] = 0.0;
      }
#if BILEVEL_HAVE_AVX512_LOOPS
      if (simd)
        tc = interleaved_avx512(rows, ia32, ja32, a, d, scale, vc, pairs);
      else
#endif
        tc = interleaved_scalar(rows, ia, ja, a, d, scale, vc, pairs);
      for (std::size_t j = 0; j < nf; ++j) out[j] += pairs[2 * j + 1];
      break;
    }
    case HvpKernel::Panel: {
      work.t.resize(static_cast<std::size_t>(kPanelRows));
#if BILEVEL_HAVE_AVX512_LOOPS
      if (simd)
        tc = panel_avx512(rows, ia32, ja32, a, d, scale, vc, v, out, work.t.data());
      else
#endif
        tc = panel_scalar(rows, ia, ja, a, d, scale, vc, v, out, work.t.data());
      break;
    }
  }
  if (intercept) out[n_features] += tc;
}

}  // namespace bilevel::detail
