// Shared declarations of the fd_jacobian family: the counter-based random stream of the span
// coefficients. It is Triton's Philox (triton.language.random: randint4x / randn4x), so that the
// C++ kernel and the Triton kernel draw the same coefficients from the same seed:
//
//   philox(seed, offset) = Philox4x32-10 with counter (lo32(offset), hi32(offset), 0, 0) and
//                          key (lo32(seed), hi32(seed))
//   Bernoulli b_ij in {0,1}: bit (j % 32) of word ((j % 128) / 32) of philox(seed, i * ceil(B/128) + j / 128)
//   Gaussian  c_ij ~ N(0,1): output (j % 4) of randn4x(seed, i * ceil(B/4) + j / 4), computed in float32:
//     u = uniform(word) (Triton's uint_to_uniform_float), Box-Muller on (u1, u2) and (u3, u4).
#pragma once

#include <cmath>
#include <cstdint>

namespace fastmi {
namespace fdj {

enum Noise { NOISE_BERNOULLI = 0, NOISE_GAUSSIAN = 1 };

struct Words4 {
  uint32_t w[4];
};

inline Words4 philox4x32(uint64_t seed, uint64_t offset) {
  uint32_t c0 = uint32_t(offset), c1 = uint32_t(offset >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p2 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p2 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p2);
    c3 = uint32_t(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Words4{{c0, c1, c2, c3}};
}

// Triton's uint_to_uniform_float for 32-bit words: [0, 1) in float32.
inline float uniform_of(uint32_t word) {
  int32_t s = static_cast<int32_t>(word);
  if (s < 0) s = ~s;
  return static_cast<float>(s) * 4.6566127342e-10f;
}

// Triton's randn4x: two Box-Muller pairs, in float32.
inline void randn4(uint64_t seed, uint64_t offset, float out[4]) {
  const Words4 r = philox4x32(seed, offset);
  for (int h = 0; h < 2; ++h) {
    const float u1 = std::fmax(1.0e-7f, uniform_of(r.w[2 * h]));
    const float th = 6.283185307179586f * uniform_of(r.w[2 * h + 1]);
    const float rad = std::sqrt(-2.0f * std::log(u1));
    out[2 * h] = rad * std::cos(th);
    out[2 * h + 1] = rad * std::sin(th);
  }
}

inline int64_t words_per_row(int64_t B) { return (B + 127) / 128; }  // Philox calls per row (Bernoulli)
inline int64_t quads_per_row(int64_t B) { return (B + 3) / 4; }     // Philox calls per row (Gaussian)

}  // namespace fdj
}  // namespace fastmi
