// exp for ATen's Vectorized<T>, for kernels whose cost is their exp count.
//
// float with AVX2 + FMA: exp(x) = 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 (ln 2 split in
// two parts so that r is exact), e^r = 1 + r + r^2 P(r) with a degree-5 minimax P on
// [-ln 2 / 2, ln 2 / 2]. Within 1.26 ulp of the exact exp wherever the result is at least
// sqrt(2) FLT_MIN (checked against double exp on every float); smaller results flush to 0 (an
// absolute error under 1.7e-38); exp(-inf) = 0, exp(+inf) = +inf, NaN stays NaN, overflow gives
// +inf. About 1.6x the throughput of Sleef_expf8_u10 (ATen's Vectorized<float>::exp), which bounds
// the fused critic_lse kernels. Every other type and build uses Vectorized<T>::exp.
//
// fast_log1p_unit(y) = log1p(y) for y in [0, 1], the tail of softplus(x) = max(x, 0) + log1p(e^-|x|).
// float with AVX2 + FMA: 1 + y = 2^e (1 + f) with e = 0, f = y for y < sqrt(2) - 1 and e = 1,
// f = (y - 1) / 2 otherwise (both exact), so f is in [-0.293, 0.415); log1p(f) = 2 atanh(s),
// s = f / (2 + f), |s| <= 0.172, as f - s (f - R), R = 2s^2/3 + ... + 2s^8/9 (truncation 2e-9);
// e ln 2 in two parts. Checked against double log1p on every float in [0, 1]; NaN stays NaN.
// Every other type and build uses Vectorized<T>::log1p (Sleef).
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

template <typename T>
FASTMI_ALWAYS_INLINE at::vec::Vectorized<T> fast_log1p_unit(const at::vec::Vectorized<T>& y) {
  return y.log1p();
}

#ifdef FASTMI_FAST_EXP_AVX2
template <>
FASTMI_ALWAYS_INLINE at::vec::Vectorized<float> fast_log1p_unit(const at::vec::Vectorized<float>& yv) {
  const __m256 y = yv;
  const __m256 upper = _mm256_cmp_ps(y, _mm256_set1_ps(0.41421356237f), _CMP_GE_OQ);  // false for NaN
  const __m256 f = _mm256_blendv_ps(y, _mm256_mul_ps(_mm256_sub_ps(y, _mm256_set1_ps(1.f)), _mm256_set1_ps(0.5f)),
                                    upper);
  const __m256 s = _mm256_div_ps(f, _mm256_add_ps(f, _mm256_set1_ps(2.f)));
  const __m256 s2 = _mm256_mul_ps(s, s);
  // 2 atanh(s) = 2s + R s, R = 2s^2/3 + ... + 2s^8/9, and 2s = f - s f, so log1p(f) = f - s (f - R):
  // f is exact and s (f - R) is at most 0.07 |f|, so the roundings of s barely reach the result.
  __m256 p = _mm256_set1_ps(2.f / 9.f);
  p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(2.f / 7.f));
  p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(2.f / 5.f));
  p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(2.f / 3.f));
  const __m256 R = _mm256_mul_ps(p, s2);
  const __m256 l = _mm256_fnmadd_ps(s, _mm256_sub_ps(f, R), f);
  const __m256 e = _mm256_and_ps(upper, _mm256_set1_ps(1.f));
  // e (ln2_hi + ln2_lo) + l, ln2_hi = 0.693145751953125 (exact in 15 bits)
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693145751953125f),
                         _mm256_fmadd_ps(e, _mm256_set1_ps(1.42860682030941723e-6f), l));
}
#endif

}  // namespace fastmi
