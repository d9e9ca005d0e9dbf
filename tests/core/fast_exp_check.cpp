// Checks csrc/cpu/fast_exp.h against double precision on every STRIDE-th float bit pattern and on
// the special values: `fast_exp_check STRIDE` checks fast_exp against exp (all floats),
// `fast_exp_check STRIDE log1p` fast_log1p_unit against log1p (the floats in [0, 1]). Prints
// "max_ulp <value> bad <count>", or "generic" when the build has no AVX2 specialization (ATen's
// own functions are then used). Built and run by test_fast_exp.py.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "../../csrc/cpu/fast_exp.h"

using at::vec::Vectorized;

#ifdef FASTMI_FAST_EXP_AVX2
static double ulp_error(float y, double exact) {
  const float rounded = static_cast<float>(exact);
  const double ulp = std::nextafter(rounded, std::numeric_limits<float>::infinity()) - rounded;
  return std::fabs(y - exact) / ulp;
}

// Every STRIDE-th bit pattern from +0 to 1.0f (all of [0, 1] with stride 1), 1.0f itself, NaN.
static int check_log1p(uint64_t stride) {
  const uint32_t last = 0x3F800000u;  // 1.0f
  double max_ulp = 0;
  long bad = 0;
  float in[8], out[8];
  auto run = [&](int count) {
    fastmi::fast_log1p_unit(Vectorized<float>::loadu(in)).store(out);
    for (int k = 0; k < count; ++k) {
      if (std::isnan(in[k])) {
        bad += !std::isnan(out[k]);
        continue;
      }
      const double err = in[k] == 0.f ? (out[k] == 0.f ? 0.0 : 1e9) : ulp_error(out[k], std::log1p(double(in[k])));
      if (!(err <= 2.0)) ++bad;
      if (err > max_ulp) max_ulp = err;
    }
  };
  for (uint64_t b = 0; b <= last; b += 8 * stride) {
    for (int k = 0; k < 8; ++k) {
      const uint32_t u = static_cast<uint32_t>(std::min<uint64_t>(b + uint64_t(k) * stride, last));
      std::memcpy(&in[k], &u, 4);
    }
    run(8);
  }
  in[0] = 1.f, in[1] = 0.f, in[2] = std::nanf(""), in[3] = 0.41421356f, in[4] = 0.41421354f;
  in[5] = 1e-30f, in[6] = 1e-45f, in[7] = 0.999999f;
  run(8);
  bad += !(out[0] == static_cast<float>(std::log1p(1.0)) && out[1] == 0.f && out[5] == 1e-30f);
  std::printf("max_ulp %.4f bad %ld\n", max_ulp, bad);
  return 0;
}
#endif

int main(int argc, char** argv) {
#ifndef FASTMI_FAST_EXP_AVX2
  std::printf("generic\n");
  return 0;
#else
  const uint64_t stride = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1;
  if (argc > 2 && std::strcmp(argv[2], "log1p") == 0) return check_log1p(stride);
  const double flush_below = std::ldexp(1.0, -125) / std::sqrt(2.0);  // sqrt(2) * FLT_MIN, see the header
  double max_ulp = 0;
  long bad = 0;
  auto check = [&](float x, float y) {
    const double exact = std::exp(static_cast<double>(x));
    if (std::isnan(x)) {
      bad += !std::isnan(y);
    } else if (exact < flush_below) {
      bad += !(y == 0.f || std::fabs(y - exact) <= std::ldexp(1.0, -149));  // 0, or right to a denormal
    } else if (exact > std::numeric_limits<float>::max()) {
      bad += !(std::isinf(y) && y > 0);
    } else {
      const float rounded = static_cast<float>(exact);
      const double ulp = std::nextafter(rounded, std::numeric_limits<float>::infinity()) - rounded;
      const double err = std::fabs(y - exact) / ulp;
      if (!(err <= 2.0)) ++bad;
      if (err > max_ulp) max_ulp = err;
    }
  };
  float in[8], out[8];
  for (uint64_t b = 0; b < (uint64_t(1) << 32); b += 8 * stride) {
    for (int k = 0; k < 8; ++k) {
      const uint32_t u = static_cast<uint32_t>(b + uint64_t(k) * stride);
      std::memcpy(&in[k], &u, 4);
    }
    fastmi::fast_exp(Vectorized<float>::loadu(in)).store(out);
    for (int k = 0; k < 8; ++k) check(in[k], out[k]);
  }
  const float inf = std::numeric_limits<float>::infinity();
  const float special[8] = {-inf, inf, std::nanf(""), 0.f, -0.f, 88.7228f, -87.3f, -104.f};
  fastmi::fast_exp(Vectorized<float>::loadu(special)).store(out);
  for (int k = 0; k < 8; ++k) check(special[k], out[k]);
  bad += !(out[0] == 0.f && out[1] == inf && std::isnan(out[2]) && out[3] == 1.f && out[4] == 1.f);
  std::printf("max_ulp %.4f bad %ld\n", max_ulp, bad);
  return 0;
#endif
}
