// Fused CPU kernels of the softmax_stats family (Neural Bayes MIM, paper 000).
//
// For a state x (B x C x H x W, NCHW or channels-last) and its k x k average pool (kernel = stride
// = k, floor mode; k = 0: no pooled scale), one read of x gives, per scale s in {state, pool}:
//   ent[s]      = sum_{b,pos} sum_c S log(S + eps)        S = softmax_c(x[b, :, pos])
//   marg_s[c,p] = sum_b S[b, c, p]                          (batch-marginal sums)
//   stats       = per (b, pos): lse = logsumexp_c x and e = sum_c S log(S + eps)
// (eps = 0 uses log S = x - lse exactly.) The backward recomputes S from the saved lse and applies
//   dL/dx_c = S_c * (g_ent * (log(S_c + eps) - e) + g_marg[c, p] - sum_c' S_c' g_marg[c', p])
// (the entropy's log is detached, as in the paper) for both scales in one kernel per state; the
// pooled gradient is spread over its window with weight 1/k^2.
//
// Work is split into (group of k rows) x (chunk of kBatchChunk samples). A group is read from DRAM
// once per sample and then revisited in L1/L2; an NCHW group is first transposed (in L1/L2) to
// position-major rows, so one vectorized code path over contiguous channels serves both layouts
// (vectorizing NCHW over positions instead was 2-4x slower: short rows, strided pooling). Marginals are summed per chunk in sample order and
// the chunks are added in chunk order: results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "fast_exp.h"
#include "huge_pages.h"

namespace fastmi {
namespace {

using at::Tensor;
using at::vec::Vectorized;

constexpr int64_t kBatchChunk = 64;

struct Geometry {
  int64_t B, C, H, W, P;   // state
  int64_t k, Wq, Q;        // pool kernel (0: none), pooled width, pooled positions
  int64_t rows, groups;    // rows per group, number of groups
  int64_t chunks;          // batch chunks
  bool channels_last;      // element (b, c, p) at b*P*C + p*C + c, else b*C*P + c*P + p
  int64_t srow;            // per-sample stats row: [lse P | e P | lse Q | e Q]

  Geometry(const Tensor& x, int64_t pool, bool cl) {
    B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
    k = pool;
    Wq = k > 0 ? W / k : 0;
    Q = k > 0 ? (H / k) * Wq : 0;
    channels_last = cl;
    if (k > 0) {
      rows = k;
    } else if (cl) {
      rows = 1;
    } else {  // NCHW without pool: a few rows, so that each channel's slice is read in one run
      rows = std::max<int64_t>(1, std::min<int64_t>(H, (32 + W - 1) / W));
    }
    groups = (H + rows - 1) / rows;
    chunks = (B + kBatchChunk - 1) / kBatchChunk;
    srow = 2 * P + 2 * Q;
  }
  // pooled windows in group g (0 for the floor-mode remainder rows)
  int64_t windows(int64_t g) const { return (k > 0 && (g + 1) * k <= H) ? Wq : 0; }

  // Task t of groups x chunks: row group g, batch chunk j = [b0, b1); its n positions from p0
  // (nrows rows of the state) and its nq pooled windows from q0.
  struct Task {
    int64_t g, j, h0, nrows, p0, n, nq, q0, b0, b1;
  };
  Task task(int64_t t) const {
    Task a;
    a.g = t % groups, a.j = t / groups;
    a.h0 = a.g * rows, a.nrows = std::min(rows, H - a.h0), a.p0 = a.h0 * W, a.n = a.nrows * W;
    a.nq = windows(a.g), a.q0 = (a.h0 / std::max<int64_t>(k, 1)) * Wq;
    a.b0 = a.j * kBatchChunk, a.b1 = std::min(B, a.b0 + kBatchChunk);
    return a;
  }
};

// S log(S + eps), given xl = x - lse (so that log S = xl). float: when every lane has S >= 100 eps
// (the common case) it skips the log: S log(S + eps) = S xl + S log1p(u) with u = eps / S <= 0.01,
// and S log1p(u) = eps - eps u / 2 + O(eps u^2), an absolute error below eps * 3.4e-5, under float's
// rounding for the eps this loss uses. double always takes the log: that error would show at eps = 1e-3
// (5.6e-9), and float64 results must be float64-accurate. eps = 0: S xl exactly.
template <typename T>
inline Vectorized<T> s_log_s_eps(const Vectorized<T>& S, const Vectorized<T>& xl, T eps) {
  using Vec = Vectorized<T>;
  const Vec zero(T(0));
  if (eps == T(0)) return Vec::blendv(S * xl, zero, S == zero);  // 0 log 0 = 0 (also for x = -inf)
  if constexpr (std::is_same_v<T, float>) {
    const Vec small = S < Vec(T(100) * eps);
    if (small.zero_mask() == (1 << Vec::size()) - 1) return S * xl + Vec(eps) - Vec(T(0.5) * eps * eps) / S;
  }
  return Vec::blendv(S * (S + Vec(eps)).log(), zero, S == zero);
}

template <typename T>
inline T s_log_s_eps(T S, T xl, T eps) {
  if (S == T(0)) return T(0);
  return S * (eps > T(0) ? std::log(S + eps) : xl);
}

// ---- position-major: one position, channels contiguous ------------------------------------------

template <typename T>
T forward_pm(const T* x, int64_t C, T eps, T* buf, T* lse_out, T* e_out, T* macc) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t Cv = C - C % V;
  T m = -std::numeric_limits<T>::infinity();
  if (Cv > 0) {
    Vec mv = Vec::loadu(x);
    for (int64_t c = V; c < Cv; c += V) mv = at::vec::maximum(mv, Vec::loadu(x + c));
    m = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, mv);
  }
  for (int64_t c = Cv; c < C; ++c) m = std::max(m, x[c]);
  Vec zv(T(0));
  for (int64_t c = 0; c < Cv; c += V) {
    Vec ex = fast_exp(Vec::loadu(x + c) - Vec(m));
    ex.store(buf + c);
    zv = zv + ex;
  }
  T z = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return a + b; }, zv);
  for (int64_t c = Cv; c < C; ++c) {
    buf[c] = std::exp(x[c] - m);
    z += buf[c];
  }
  const T lse = m + std::log(z), zi = T(1) / z;
  Vec ev(T(0));
  for (int64_t c = 0; c < Cv; c += V) {
    Vec S = Vec::loadu(buf + c) * Vec(zi);
    ev = ev + s_log_s_eps(S, Vec::loadu(x + c) - Vec(lse), eps);
    (Vec::loadu(macc + c) + S).store(macc + c);
  }
  T e = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return a + b; }, ev);
  for (int64_t c = Cv; c < C; ++c) {
    T S = buf[c] * zi;
    e += s_log_s_eps(S, x[c] - lse, eps);
    macc[c] += S;
  }
  *lse_out = lse;
  *e_out = e;
  return e;
}

template <typename T>
void backward_pm(const T* x, int64_t C, T eps, T ge, T lse, T e, const T* gm, T* buf, T* g) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  const int64_t Cv = C - C % V;
  Vec dv(T(0));
  for (int64_t c = 0; c < Cv; c += V) {
    Vec S = fast_exp(Vec::loadu(x + c) - Vec(lse));
    S.store(buf + c);
    dv = dv + S * Vec::loadu(gm + c);
  }
  T dot = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return a + b; }, dv);
  for (int64_t c = Cv; c < C; ++c) {
    buf[c] = std::exp(x[c] - lse);
    dot += buf[c] * gm[c];
  }
  const T base = -ge * e - dot;
  for (int64_t c = 0; c < Cv; c += V) {
    Vec S = Vec::loadu(buf + c);
    Vec r = Vec(ge) * s_log_s_eps(S, Vec::loadu(x + c) - Vec(lse), eps) + S * (Vec::loadu(gm + c) + Vec(base));
    r.store(g + c);
  }
  for (int64_t c = Cv; c < C; ++c) g[c] = ge * s_log_s_eps(buf[c], x[c] - lse, eps) + buf[c] * (gm[c] + base);
}

// NCHW slab of one sample's group (element (c, p) at x[c * cs + p], p < n) to position-major rows
// t[p * C + c], and back. The kernels below then read channels contiguously, as for channels-last.
// Transpose of an M x N block (src rows ld_src apart) into dst (N rows ld_dst apart): 8 x 8 register
// transposes (ATen's AVX2 one for float) inside, scalar at the edges.
template <typename T>
void transpose(const T* src, int64_t ld_src, int64_t M, int64_t N, T* dst, int64_t ld_dst) {
  constexpr int64_t B = 8;
  const int64_t Mb = M - M % B, Nb = N - N % B;
  for (int64_t i = 0; i < Mb; i += B)
    for (int64_t j = 0; j < Nb; j += B)
      at::vec::transpose_mxn<T, B, B>(src + i * ld_src + j, ld_src, dst + j * ld_dst + i, ld_dst);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = (i < Mb ? Nb : 0); j < N; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
}

template <typename T>
void to_rows(const T* x, int64_t cs, int64_t C, int64_t n, T* t) {
  transpose(x, cs, C, n, t, C);
}

template <typename T>
void from_rows(const T* t, int64_t C, int64_t n, T* x, int64_t cs) {
  transpose(t, C, n, C, x, cs);
}

// Pooled logits of window q, position-major: xp[c]; rows of position p at x + p * C.
template <typename T>
void pool_pm(const T* x, int64_t C, int64_t W, int64_t k, int64_t q, T* xp) {
  using Vec = Vectorized<T>;
  std::fill(xp, xp + C, T(0));
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const T* r = x + (i * W + q * k + j) * C;
      at::vec::map2([](Vec a, Vec b) { return a + b; }, xp, xp, r, C);
    }
  const T w = T(1) / T(k * k);
  at::vec::map([w](Vec a) { return a * Vec(w); }, xp, xp, C);
}

template <typename T>
void forward_impl(const Tensor& x, const Geometry& G, T eps, Tensor& ent, Tensor& marg, Tensor& margq, Tensor& stats) {
  const int64_t C = G.C, P = G.P, Q = G.Q, W = G.W, k = G.k;
  const int64_t tasks = G.groups * G.chunks;
  // per-chunk marginal partial sums (the outputs themselves when there is one chunk)
  Tensor part = G.chunks == 1 ? marg : at::empty({G.chunks, C, P}, marg.options());
  Tensor partq = G.chunks == 1 ? margq : at::empty({G.chunks, C, Q}, margq.options());
  std::vector<double> task_ent(2 * tasks, 0.0);
  const T* xd = x.data_ptr<T>();
  T* sd = stats.data_ptr<T>();
  T* pd = part.data_ptr<T>();
  T* pqd = partq.data_ptr<T>();

  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const auto [g, j, h0, nrows, p0, n, nq, q0, b0, b1] = G.task(t);
      std::vector<T> macc(C * n, T(0)), maccq(C * nq, T(0)), xp(C), buf(C);
      std::vector<T> rows_buf(G.channels_last ? 0 : C * n);
      double e0 = 0, e1 = 0;
      for (int64_t b = b0; b < b1; ++b) {
        T* srow = sd + b * G.srow;
        const T* base;  // the group's n positions, position-major
        if (G.channels_last) {
          base = xd + (b * P + p0) * C;
        } else {
          to_rows(xd + b * C * P + p0, P, C, n, rows_buf.data());
          base = rows_buf.data();
        }
        for (int64_t p = 0; p < n; ++p)
          e0 += forward_pm(base + p * C, C, eps, buf.data(), srow + p0 + p, srow + P + p0 + p, macc.data() + p * C);
        for (int64_t q = 0; q < nq; ++q) {
          pool_pm(base, C, W, k, q, xp.data());
          e1 += forward_pm(xp.data(), C, eps, buf.data(), srow + 2 * P + q0 + q, srow + 2 * P + Q + q0 + q,
                           maccq.data() + q * C);
        }
      }
      task_ent[2 * t] = e0;
      task_ent[2 * t + 1] = e1;
      T* pj = pd + j * C * P;
      T* pqj = pqd + j * C * Q;
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t p = 0; p < n; ++p) pj[c * P + p0 + p] = macc[p * C + c];
        for (int64_t q = 0; q < nq; ++q) pqj[c * Q + q0 + q] = maccq[q * C + c];
      }
    }
  });
  if (G.chunks > 1) {  // add the chunks in chunk order
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        T* o = marg.data_ptr<T>() + c * P;
        T* oq = margq.data_ptr<T>() + c * Q;
        std::fill(o, o + P, T(0));
        std::fill(oq, oq + Q, T(0));
        for (int64_t j = 0; j < G.chunks; ++j) {
          for (int64_t p = 0; p < P; ++p) o[p] += pd[(j * C + c) * P + p];
          for (int64_t q = 0; q < Q; ++q) oq[q] += pqd[(j * C + c) * Q + q];
        }
      }
    });
  }
  double e0 = 0, e1 = 0;
  for (int64_t t = 0; t < tasks; ++t) e0 += task_ent[2 * t], e1 += task_ent[2 * t + 1];
  ent.data_ptr<double>()[0] = e0;
  ent.data_ptr<double>()[1] = e1;
}

template <typename T>
void backward_impl(const Tensor& x, const Geometry& G, T eps, T ge0, T ge1, const Tensor& gm_, const Tensor& gmq_,
                   const Tensor& stats, Tensor& grad) {
  const int64_t C = G.C, P = G.P, Q = G.Q, W = G.W, k = G.k;
  // the kernels read g_marg position-major: (P, C)
  Tensor gm = gm_.t().contiguous();
  Tensor gmq = gmq_.t().contiguous();
  const T* xd = x.data_ptr<T>();
  const T* sd = stats.data_ptr<T>();
  const T* gmd = gm.data_ptr<T>();
  const T* gmqd = gmq.data_ptr<T>();
  T* gd = grad.data_ptr<T>();
  const T wk = k > 0 ? T(1) / T(k * k) : T(0);
  const int64_t tasks = G.groups * G.chunks;

  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const auto [g, j, h0, nrows, p0, n, nq, q0, b0, b1] = G.task(t);
      std::vector<T> buf(C), xp(C), gp(C);
      std::vector<T> rows_in(G.channels_last ? 0 : C * n), rows_out(G.channels_last ? 0 : C * n);
      using Vec = Vectorized<T>;
      for (int64_t b = b0; b < b1; ++b) {
        const T* srow = sd + b * G.srow;
        const T* base;
        T* out;
        if (G.channels_last) {
          base = xd + (b * P + p0) * C;
          out = gd + (b * P + p0) * C;
        } else {
          to_rows(xd + b * C * P + p0, P, C, n, rows_in.data());
          base = rows_in.data();
          out = rows_out.data();
        }
        for (int64_t p = 0; p < n; ++p)
          backward_pm(base + p * C, C, eps, ge0, srow[p0 + p], srow[P + p0 + p], gmd + (p0 + p) * C, buf.data(),
                      out + p * C);
        for (int64_t q = 0; q < nq; ++q) {
          pool_pm(base, C, W, k, q, xp.data());
          backward_pm(xp.data(), C, eps, ge1, srow[2 * P + q0 + q], srow[2 * P + Q + q0 + q], gmqd + (q0 + q) * C,
                      buf.data(), gp.data());
          for (int64_t i = 0; i < k; ++i)
            for (int64_t jj = 0; jj < k; ++jj) {
              T* o = out + (i * W + q * k + jj) * C;
              at::vec::map2([wk](Vec a, Vec b) { return a + b * Vec(wk); }, o, o, gp.data(), C);
            }
        }
        if (!G.channels_last) from_rows(rows_out.data(), C, n, gd + b * C * P + p0, P);
      }
    }
  });
}

// The fresh gradient, written once (see huge_pages.h for why the hint).
Tensor empty_output_like(const Tensor& x) {
  Tensor out = at::empty_like(x);
  advise_huge_pages(out);
  return out;
}

void check_input(const Tensor& x, int64_t pool, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be B x C x H x W, got ", x.dim(), "-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": the CPU kernel takes float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.size(0) >= 1 && x.size(1) >= 2 && x.size(2) >= 1 && x.size(3) >= 1, op,
              ": x needs B >= 1, C >= 2, H, W >= 1, got ", x.sizes());
  TORCH_CHECK(pool >= 0 && pool <= std::min(x.size(2), x.size(3)), op, ": pool must be in [0, min(H, W)], got ",
              pool);
}

// channels-last when that is how x is laid out (also B x C x 1 x 1), else NCHW-contiguous
Tensor normalized(const Tensor& x, bool& cl) {
  cl = x.is_contiguous(at::MemoryFormat::ChannelsLast);
  return cl ? x : x.contiguous();
}

std::tuple<Tensor, Tensor, Tensor, Tensor> softmax_stats_cpu(const Tensor& x_, int64_t pool, double eps) {
  check_input(x_, pool, "softmax_stats");
  bool cl;
  Tensor x = normalized(x_, cl);
  Geometry G(x, pool, cl);
  auto opts = x.options();
  Tensor ent = at::zeros({2}, opts.dtype(at::kDouble));
  Tensor marg = at::empty({G.C, G.P}, opts);
  Tensor margq = at::zeros({G.C, G.Q}, opts);
  Tensor stats = at::empty({G.B, G.srow}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "softmax_stats_cpu", [&] {
    forward_impl<scalar_t>(x, G, static_cast<scalar_t>(eps), ent, marg, margq, stats);
  });
  return {ent.to(x.scalar_type()), marg, margq, stats};
}

Tensor softmax_stats_backward_cpu(const Tensor& grad_ent, const Tensor& grad_marg, const Tensor& grad_marg_pool,
                                  const Tensor& x_, const Tensor& stats, int64_t pool, double eps) {
  check_input(x_, pool, "softmax_stats_backward");
  bool cl;
  Tensor x = normalized(x_, cl);
  Geometry G(x, pool, cl);
  TORCH_CHECK(grad_ent.numel() == 2, "softmax_stats_backward: grad_ent must have 2 entries");
  TORCH_CHECK(grad_marg.sizes() == at::IntArrayRef({G.C, G.P}), "softmax_stats_backward: grad_marg must be C x P");
  TORCH_CHECK(grad_marg_pool.sizes() == at::IntArrayRef({G.C, G.Q}),
              "softmax_stats_backward: grad_marg_pool must be C x Q");
  TORCH_CHECK(stats.sizes() == at::IntArrayRef({G.B, G.srow}) && stats.is_contiguous(),
              "softmax_stats_backward: stats must be a contiguous B x (2P + 2Q) tensor");
  Tensor grad = empty_output_like(x);
  Tensor ge = grad_ent.to(at::kDouble).cpu();
  const double ge0 = ge[0].item<double>(), ge1 = ge[1].item<double>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "softmax_stats_backward_cpu", [&] {
    backward_impl<scalar_t>(x, G, static_cast<scalar_t>(eps), static_cast<scalar_t>(ge0), static_cast<scalar_t>(ge1),
                            grad_marg.to(x.scalar_type()), grad_marg_pool.to(x.scalar_type()),
                            stats.to(x.scalar_type()), grad);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmi, CPU, m) {
  m.impl("softmax_stats", &softmax_stats_cpu);
  m.impl("softmax_stats_backward", &softmax_stats_backward_cpu);
}

}  // namespace fastmi
