// Fused CPU kernels of the critic_lse family: row statistics of a score matrix (forward) and the
// gradient of any linear combination of them (backward). See csrc/critic_lse.h for the statistics.
//
// Each row is read from memory once (pass 1: max) and then from L1/L2 once per wanted sum; it is
// never written: the n x m
// intermediates of the eager formulas (masks, exp, softplus) do not exist. Rows run in parallel;
// each row reduces in a fixed order of its own, so results are bitwise identical whatever the
// thread count. fp16/bf16 scores are read one row at a time into a thread-local fp32 buffer (and
// the gradient row written back from one): fp32 arithmetic with O(threads * m) extra memory.
// fp16 <-> fp32 conversions under CPU_CAPABILITY_AVX2 are F16C instructions (in torch's own headers
// too); the build passes -mavx2 -mfma only, so F16C (present on every AVX2 CPU) is enabled here.
#if defined(CPU_CAPABILITY_AVX2) && defined(__GNUC__) && !defined(__F16C__)
#pragma GCC target("f16c")
#endif
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../critic_lse.h"
#include "../critic_lse_inputs.h"
#include "fast_exp.h"
#include "huge_pages.h"
#include "reduced_float.h"

namespace fastmi {
namespace {

using at::vec::Vectorized;

template <typename T>
struct RowLayout {
  int64_t m;           // columns
  int64_t excl;        // one excluded negative column, or -1
  int64_t pos_col;     // the single positive column (diag/index), or -1
  const bool* pmask;   // the row of the positive mask, or nullptr
  bool neg_skip_pos;   // negatives exclude the masked positives
};

template <typename T>
FASTMI_ALWAYS_INLINE Vectorized<T> softplus(const Vectorized<T>& x) {
  // softplus(x) = max(x, 0) + log1p(exp(-|x|)): no overflow for |x| large.
  const Vectorized<T> zero(T(0));
  return at::vec::maximum(x, zero) + fast_log1p_unit(fast_exp(zero - x.abs()));
}

template <typename T>
inline T softplus_scalar(T x) {
  return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}

template <typename T>
inline T sigmoid_scalar(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename T>
inline T clip_scalar(T x, T tau) {
  return std::min(std::max(x, -tau), tau);
}

// Lane mask (all bits set where true) for the columns j0 .. j0+V-1 of one row.
template <typename T>
struct LaneMasks {
  using Vec = Vectorized<T>;
  Vec iota;
  LaneMasks() {
    T buf[Vec::size()];
    for (int k = 0; k < Vec::size(); ++k) buf[k] = T(k);
    iota = Vec::loadu(buf);
  }
  // columns that exist (tail) and are not the excluded column
  inline Vec keep(int64_t j0, int64_t m, int64_t excl) const {
    Vec idx = iota + Vec(T(j0));
    Vec k = idx < Vec(T(m));
    if (excl >= j0 && excl < j0 + Vec::size()) k = k & (idx != Vec(T(excl)));
    return k;
  }
  // lanes whose mask byte equals `want`
  inline Vec from_bools(const bool* b, int64_t j0, int64_t m, bool want) const {
    T buf[Vec::size()];
    for (int k = 0; k < Vec::size(); ++k) {
      const int64_t j = j0 + k;
      buf[k] = (j < m && b[j] == want) ? T(1) : T(0);
    }
    return Vec::loadu(buf) != Vec(T(0));
  }
};

template <typename T>
inline Vectorized<T> load_row(const T* row, int64_t j0, int64_t m) {
  const int64_t left = m - j0;
  return left >= Vectorized<T>::size() ? Vectorized<T>::loadu(row + j0)
                                       : Vectorized<T>::loadu(row + j0, left);
}

template <typename T>
inline T lse_finish(T mx, T sum) {
  // torch.logsumexp's conventions: an empty or all -inf set gives -inf, +inf gives +inf.
  if (std::isinf(mx)) return mx;
  return mx + std::log(sum);
}

template <typename T>
inline Vectorized<T> negative_keep(const LaneMasks<T>& lm, const RowLayout<T>& L, int64_t j0) {
  Vectorized<T> k = lm.keep(j0, L.m, L.excl);
  if (L.neg_skip_pos) k = k & lm.from_bools(L.pmask, j0, L.m, false);
  return k;
}

// The negatives of a row without a positive mask are at most two column ranges: [0, m) minus the
// excluded column. Each range runs through tight loops with no lane masks but the tail's.
struct Ranges {
  int64_t begin[2], end[2];
  int count;
};

template <typename T>
inline Ranges negative_ranges(const RowLayout<T>& L) {
  if (L.excl < 0 || L.excl >= L.m) return {{0, 0}, {L.m, 0}, 1};  // (off-diagonal rows i >= m)
  return {{0, L.excl + 1}, {L.excl, L.m}, 2};
}

// max over p[0:len], NaN-propagating. Four running maxima: at::vec::maximum is a chain of three
// dependent instructions, which would otherwise bound the loop.
template <typename T>
FASTMI_ALWAYS_INLINE Vectorized<T> max_range(const T* p, int64_t len, Vectorized<T> acc) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec m1 = acc, m2 = acc, m3 = acc;
  int64_t j = 0;
  for (; j + 4 * V <= len; j += 4 * V) {
    acc = at::vec::maximum(acc, Vec::loadu(p + j));
    m1 = at::vec::maximum(m1, Vec::loadu(p + j + V));
    m2 = at::vec::maximum(m2, Vec::loadu(p + j + 2 * V));
    m3 = at::vec::maximum(m3, Vec::loadu(p + j + 3 * V));
  }
  for (; j + V <= len; j += V) acc = at::vec::maximum(acc, Vec::loadu(p + j));
  if (j < len) acc = at::vec::maximum(acc, Vec::set(acc, Vec::loadu(p + j, len - j), len - j));
  return at::vec::maximum(at::vec::maximum(acc, m1), at::vec::maximum(m2, m3));
}

// sum over p[0:len] of f(x), two accumulators (consecutive adds do not wait on each other).
template <typename T, typename F>
FASTMI_ALWAYS_INLINE Vectorized<T> sum_range(const T* p, int64_t len, F f, Vectorized<T> acc) {
  using Vec = Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec acc2(T(0));
  int64_t j = 0;
  for (; j + 2 * V <= len; j += 2 * V) {
    acc = acc + f(Vec::loadu(p + j));
    acc2 = acc2 + f(Vec::loadu(p + j + V));
  }
  if (j + V <= len) {
    acc = acc + f(Vec::loadu(p + j));
    j += V;
  }
  if (j < len) acc2 = acc2 + Vec::set(Vec(T(0)), f(Vec::loadu(p + j, len - j)), len - j);
  return acc + acc2;
}

template <typename T>
void row_forward(const T* row, const RowLayout<T>& L, const LaneMasks<T>& lm, T tau, int64_t need,
                 T* out /* NUM_STATS values, stride ostride */, int64_t ostride) {
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  const T inf = std::numeric_limits<T>::infinity();
  const bool want_lse = need & (1 << STAT_LSE), want_clse = need & (1 << STAT_CLSE),
             want_sp = need & (1 << STAT_SP);
  T res[NUM_STATS] = {0, 0, 0, 0, 0, 0};

  if (want_lse || want_clse || want_sp) {
    const Ranges R = negative_ranges(L);
    // pass 1: max over the negatives (clip is monotone, so the clipped max is clip(max)).
    Vec vmax(-inf);
    if (L.neg_skip_pos) {
      for (int64_t j0 = 0; j0 < L.m; j0 += V)
        vmax = at::vec::maximum(vmax, Vec::blendv(Vec(-inf), load_row(row, j0, L.m), negative_keep(lm, L, j0)));
    } else {
      for (int r = 0; r < R.count; ++r) vmax = max_range(row + R.begin[r], R.end[r] - R.begin[r], vmax);
    }
    T mx = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vmax);
    const T cmx = std::isnan(mx) ? mx : clip_scalar(mx, tau);
    // Shifts that keep exp finite even when the max is infinite (the result is then set by lse_finish).
    const Vec shift(std::isinf(mx) ? T(0) : mx), cshift(std::isinf(cmx) ? T(0) : cmx);
    const Vec lo(-tau), hi(tau), zero(T(0));
    auto f_lse = [&](const Vec& x) __attribute__((always_inline)) { return fast_exp(x - shift); };
    auto f_clse = [&](const Vec& x) __attribute__((always_inline)) {
      return fast_exp(at::vec::clamp(x, lo, hi) - cshift);
    };
    auto f_sp = [](const Vec& x) __attribute__((always_inline)) { return softplus(x); };
    // pass 2: the sums, one sweep per statistic over the row (in L1/L2 after pass 1).
    Vec s0(T(0)), s1(T(0)), s2(T(0));
    if (L.neg_skip_pos) {
      for (int64_t j0 = 0; j0 < L.m; j0 += V) {
        const Vec keep = negative_keep(lm, L, j0);
        const Vec x = load_row(row, j0, L.m);
        if (want_lse) s0 = s0 + Vec::blendv(zero, f_lse(x), keep);
        if (want_clse) s1 = s1 + Vec::blendv(zero, f_clse(x), keep);
        if (want_sp) s2 = s2 + Vec::blendv(zero, f_sp(x), keep);
      }
    } else {
      for (int r = 0; r < R.count; ++r) {
        const T* p = row + R.begin[r];
        const int64_t len = R.end[r] - R.begin[r];
        if (want_lse) s0 = sum_range(p, len, f_lse, s0);
        if (want_clse) s1 = sum_range(p, len, f_clse, s1);
        if (want_sp) s2 = sum_range(p, len, f_sp, s2);
      }
    }
    auto add = [](Vec& a, Vec& b) { return a + b; };
    if (want_lse) res[STAT_LSE] = lse_finish(mx, at::vec::vec_reduce_all<T>(add, s0));
    if (want_clse) res[STAT_CLSE] = lse_finish(cmx, at::vec::vec_reduce_all<T>(add, s1));
    if (want_sp) res[STAT_SP] = at::vec::vec_reduce_all<T>(add, s2);
  }

  const bool want_pos = need & (1 << STAT_POS), want_psp = need & (1 << STAT_PSP),
             want_cpos = need & (1 << STAT_CPOS);
  if (want_pos || want_psp || want_cpos) {
    if (L.pmask == nullptr) {
      const T x = row[L.pos_col];
      res[STAT_POS] = want_pos ? x : T(0);
      res[STAT_PSP] = want_psp ? softplus_scalar(-x) : T(0);
      res[STAT_CPOS] = want_cpos ? (std::isnan(x) ? x : clip_scalar(x, tau)) : T(0);
    } else {
      const Vec lo(-tau), hi(tau), zero(T(0));
      Vec p0(T(0)), p1(T(0)), p2(T(0));
      for (int64_t j0 = 0; j0 < L.m; j0 += V) {
        const Vec keep = lm.from_bools(L.pmask, j0, L.m, true);
        const Vec x = load_row(row, j0, L.m);
        if (want_pos) p0 = p0 + Vec::blendv(zero, x, keep);
        if (want_psp) p1 = p1 + Vec::blendv(zero, softplus(zero - x), keep);
        if (want_cpos) p2 = p2 + Vec::blendv(zero, at::vec::clamp(x, lo, hi), keep);
      }
      auto add = [](Vec& a, Vec& b) { return a + b; };
      res[STAT_POS] = at::vec::vec_reduce_all<T>(add, p0);
      res[STAT_PSP] = at::vec::vec_reduce_all<T>(add, p1);
      res[STAT_CPOS] = at::vec::vec_reduce_all<T>(add, p2);
    }
  }
  for (int k = 0; k < NUM_STATS; ++k) out[k * ostride] = res[k];
}

template <typename T>
void row_backward(const T* row, const RowLayout<T>& L, T tau, int64_t need,
                  const T* g /* NUM_STATS grads */, const T* st /* NUM_STATS stats */, T* grow) {
  using Vec = Vectorized<T>;
  const int V = Vec::size();
  // A row whose (clipped) log-sum-exp is +-inf gives exp(S_ij - lse) = 0 at every finite entry:
  // the term adds nothing there, whatever g is (g may be inf or NaN when the row overflowed).
  const bool use_lse = (need & (1 << STAT_LSE)) && g[STAT_LSE] != T(0) && !std::isinf(st[STAT_LSE]);
  const bool use_clse = (need & (1 << STAT_CLSE)) && g[STAT_CLSE] != T(0) && !std::isinf(st[STAT_CLSE]);
  const bool use_sp = (need & (1 << STAT_SP)) && g[STAT_SP] != T(0);
  const Vec zero(T(0)), one(T(1)), lo(-tau), hi(tau);
  const Vec g0(g[STAT_LSE]), g1(g[STAT_CLSE]), g2(g[STAT_SP]);
  const Vec l0(st[STAT_LSE]), l1(st[STAT_CLSE]);
  // Every column first, then the columns that are not negatives are zeroed (their values, even
  // inf or NaN, are discarded) and the positives' terms added.
  auto grad_at = [&](const Vec& x) __attribute__((always_inline)) {
    Vec acc = zero;
    if (use_lse) acc = acc + g0 * fast_exp(x - l0);
    if (use_clse) {
      const Vec inside = (x >= lo) & (x <= hi);
      acc = acc + Vec::blendv(zero, g1 * fast_exp(at::vec::clamp(x, lo, hi) - l1), inside);
    }
    if (use_sp) acc = acc + g2 / (one + fast_exp(zero - x));
    return acc;
  };
  int64_t j0 = 0;
  if (use_lse || use_clse || use_sp) {
    for (; j0 + V <= L.m; j0 += V) grad_at(Vec::loadu(row + j0)).store(grow + j0);
    if (j0 < L.m) grad_at(Vec::loadu(row + j0, L.m - j0)).store(grow + j0, L.m - j0);
    if (L.neg_skip_pos) {
      for (int64_t j = 0; j < L.m; ++j)
        if (L.pmask[j]) grow[j] = T(0);
    } else if (L.excl >= 0 && L.excl < L.m) {
      grow[L.excl] = T(0);
    }
  } else {
    std::fill(grow, grow + L.m, T(0));
  }
  const bool use_pos = (need & (1 << STAT_POS)), use_psp = (need & (1 << STAT_PSP)),
             use_cpos = (need & (1 << STAT_CPOS));
  if (!(use_pos || use_psp || use_cpos)) return;
  auto pos_grad = [&](T x) {
    T d = 0;
    if (use_pos) d += g[STAT_POS];
    if (use_psp) d -= g[STAT_PSP] * sigmoid_scalar(-x);
    if (use_cpos && x >= -tau && x <= tau) d += g[STAT_CPOS];
    return d;
  };
  if (L.pmask == nullptr) {
    grow[L.pos_col] += pos_grad(row[L.pos_col]);
  } else {
    for (int64_t j = 0; j < L.m; ++j)
      if (L.pmask[j]) grow[j] += pos_grad(row[j]);
  }
}

using Inputs = CriticLseInputs;

Inputs check_inputs(const at::Tensor& scores, const std::optional<at::Tensor>& pos_index,
                    const std::optional<at::Tensor>& pos_mask, int64_t neg_mode) {
  return check_critic_lse_inputs(scores, pos_index, pos_mask, neg_mode, /*cuda=*/false, /*max_cols_log2=*/24);
}

template <typename T>
RowLayout<T> row_layout(const Inputs& in, int64_t i, int64_t neg_mode) {
  RowLayout<T> L;
  L.m = in.m;
  L.pmask = in.pos_mask.defined() ? in.pos_mask.data_ptr<bool>() + i * in.m : nullptr;
  L.pos_col = -1;
  if (!L.pmask) {
    L.pos_col = in.pos_index.defined() ? in.pos_index.data_ptr<int64_t>()[i] : i;
    TORCH_CHECK(L.pos_col >= 0 && L.pos_col < in.m, "fastmi::critic_lse: pos_index[", i, "] = ",
                L.pos_col, " is out of range for ", in.m, " columns");
  }
  L.excl = -1;
  L.neg_skip_pos = false;
  if (neg_mode == NEG_OFF_DIAGONAL) L.excl = i;
  if (neg_mode == NEG_OFF_POSITIVE) {
    if (L.pmask) L.neg_skip_pos = true; else L.excl = L.pos_col;
  }
  return L;
}

// A fresh n x m gradient, written once (see huge_pages.h for why the hint).
at::Tensor empty_output(const at::Tensor& like, int64_t n, int64_t m) {
  at::Tensor out = at::empty({n, m}, like.options());
  advise_huge_pages(out);
  return out;
}

int64_t grain_for(int64_t m) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(m, 1)); }

// fp32 for fp16/bf16 scores: the type of the statistics and of the arithmetic.
at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Row i of S as const A* (A: the arithmetic type): a pointer into S itself when S holds A, else its
// conversion into `buf`.
template <typename S_t, typename A>
inline const A* row_as(const S_t* S, int64_t i, int64_t m, std::vector<A>& buf) {
  if constexpr (std::is_same_v<S_t, A>) {
    return S + i * m;
  } else {
    to_float(S + i * m, buf.data(), m);
    return buf.data();
  }
}

template <typename S_t, typename A>
void forward_rows(const Inputs& in, const S_t* S, int64_t neg_mode, A tau, int64_t need, A* out) {
  at::parallel_for(0, in.n, grain_for(in.m), [&](int64_t begin, int64_t end) {
    LaneMasks<A> lm;
    std::vector<A> buf(std::is_same_v<S_t, A> ? 0 : in.m);
    for (int64_t i = begin; i < end; ++i) {
      RowLayout<A> L = row_layout<A>(in, i, neg_mode);
      row_forward<A>(row_as<S_t, A>(S, i, in.m, buf), L, lm, tau, need, out + i, in.n);
    }
  });
}

template <typename S_t, typename A>
void backward_rows(const Inputs& in, const S_t* S, int64_t neg_mode, A tau, int64_t need, const A* G, const A* ST,
                   S_t* out) {
  constexpr bool same = std::is_same_v<S_t, A>;
  at::parallel_for(0, in.n, grain_for(in.m), [&](int64_t begin, int64_t end) {
    std::vector<A> buf(same ? 0 : in.m), gbuf(same ? 0 : in.m);
    for (int64_t i = begin; i < end; ++i) {
      RowLayout<A> L = row_layout<A>(in, i, neg_mode);
      if constexpr (same) {
        row_backward<A>(S + i * in.m, L, tau, need, G + i * NUM_STATS, ST + i * NUM_STATS, out + i * in.m);
      } else {
        row_backward<A>(row_as<S_t, A>(S, i, in.m, buf), L, tau, need, G + i * NUM_STATS, ST + i * NUM_STATS,
                        gbuf.data());
        from_float(gbuf.data(), out + i * in.m, in.m);
      }
    }
  });
}

at::Tensor critic_lse_cpu(const at::Tensor& scores, const std::optional<at::Tensor>& pos_index,
                          const std::optional<at::Tensor>& pos_mask, int64_t neg_mode, double clip,
                          int64_t need) {
  Inputs in = check_inputs(scores, pos_index, pos_mask, neg_mode);
  const auto acc = acc_type(scores.scalar_type());
  at::Tensor stats = at::zeros({NUM_STATS, in.n}, scores.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scores.scalar_type(), "critic_lse_cpu", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    forward_rows<scalar_t, A>(in, in.scores.data_ptr<scalar_t>(), neg_mode, static_cast<A>(clip), need,
                              stats.data_ptr<A>());
  });
  return stats;
}

at::Tensor critic_lse_backward_cpu(const at::Tensor& grad_stats, const at::Tensor& scores,
                                   const std::optional<at::Tensor>& pos_index,
                                   const std::optional<at::Tensor>& pos_mask, int64_t neg_mode,
                                   double clip, int64_t need, const at::Tensor& stats) {
  Inputs in = check_inputs(scores, pos_index, pos_mask, neg_mode);
  check_critic_lse_backward(grad_stats, stats, in);
  const auto acc = acc_type(scores.scalar_type());
  at::Tensor g = grad_stats.to(acc).t().contiguous();  // [n, NUM_STATS]
  at::Tensor st = stats.to(acc).t().contiguous();
  at::Tensor grad = empty_output(scores, in.n, in.m);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scores.scalar_type(), "critic_lse_backward_cpu", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    backward_rows<scalar_t, A>(in, in.scores.data_ptr<scalar_t>(), neg_mode, static_cast<A>(clip), need,
                               g.data_ptr<A>(), st.data_ptr<A>(), grad.data_ptr<scalar_t>());
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmi, CPU, m) {
  m.impl("critic_lse", &critic_lse_cpu);
  m.impl("critic_lse_backward", &critic_lse_backward_cpu);
}

}  // namespace fastmi
