// Fused CPU kernels of the fd_jacobian family (Neural Bayes' smoothness regularizer R_c).
//
// fd_perturb: x_tilde_i = x_i + zeta_i * D_i / ||D_i||,  D_i = sum_j c_ij Xc_j,  Xc_j = x_j - mean(x)
//   (or x_j when center is false), with c_ij from the counter-based stream of csrc/fd_jacobian.h.
//   A direction at rounding level, ||D_i|| <= 8 sqrt(B) eps sum_j |c_ij| ||Xc_j||, is zero: sample i
//   is left unperturbed. The mean is taken of y_j = x_j - x_0 (accumulated in double), so identical
//   samples centre to exact zeros and large offsets cancel before they are summed.
//   Bernoulli {0,1} coefficients: "method of four Russians". The B samples are cut into groups of 8;
//   for each group and each column block the 256 subset sums of its 8 centred rows are tabulated
//   (255 vector adds), and D_i gains one table row per group, picked by 8 random bits. That is
//   about (B/8)(256 + B) adds per column instead of the B^2 multiply-adds of C @ Xc, and the
//   coefficients exist only as 128 random bits per row and chunk of 128 samples.
//   Gaussian coefficients: panels of B x 128 coefficients times 128 centred rows (at::addmm_).
//   Neither path materializes a B x B matrix.
// fd_sqdiff: s_b = sum_c ( (1/hw) sum_p (f_clean - f_perturbed)[b, c, p] )^2, and its backward.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "../fd_jacobian.h"

namespace fastmi {
namespace {

using at::vec::Vectorized;
using fdj::NOISE_BERNOULLI;
using fdj::NOISE_GAUSSIAN;

constexpr int64_t kChunk = 128;  // samples per chunk of coefficients (one Philox call per row, Bernoulli)
constexpr int kGroup = 8;        // samples per subset-sum table (256 entries)
constexpr int kGroups = kChunk / kGroup;
constexpr int kVecs = 4;         // vectors per column block (4 x 8 floats, 4 x 4 doubles)

template <typename T>
inline Vectorized<T> load_n(const T* p, int64_t count) {
  return count >= Vectorized<T>::size() ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, count);
}

template <typename T>
inline void store_n(const Vectorized<T>& v, T* p, int64_t count) {
  if (count >= Vectorized<T>::size()) v.store(p); else v.store(p, count);
}

// ||p[0:len)|| without overflow or underflow: the values are scaled by a power of two near 1/max|p|.
template <typename T>
inline double scaled_norm(const T* p, int64_t len) {
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  Vec vmax(T(0));
  for (int64_t k = 0; k < len; k += V) vmax = at::vec::maximum(vmax, load_n(p + k, std::min<int64_t>(V, len - k)).abs());
  const T mx = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vmax);
  if (!(mx > T(0)) || !std::isfinite(mx)) return double(mx);  // 0, inf or NaN
  int e;
  std::frexp(mx, &e);
  const Vec f(std::ldexp(T(1), -e));
  Vec acc(T(0));
  for (int64_t k = 0; k < len; k += V) {
    const Vec v = load_n(p + k, std::min<int64_t>(V, len - k)) * f;
    acc = at::vec::fmadd(v, v, acc);
  }
  return std::ldexp(std::sqrt(double(at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return a + b; }, acc))), e);
}

// Column statistics: ybar = mean_j (x_j - x_0) when centering (else 0), and ||Xc_j|| per row.
template <typename T>
struct Centre {
  std::vector<T> ybar;    // [n]
  std::vector<double> rownrm;  // [B]
};

template <typename T>
Centre<T> centre_stats(const T* x, int64_t B, int64_t n, bool center) {
  Centre<T> st;
  st.ybar.assign(n, T(0));
  st.rownrm.assign(B, 0.0);
  if (center) {
    // ybar = mean_j (x_j - x_0): 16 rows summed in T vectors, those partial sums added in double.
    using Vec = Vectorized<T>;
    const int V = Vec::size();
    constexpr int64_t CB = 256;
    at::parallel_for(0, (n + CB - 1) / CB, 1, [&](int64_t b0, int64_t b1) {
      std::vector<double> acc(CB);
      T part[CB];
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t k0 = blk * CB, kn = std::min(CB, n - k0);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j0 = 1; j0 < B; j0 += 16) {
          for (int64_t k = 0; k < kn; k += V) {
            const int64_t c = std::min<int64_t>(V, kn - k);
            const Vec x0 = load_n(x + k0 + k, c);
            Vec sum(T(0));
            for (int64_t j = j0; j < std::min<int64_t>(B, j0 + 16); ++j) sum = sum + (load_n(x + j * n + k0 + k, c) - x0);
            sum.store(part + k);
          }
          for (int64_t k = 0; k < kn; ++k) acc[k] += double(part[k]);
        }
        for (int64_t k = 0; k < kn; ++k) st.ybar[k0 + k] = T(acc[k] / double(B));
      }
    });
  }
  at::parallel_for(0, B, 8, [&](int64_t j0, int64_t j1) {
    using Vec = Vectorized<T>;
    const int V = Vec::size();
    std::vector<T> row(n);
    for (int64_t j = j0; j < j1; ++j) {
      for (int64_t k = 0; k < n; k += V) {
        const int64_t c = std::min<int64_t>(V, n - k);
        Vec v = load_n(x + j * n + k, c);
        if (center) v = v - load_n(x + k, c) - load_n(st.ybar.data() + k, c);
        store_n(v, row.data() + k, c);
      }
      st.rownrm[j] = scaled_norm(row.data(), n);
    }
  });
  return st;
}

// One centred row segment Xc_j[k0 : k0 + count] into dst (count <= kVecs * V; zero-padded).
template <typename T>
inline void centred_segment(const T* x, const Centre<T>& st, bool center, int64_t j, int64_t n, int64_t k0,
                            int64_t count, T* dst) {
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  for (int q = 0; q < kVecs; ++q) {
    const int64_t off = k0 + q * V, c = std::max<int64_t>(0, std::min<int64_t>(V, k0 + count - off));
    Vec v(T(0));
    if (c > 0) {
      v = load_n(x + j * n + off, c);
      if (center) v = v - load_n(x + off, c) - load_n(st.ybar.data() + off, c);
    }
    v.store(dst + q * V);
  }
}

// D = B_bits @ Xc for the Bernoulli stream, written into out (B x n). Also sum_j b_ij ||Xc_j|| per row.
// One parallel region over super-blocks of columns sized so that D's B x SB slice stays in L2; each
// thread regenerates a chunk's 128 random bits per row for each of its super-blocks (cheap: one
// Philox call per row), so the coefficients never exist beyond one B x 128 bit panel per thread.
template <typename T>
void subset_sums(const T* x, const Centre<T>& st, bool center, uint64_t seed, int64_t B, int64_t n, T* out,
                 std::vector<double>& scale) {
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  const int64_t KB = kVecs * V;
  const int64_t nchunks = fdj::words_per_row(B);
  const int64_t per_sb = std::max<int64_t>(1, (int64_t(512) << 10) / (B * int64_t(sizeof(T)) * KB));
  const int64_t SB = per_sb * KB;
  const int64_t nsuper = (n + SB - 1) / SB;
  at::parallel_for(0, nsuper, 1, [&](int64_t s0, int64_t s1) {
    std::vector<uint32_t> bits(B * 4);
    // tables[g][p][0..KB): the subset sum of group g's rows selected by the bits of p
    std::vector<T> tables(size_t(kGroups) * 256 * KB);
    for (int64_t sb = s0; sb < s1; ++sb) {
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t j_begin = c * kChunk, j_count = std::min(kChunk, B - j_begin);
        for (int64_t i = 0; i < B; ++i) {
          const fdj::Words4 r = fdj::philox4x32(seed, uint64_t(i * nchunks + c));
          for (int w = 0; w < 4; ++w) bits[i * 4 + w] = r.w[w];
          if (sb == 0) {
            double acc = 0;
            for (int64_t jj = 0; jj < j_count; ++jj)
              if ((r.w[jj >> 5] >> (jj & 31)) & 1u) acc += st.rownrm[j_begin + jj];
            scale[i] += acc;
          }
        }
        const int ngroups = int((j_count + kGroup - 1) / kGroup);
        for (int64_t k0 = sb * SB; k0 < std::min(n, (sb + 1) * SB); k0 += KB) {
          const int64_t kc = std::min(KB, n - k0);
          for (int g = 0; g < ngroups; ++g) {
            T* tab = tables.data() + size_t(g) * 256 * KB;
            std::fill(tab, tab + KB, T(0));
            for (int t = 0; t < kGroup; ++t) {
              const int64_t j = j_begin + g * kGroup + t;
              T* dst = tab + (size_t(1) << t) * KB;
              if (j < B) centred_segment(x, st, center, j, n, k0, kc, dst); else std::fill(dst, dst + KB, T(0));
            }
            for (int p = 3; p < 256; ++p) {
              if ((p & (p - 1)) == 0) continue;  // single rows are loaded above
              const T* a = tab + size_t(p & (p - 1)) * KB;
              const T* b = tab + size_t(p & -p) * KB;
              T* d = tab + size_t(p) * KB;
              for (int q = 0; q < kVecs; ++q) (Vec::loadu(a + q * V) + Vec::loadu(b + q * V)).store(d + q * V);
            }
          }
          for (int64_t i = 0; i < B; ++i) {
            T* row = out + i * n + k0;
            Vec acc[kVecs];
            for (int q = 0; q < kVecs; ++q) {
              const int64_t cnt = std::max<int64_t>(0, std::min<int64_t>(V, kc - q * V));
              acc[q] = (c == 0 || cnt == 0) ? Vec(T(0)) : load_n(row + q * V, cnt);
            }
            const uint32_t* w = bits.data() + i * 4;
            for (int g = 0; g < ngroups; ++g) {
              const uint32_t p = (w[g >> 2] >> (8 * (g & 3))) & 0xFFu;
              const T* e = tables.data() + (size_t(g) * 256 + p) * KB;
              for (int q = 0; q < kVecs; ++q) acc[q] = acc[q] + Vec::loadu(e + q * V);
            }
            for (int q = 0; q < kVecs; ++q) {
              const int64_t cnt = std::min<int64_t>(V, kc - q * V);
              if (cnt > 0) store_n(acc[q], row + q * V, cnt);
            }
          }
        }
      }
    }
  });
}

// D = C @ Xc for the Gaussian stream, panel by panel: B x 128 coefficients, 128 x n centred rows.
template <typename T>
void gaussian_combination(const at::Tensor& x, const Centre<T>& st, bool center, uint64_t seed, at::Tensor& out,
                          std::vector<double>& scale) {
  const int64_t B = x.size(0), n = x.size(1);
  const T* xp = x.data_ptr<T>();
  const int64_t quads = fdj::quads_per_row(B);
  for (int64_t j_begin = 0; j_begin < B; j_begin += kChunk) {
    const int64_t jc = std::min(kChunk, B - j_begin);
    at::Tensor panel = at::empty({B, jc}, x.options());
    at::Tensor rows = at::empty({jc, n}, x.options());
    T* P = panel.data_ptr<T>();
    T* R = rows.data_ptr<T>();
    // One parallel region per panel: items [0, B) make coefficient rows, [B, B + jc) centred rows.
    at::parallel_for(0, B + jc, 16, [&](int64_t i0, int64_t i1) {
      using Vec = Vectorized<T>;
      const int V = Vec::size();
      float g[4];
      for (int64_t i = i0; i < i1; ++i) {
        if (i < B) {
          double s = 0;
          for (int64_t jj = 0; jj < jc; ++jj) {
            const int64_t j = j_begin + jj;
            if (jj == 0 || j % 4 == 0) fdj::randn4(seed, uint64_t(i * quads + j / 4), g);
            const T v = T(g[j % 4]);
            P[i * jc + jj] = v;
            s += std::abs(double(v)) * st.rownrm[j];
          }
          scale[i] += s;
        } else {
          const int64_t r = i - B;
          const T* xj = xp + (j_begin + r) * n;
          for (int64_t k = 0; k < n; k += V) {
            const int64_t c = std::min<int64_t>(V, n - k);
            Vec v = load_n(xj + k, c);
            if (center) v = v - load_n(xp + k, c) - load_n(st.ybar.data() + k, c);
            store_n(v, R + r * n + k, c);
          }
        }
      }
    });
    if (j_begin == 0) at::mm_out(out, panel, rows); else out.addmm_(panel, rows);
  }
}

// x_tilde_i = x_i + zeta_i D_i / ||D_i|| in place over D (out), zero directions left out.
template <typename T>
void finish_rows(const T* x, const T* zeta, bool per_sample, const std::vector<double>& scale, int64_t B, int64_t n,
                 T* out) {
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  const double tol = 8.0 * std::sqrt(double(B)) * double(std::numeric_limits<T>::epsilon());
  at::parallel_for(0, B, 8, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* d = out + i * n;
      const T* xi = x + i * n;
      const double nrm = scaled_norm(d, n);
      // zero (rounding-level) or non-finite (overflowed) direction: the sample is left unperturbed
      const bool keep = nrm > tol * scale[i] && nrm > 0.0 && std::isfinite(nrm);
      if (!keep) {
        std::copy(xi, xi + n, d);
        continue;
      }
      const Vec f(T(double(zeta[per_sample ? i : 0]) / nrm));
      for (int64_t k = 0; k < n; k += V) {
        const int64_t c = std::min<int64_t>(V, n - k);
        store_n(at::vec::fmadd(f, load_n(d + k, c), load_n(xi + k, c)), d + k, c);
      }
    }
  });
}

at::Tensor fd_perturb_cpu(const at::Tensor& x_in, const at::Tensor& seed, const at::Tensor& zeta_in, int64_t noise,
                          bool center) {
  TORCH_CHECK(x_in.dim() == 2, "fastmi::fd_perturb: x must be 2-D [B, n], got ", x_in.dim(), "-D");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "fastmi::fd_perturb (CPU): x must be float32 or float64, got ", x_in.scalar_type());
  TORCH_CHECK(x_in.size(0) >= 2, "fastmi::fd_perturb: needs B >= 2 samples");
  TORCH_CHECK(seed.numel() == 1 && seed.scalar_type() == at::kLong, "fastmi::fd_perturb: seed must be one int64");
  TORCH_CHECK(noise == NOISE_BERNOULLI || noise == NOISE_GAUSSIAN, "fastmi::fd_perturb: noise must be 0 or 1");
  const int64_t B = x_in.size(0), n = x_in.size(1);
  TORCH_CHECK(zeta_in.numel() == 1 || zeta_in.numel() == B, "fastmi::fd_perturb: zeta must have 1 or B values");
  at::Tensor x = x_in.contiguous();
  at::Tensor zeta = zeta_in.to(x.scalar_type()).contiguous();
  const uint64_t s = static_cast<uint64_t>(seed.cpu().item<int64_t>());
  at::Tensor out = at::empty({B, n}, x.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fd_perturb_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    Centre<scalar_t> st = centre_stats(xp, B, n, center);
    std::vector<double> scale(B, 0.0);
    if (noise == NOISE_BERNOULLI) {
      subset_sums(xp, st, center, s, B, n, out.data_ptr<scalar_t>(), scale);
    } else {
      gaussian_combination(x, st, center, s, out, scale);
    }
    finish_rows(xp, zeta.data_ptr<scalar_t>(), zeta.numel() == B && B > 1, scale, B, n, out.data_ptr<scalar_t>());
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// fd_sqdiff: inputs viewed as [B, C, hw]
template <typename T>
inline T diff_sum(const T* a, const T* b, int64_t len) {
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  if (len < 2 * V) {  // short pooling windows (3x3 states): a plain loop beats partial vector loads
    T acc = 0;
    for (int64_t k = 0; k < len; ++k) acc += a[k] - b[k];
    return acc;
  }
  Vec acc(T(0));
  for (int64_t k = 0; k < len; k += V) {
    const int64_t c = std::min<int64_t>(V, len - k);
    acc = acc + (load_n(a + k, c) - load_n(b + k, c));
  }
  return at::vec::vec_reduce_all<T>([](Vec& u, Vec& w) { return u + w; }, acc);
}

template <typename T>
inline double sq_diff_sum(const T* a, const T* b, int64_t len) {
  // Blocks of 1024 in vector registers of T, blocks summed in double.
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  double total = 0;
  for (int64_t k0 = 0; k0 < len; k0 += 1024) {
    const int64_t k1 = std::min<int64_t>(len, k0 + 1024);
    Vec acc(T(0));
    for (int64_t k = k0; k < k1; k += V) {
      const int64_t c = std::min<int64_t>(V, k1 - k);
      const Vec d = load_n(a + k, c) - load_n(b + k, c);
      acc = at::vec::fmadd(d, d, acc);
    }
    total += double(at::vec::vec_reduce_all<T>([](Vec& u, Vec& w) { return u + w; }, acc));
  }
  return total;
}

struct SqdiffInputs {
  at::Tensor a, b;
  int64_t B, per;  // batch, features per sample
};

SqdiffInputs sqdiff_inputs(const at::Tensor& a, const at::Tensor& b, int64_t hw, const char* name) {
  TORCH_CHECK(a.sizes() == b.sizes(), name, ": f_clean and f_perturbed must have the same shape");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), name, ": f_clean and f_perturbed must have the same dtype");
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble, name,
              " (CPU): inputs must be float32 or float64, got ", a.scalar_type());
  TORCH_CHECK(a.dim() >= 1, name, ": inputs need a batch dimension");
  TORCH_CHECK(hw >= 1, name, ": hw must be >= 1");
  const int64_t B = a.size(0), per = B == 0 ? 0 : a.numel() / B;
  TORCH_CHECK(per % hw == 0, name, ": hw must divide the features per sample");
  return SqdiffInputs{a.contiguous(), b.contiguous(), B, per};
}

at::Tensor fd_sqdiff_cpu(const at::Tensor& f_clean, const at::Tensor& f_perturbed, int64_t hw) {
  const SqdiffInputs in = sqdiff_inputs(f_clean, f_perturbed, hw, "fastmi::fd_sqdiff");
  const at::Tensor &a = in.a, &b = in.b;
  const int64_t B = in.B, per = in.per;
  at::Tensor s = at::empty({B}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "fd_sqdiff_cpu", [&] {
    const scalar_t* A = a.data_ptr<scalar_t>();
    const scalar_t* Bp = b.data_ptr<scalar_t>();
    scalar_t* S = s.data_ptr<scalar_t>();
    const int64_t C = per / hw;
    at::parallel_for(0, B, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* ar = A + r * per;
        const scalar_t* br = Bp + r * per;
        if (hw == 1) {
          S[r] = scalar_t(sq_diff_sum(ar, br, per));
        } else {
          double acc = 0;
          for (int64_t c = 0; c < C; ++c) {
            const double m = double(diff_sum(ar + c * hw, br + c * hw, hw)) / double(hw);
            acc += m * m;
          }
          S[r] = scalar_t(acc);
        }
      }
    });
  });
  return s;
}

std::tuple<at::Tensor, at::Tensor> fd_sqdiff_backward_cpu(const at::Tensor& grad, const at::Tensor& f_clean,
                                                          const at::Tensor& f_perturbed, int64_t hw) {
  const SqdiffInputs in = sqdiff_inputs(f_clean, f_perturbed, hw, "fastmi::fd_sqdiff_backward");
  const at::Tensor &a = in.a, &b = in.b;
  const int64_t B = in.B, per = in.per;
  TORCH_CHECK(grad.numel() == B, "fastmi::fd_sqdiff_backward: grad must have B values");
  at::Tensor g = grad.to(a.scalar_type()).contiguous();
  at::Tensor ga = at::empty_like(a), gb = at::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "fd_sqdiff_backward_cpu", [&] {
    using Vec = Vectorized<scalar_t>;
    const int V = Vec::size();
    const scalar_t* A = a.data_ptr<scalar_t>();
    const scalar_t* Bp = b.data_ptr<scalar_t>();
    const scalar_t* G = g.data_ptr<scalar_t>();
    scalar_t* GA = ga.data_ptr<scalar_t>();
    scalar_t* GB = gb.data_ptr<scalar_t>();
    const int64_t C = per / hw;
    at::parallel_for(0, B, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t base = r * per;
        if (hw == 1) {
          const Vec two_g(scalar_t(2) * G[r]);
          for (int64_t k = 0; k < per; k += V) {
            const int64_t c = std::min<int64_t>(V, per - k);
            const Vec d = two_g * (load_n(A + base + k, c) - load_n(Bp + base + k, c));
            store_n(d, GA + base + k, c);
            store_n(Vec(scalar_t(0)) - d, GB + base + k, c);
          }
        } else {
          // d s_r / d a[r, c, p] = 2 m_rc / hw with m_rc the pooled difference
          for (int64_t c = 0; c < C; ++c) {
            const int64_t o = base + c * hw;
            const scalar_t m = diff_sum(A + o, Bp + o, hw) / scalar_t(hw);
            const scalar_t v = scalar_t(2) * G[r] * m / scalar_t(hw);
            for (int64_t p = 0; p < hw; ++p) {
              GA[o + p] = v;
              GB[o + p] = -v;
            }
          }
        }
      }
    });
  });
  return {ga, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmi, CPU, m) {
  m.impl("fd_perturb", &fd_perturb_cpu);
  m.impl("fd_sqdiff", &fd_sqdiff_cpu);
  m.impl("fd_sqdiff_backward", &fd_sqdiff_backward_cpu);
}

}  // namespace fastmi
