// fp16 / bf16 rows to fp32 and back, vectorized: the CPU kernels compute half types in fp32 one row
// at a time in a thread-local buffer, so a half input never gets a full-size fp32 copy.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace fastmi {

template <typename T>
inline void to_float(const T* src, float* dst, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t V = Vec::size();  // 2 float vectors
  int64_t j = 0;
  for (; j + V <= n; j += V) {
    at::vec::Vectorized<float> lo, hi;
    at::vec::load_to_float<T>(src + j, lo, hi);
    lo.store(dst + j);
    hi.store(dst + j + V / 2);
  }
  for (; j < n; ++j) dst[j] = static_cast<float>(src[j]);
}

template <typename T>
inline void from_float(const float* src, T* dst, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  using FVec = at::vec::Vectorized<float>;
  constexpr int64_t V = Vec::size();
  int64_t j = 0;
  for (; j + V <= n; j += V)
    at::vec::convert_from_float<T>(FVec::loadu(src + j), FVec::loadu(src + j + V / 2)).store(dst + j);
  for (; j < n; ++j) dst[j] = static_cast<T>(src[j]);
}

}  // namespace fastmi
