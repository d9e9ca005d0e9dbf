// exp for ATen's Vectorized<T>, for kernels whose cost is their exp count.
//
// float with AVX2 + FMA: exp(x) = 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 (ln 2 split in
// two parts so that r is exact), e^r = 1 + r + r^2 P(r) with a degree-5 minimax P on
// [-ln 2 / 2, ln 2 / 2]. Within 1.26 ulp of the exact exp wherever the result is at least
// sqrt(2) FLT_MIN (checked against double exp on every float); smaller results flush to 0 (an
// absolute error under 1.7e-38); exp(-inf) = 0, exp(+inf) = +inf, NaN stays NaN, overflow gives
// +inf. About 1.6x the throughput of Sleef_expf8_u10 (ATen's Vectorized<float>::exp), which bounds
// the fused critic_lse kernels. Every other type and build uses Vectorized<T>::exp.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cmath>

#if defined(CPU_CAPABILITY_AVX2) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FASTMI_FAST_EXP_AVX2 1
#endif

namespace fastmi {

// Forced: GCC otherwise keeps the AVX2 body out of line, and the call costs more than the exp.
#define FASTMI_ALWAYS_INLINE inline __attribute__((always_inline))

template <typename T>
FASTMI_ALWAYS_INLINE at::vec::Vectorized<T> fast_exp(const at::vec::Vectorized<T>& x) {
  return x.exp();
}

#ifdef FASTMI_FAST_EXP_AVX2
template <>
FASTMI_ALWAYS_INLINE at::vec::Vectorized<float> fast_exp(const at::vec::Vectorized<float>& xv) {
  const __m256 x = xv;
  // Clamping sets the limits without tests: x <= -87.5 gives n = -126 and 2^(n-1) is encoded as 0
  // (so exp(-inf) = 0); x >= 88.8 gives n = 128 and 2e^r * 2^127 > FLT_MAX rounds to +inf.
  // max/min return their second operand for a NaN lane, so xc is finite; NaN is restored at the end.
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.5f)), _mm256_set1_ps(88.8f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // in [-126, 128]
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);  // n * 0.693359375 is exact
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  // 2 e^r = 2 + 2r + r^2 (2P(r)): the factor 2 lets 2^(n-1) cover n = 128 as a bit pattern.
  __m256 p = _mm256_set1_ps(2 * 1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2 * 1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2 * 8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2 * 4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2 * 1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2 * 5.0000001201e-1f));
  const __m256 two = _mm256_set1_ps(2.f);
  const __m256 y2 = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_fmadd_ps(r, two, two));
  const __m256i half_scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126)), 23);
  const __m256 y = _mm256_mul_ps(y2, _mm256_castsi256_ps(half_scale));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
#endif

}  // namespace fastmi
