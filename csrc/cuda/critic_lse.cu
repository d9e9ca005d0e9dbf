// Fused CUDA kernels of the critic_lse family: row statistics of a score matrix (forward) and the
// gradient of any linear combination of them (backward). Semantics: csrc/critic_lse.h, and they
// match the CPU kernels of csrc/cpu/critic_lse.cpp (half types are computed in fp32).
//
// Forward: a group of TPR threads per row (one warp for short rows, a whole block for long ones).
// Each thread streams its share of the row once (16-byte vector loads where the row is aligned, a
// scalar head and tail otherwise) and keeps an online log-sum-exp per statistic (running max and
// sum of exp(x - max), rescaled when the max grows); the group merges the partial states with warp
// shuffles, then through shared memory. Backward: the same row groups, elementwise: one read of S,
// one write of dS, nothing n x m saved between the passes.
//
// Special values follow torch.logsumexp and the CPU kernel without trusting fast-math arithmetic on
// them (the build passes --use_fast_math): the online max/sum only ever sees finite values, NaN and
// +inf inputs are recorded as flags on the raw inputs, and the flags decide the result at the end.
//
// The kernel logic lives in __host__ __device__ functions so that a host emulation (tests) can run
// it lane by lane; define FASTMI_CRITIC_LSE_NO_OPS to include this file without the torch ops.
#ifndef FASTMI_CRITIC_LSE_NO_OPS
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../critic_lse_inputs.h"
#endif

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../critic_lse.h"

#define FASTMI_HD __host__ __device__ __forceinline__

namespace fastmi {
namespace critic_lse_kernels {

// ---------------------------------------------------------------------------------------------
// Scalar helpers (A is the accumulation type: float, or double for double inputs).

// +inf, or a quiet NaN: from their bit patterns on the device (fast math may fold 1/0 and 0/0).
template <typename A>
FASTMI_HD A special_v(bool nan) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<A, float>) {
    return __int_as_float(nan ? 0x7fffffff : 0x7f800000);
  } else {
    return __longlong_as_double(nan ? 0x7ff8000000000000LL : 0x7ff0000000000000LL);
  }
#else
  return nan ? std::numeric_limits<A>::quiet_NaN() : std::numeric_limits<A>::infinity();
#endif
}
template <typename A>
FASTMI_HD A inf_v() { return special_v<A>(false); }
template <typename A>
FASTMI_HD A nan_v() { return special_v<A>(true); }

// Comparisons only (no arithmetic), so fast math cannot change them.
template <typename A>
FASTMI_HD bool is_nan(A x) { return !(x == x); }

FASTMI_HD float exp_(float x) { return expf(x); }
FASTMI_HD double exp_(double x) { return exp(x); }
FASTMI_HD float log_(float x) { return logf(x); }
FASTMI_HD double log_(double x) { return log(x); }
FASTMI_HD float log1p_(float x) { return log1pf(x); }
FASTMI_HD double log1p_(double x) { return log1p(x); }
FASTMI_HD float abs_(float x) { return fabsf(x); }
FASTMI_HD double abs_(double x) { return fabs(x); }

// min(max(x, -tau), tau) exactly as the CPU kernel: NaN stays NaN.
template <typename A>
FASTMI_HD A clip_(A x, A tau) {
  const A t = x < -tau ? -tau : x;
  return t > tau ? tau : t;
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)): exp(-inf) = 0 on both the accurate and the fast path.
template <typename A>
FASTMI_HD A softplus_(A x) {
  return (x > A(0) ? x : A(0)) + log1p_(exp_(-abs_(x)));
}

// sigmoid without an infinite denominator (x = -inf gives 0 exactly, +inf gives 1, NaN gives NaN).
template <typename A>
FASTMI_HD A sigmoid_(A x) {
  if (x >= A(0)) return A(1) / (A(1) + exp_(-x));
  const A e = exp_(x);
  return e / (A(1) + e);
}

// ---------------------------------------------------------------------------------------------
// Layout of one row.

struct Need {
  bool lse, clse, sp, pos, psp, cpos;
  FASTMI_HD explicit Need(int need)
      : lse(need & (1 << STAT_LSE)), clse(need & (1 << STAT_CLSE)), sp(need & (1 << STAT_SP)),
        pos(need & (1 << STAT_POS)), psp(need & (1 << STAT_PSP)), cpos(need & (1 << STAT_CPOS)) {}
  FASTMI_HD bool neg() const { return lse || clse || sp; }
  FASTMI_HD bool any_pos() const { return pos || psp || cpos; }
};

// Columns are 32-bit (the host checks m < 2^30); rows and element offsets 64-bit.
struct Row {
  int64_t i;
  int excl;            // the one excluded negative column, or -1
  int pos_col;         // the single positive column (diagonal / pos_index), or -1
  const uint8_t* pm;   // the row of the positive mask, or nullptr
  bool skip_pos;       // negatives exclude the masked positives
  bool read_mask;      // the mask row has to be read
  bool bad;            // pos_index[i] is out of range (the kernels assert; results are NaN)
};

FASTMI_HD Row make_row(const int64_t* pos_index, const uint8_t* pos_mask, int64_t i, int m,
                       int neg_mode, bool want_pos) {
  Row r;
  r.i = i;
  r.pm = pos_mask != nullptr ? pos_mask + i * m : nullptr;
  r.pos_col = -1;
  r.bad = false;
  if (r.pm == nullptr) {
    const int64_t pc = pos_index != nullptr ? pos_index[i] : i;
    if (pc < 0 || pc >= m) {
      r.bad = true;  // never dereferenced: pos_col stays -1
    } else {
      r.pos_col = static_cast<int>(pc);
    }
  }
  r.excl = -1;
  r.skip_pos = false;
  if (neg_mode == NEG_OFF_DIAGONAL) {
    r.excl = i < m ? static_cast<int>(i) : -1;  // a row past the last column excludes nothing
  } else if (neg_mode == NEG_OFF_POSITIVE) {
    if (r.pm != nullptr) r.skip_pos = true; else r.excl = r.pos_col;
  }
  r.read_mask = r.pm != nullptr && (r.skip_pos || want_pos);
  return r;
}

// 16-byte vector of scores.
template <typename T>
struct alignas(16) Pack {
  static constexpr int V = 16 / sizeof(T);
  T v[V];
};

template <int V>
struct alignas(V) MaskPack {
  uint8_t b[V];
};

// Elements before the first 16-byte boundary of a row (all of them if the row is shorter).
template <typename T>
FASTMI_HD int head_len(const T* p, int m) {
  constexpr int V = 16 / sizeof(T);
  const int mis = static_cast<int>((reinterpret_cast<uintptr_t>(p) & 15u) / sizeof(T));
  const int h = (V - mis) % V;
  return h < m ? h : m;
}

template <int V>
FASTMI_HD void load_mask(const uint8_t* p, bool aligned, uint8_t (&out)[V]) {
  if (aligned) {
    const MaskPack<V> mp = *reinterpret_cast<const MaskPack<V>*>(p);
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = mp.b[k];
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = p[k];
  }
}

// ---------------------------------------------------------------------------------------------
// Forward: per-thread partial state, merge, finish.

enum { F_NAN = 1, F_PINF = 2 };

template <typename A>
struct FwdAcc {
  A m0, s0;   // LSE: max of the finite negatives seen (-inf: none), sum of exp(x - m0) over them
  A m1, s1;   // CLSE: the same for clip(x)
  A sp, pos, psp, cpos;
  int flags;  // F_NAN: some negative is NaN; F_PINF: some negative is +inf
};

template <typename A>
FASTMI_HD FwdAcc<A> fwd_identity() {
  FwdAcc<A> s;
  s.m0 = s.m1 = -inf_v<A>();
  s.s0 = s.s1 = s.sp = s.pos = s.psp = s.cpos = A(0);
  s.flags = 0;
  return s;
}

// Adds K values, v[k] finite or -inf (excluded), to the online state (m, s).
template <typename A, int K>
FASTMI_HD void online_add(A& m, A& s, const A (&v)[K]) {
  const A NINF = -inf_v<A>();
  A cm = NINF;
#pragma unroll
  for (int k = 0; k < K; ++k) cm = v[k] > cm ? v[k] : cm;
  if (cm > m) {
    s = m > NINF ? s * exp_(m - cm) : A(0);
    m = cm;
  }
#pragma unroll
  for (int k = 0; k < K; ++k) s += v[k] > NINF ? exp_(v[k] - m) : A(0);
}

// Merges the online state (m2, s2) into (m, s).
template <typename A>
FASTMI_HD void online_merge(A& m, A& s, A m2, A s2) {
  const A NINF = -inf_v<A>();
  const A M = m2 > m ? m2 : m;
  A r = m > NINF ? s * exp_(m - M) : A(0);
  r += m2 > NINF ? s2 * exp_(m2 - M) : A(0);
  m = M;
  s = r;
}

// K consecutive entries of a row: values, membership in N_i and (mask positives) in P_i.
template <typename A, int K>
FASTMI_HD void consume(FwdAcc<A>& st, const A (&x)[K], const bool (&neg)[K], const bool (&pos)[K],
                       const Need& f, bool mpos, A tau) {
  const A INF = inf_v<A>(), NINF = -INF;
  if (f.lse || f.clse) {
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (neg[k]) st.flags |= (is_nan(x[k]) ? int(F_NAN) : 0) | (x[k] == INF ? int(F_PINF) : 0);
  }
  if (f.lse) {
    A v[K];
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = (neg[k] && abs_(x[k]) < INF) ? x[k] : NINF;
    online_add<A, K>(st.m0, st.s0, v);
  }
  if (f.clse) {
    A v[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const A y = clip_(x[k], tau);
      v[k] = (neg[k] && abs_(y) < INF) ? y : NINF;
    }
    online_add<A, K>(st.m1, st.s1, v);
  }
  if (f.sp) {
#pragma unroll
    for (int k = 0; k < K; ++k) st.sp += neg[k] ? softplus_(x[k]) : A(0);
  }
  if (mpos) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (f.pos) st.pos += pos[k] ? x[k] : A(0);
      if (f.psp) st.psp += pos[k] ? softplus_(-x[k]) : A(0);
      if (f.cpos) st.cpos += pos[k] ? clip_(x[k], tau) : A(0);
    }
  }
}

// The positive-mask bytes of the V entries from column j0 (zeros when the row reads no mask).
template <int V, typename R>
FASTMI_HD void pack_mask(const R& r, int j0, bool aligned, uint8_t (&mb)[V]) {
  if (r.read_mask) {
    load_mask<V>(r.pm + j0, aligned, mb);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) mb[k] = 0;
  }
}

// vec(pack, c) for the 16-byte packs c = lane, lane + TPR, ... < nvec of a row, software-pipelined:
// the next load is in flight during vec's math. One call site of vec, so it is inlined once.
template <int TPR, typename T, typename F>
FASTMI_HD void for_each_pack(const Pack<T>* pv, int nvec, int lane, F&& vec) {
  if (lane >= nvec) return;
  int c = lane;
  Pack<T> cur = pv[c];
  for (;;) {
    const int cn = c + TPR;
    const bool more = cn < nvec;
    const Pack<T> nxt = more ? pv[cn] : cur;
    vec(cur, c);
    if (!more) break;
    cur = nxt;
    c = cn;
  }
}

// The partial state of thread `lane` of a group of TPR threads that reduces one row.
template <int TPR, typename T, typename A>
FASTMI_HD FwdAcc<A> fwd_lane(const T* row, int m, const Row& r, const Need& f, A tau, int lane) {
  constexpr int V = Pack<T>::V;
  FwdAcc<A> st = fwd_identity<A>();
  const bool mpos = r.pm != nullptr && f.any_pos();
  if (!(f.neg() || mpos)) return st;

  auto scalar = [&](int j) {
    const bool pm = r.read_mask && r.pm[j] != 0;
    const A x[1] = {static_cast<A>(row[j])};
    const bool pos[1] = {pm};
    const bool neg[1] = {j != r.excl && !(r.skip_pos && pm)};
    consume<A, 1>(st, x, neg, pos, f, mpos, tau);
  };
  const int head = head_len(row, m);
  const int nvec = (m - head) / V;
  const int tail = head + nvec * V;
  const bool mask_vec = r.read_mask && (reinterpret_cast<uintptr_t>(r.pm + head) % V) == 0;
  auto vec = [&](const Pack<T>& pk, int c) {
    const int j0 = head + c * V;
    uint8_t mb[V];
    pack_mask<V>(r, j0, mask_vec, mb);
    A x[V];
    bool neg[V], pos[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      x[k] = static_cast<A>(pk.v[k]);
      pos[k] = mb[k] != 0;
      neg[k] = (j0 + k != r.excl) && !(r.skip_pos && pos[k]);
    }
    consume<A, V>(st, x, neg, pos, f, mpos, tau);
  };

  // The vector body, software-pipelined: the next 16-byte load is in flight during the math.
  const Pack<T>* pv = reinterpret_cast<const Pack<T>*>(row + head);
  for_each_pack<TPR>(pv, nvec, lane, vec);
  // The scalar head [0, head) and tail [tail, m), fewer than 2 V entries, in one loop.
  const int nscalar = head + (m - tail);
  for (int t = lane; t < nscalar; t += TPR) scalar(t < head ? t : tail + (t - head));
  return st;
}

// a <- a (+) b for the statistics that are computed (the others stay the identity).
template <typename A>
FASTMI_HD void merge(FwdAcc<A>& a, const FwdAcc<A>& b, const Need& f, bool mpos) {
  if (f.lse) online_merge(a.m0, a.s0, b.m0, b.s0);
  if (f.clse) online_merge(a.m1, a.s1, b.m1, b.s1);
  if (f.sp) a.sp += b.sp;
  if (mpos) {
    a.pos += b.pos;
    a.psp += b.psp;
    a.cpos += b.cpos;
  }
  a.flags |= b.flags;
}

// lse_finish of the CPU kernel, with the flags: NaN wins, then +inf, then the empty set (-inf).
template <typename A>
FASTMI_HD A lse_result(A m, A s, bool nan, bool pinf) {
  const A INF = inf_v<A>();
  if (nan) return nan_v<A>();
  if (pinf) return INF;
  return m > -INF ? m + log_(s) : -INF;
}

// Writes the six statistics of row r.i from the reduced state.
template <typename T, typename A>
FASTMI_HD void fwd_finish(const FwdAcc<A>& st, const Row& r, const T* row, const Need& f, A tau,
                          A* out, int64_t n) {
  const A INF = inf_v<A>();
  A res[NUM_STATS];
#pragma unroll
  for (int k = 0; k < NUM_STATS; ++k) res[k] = A(0);
  const bool nan = (st.flags & F_NAN) != 0, pinf = (st.flags & F_PINF) != 0;
  if (f.lse) res[STAT_LSE] = lse_result(st.m0, st.s0, nan, pinf);
  // clip(+inf) is +inf only when tau is: a +inf negative then makes CLSE +inf.
  if (f.clse) res[STAT_CLSE] = lse_result(st.m1, st.s1, nan, pinf && clip_(INF, tau) == INF);
  if (f.sp) res[STAT_SP] = st.sp;
  if (r.pm != nullptr) {
    if (f.pos) res[STAT_POS] = st.pos;
    if (f.psp) res[STAT_PSP] = st.psp;
    if (f.cpos) res[STAT_CPOS] = st.cpos;
  } else if (f.any_pos() && !r.bad) {
    const A x = static_cast<A>(row[r.pos_col]);
    if (f.pos) res[STAT_POS] = x;
    if (f.psp) res[STAT_PSP] = softplus_(-x);
    if (f.cpos) res[STAT_CPOS] = clip_(x, tau);
  }
  if (r.bad) {
    const bool want[NUM_STATS] = {f.lse, f.clse, f.sp, f.pos, f.psp, f.cpos};
#pragma unroll
    for (int k = 0; k < NUM_STATS; ++k)
      if (want[k]) res[k] = nan_v<A>();
  }
#pragma unroll
  for (int k = 0; k < NUM_STATS; ++k) out[k * n + r.i] = res[k];
}

// ---------------------------------------------------------------------------------------------
// Backward: per-row coefficients, per-element gradient.

template <typename A>
struct BwdRow {
  A g[NUM_STATS];  // dL/dstats of the row (0 for statistics not in need)
  A l0, l1;        // LSE and CLSE of the row
  bool use_lse, use_clse, use_sp, use_pos, use_psp, use_cpos;
};

template <typename A>
FASTMI_HD BwdRow<A> make_bwd_row(const A* G, const A* ST, int64_t i, int64_t n, const Need& f) {
  BwdRow<A> b;
  const bool want[NUM_STATS] = {f.lse, f.clse, f.sp, f.pos, f.psp, f.cpos};
#pragma unroll
  for (int k = 0; k < NUM_STATS; ++k) b.g[k] = want[k] ? G[k * n + i] : A(0);
  // As the CPU kernel: negative-set terms with a zero gradient are skipped (no 0 * inf), and so are
  // those of a row whose (clipped) lse is +-inf: exp(x - lse) = 0 at every finite x, whatever g is
  // (inf or NaN when the row overflowed).
  const A l0 = f.lse ? ST[STAT_LSE * n + i] : A(0);
  const A l1 = f.clse ? ST[STAT_CLSE * n + i] : A(0);
  b.use_lse = f.lse && b.g[STAT_LSE] != A(0) && !(abs_(l0) == inf_v<A>());
  b.use_clse = f.clse && b.g[STAT_CLSE] != A(0) && !(abs_(l1) == inf_v<A>());
  b.use_sp = f.sp && b.g[STAT_SP] != A(0);
  b.use_pos = f.pos;
  b.use_psp = f.psp;
  b.use_cpos = f.cpos;
  b.l0 = b.use_lse ? l0 : A(0);
  b.l1 = b.use_clse ? l1 : A(0);
  return b;
}

template <typename A>
FASTMI_HD A bwd_elem(A x, bool neg, bool pos, const BwdRow<A>& b, A tau) {
  const bool inside = x >= -tau && x <= tau;
  A a = A(0);
  if (b.use_lse) a += b.g[STAT_LSE] * exp_(x - b.l0);
  if (b.use_clse) a += inside ? b.g[STAT_CLSE] * exp_(clip_(x, tau) - b.l1) : A(0);
  if (b.use_sp) a += b.g[STAT_SP] * sigmoid_(x);
  a = neg ? a : A(0);  // select: whatever a is outside N_i is dropped
  if (pos) {
    A d = A(0);
    if (b.use_pos) d += b.g[STAT_POS];
    if (b.use_psp) d -= b.g[STAT_PSP] * sigmoid_(-x);
    if (b.use_cpos && inside) d += b.g[STAT_CPOS];
    a += d;
  }
  return a;
}

// Thread `lane` of the group of TPR threads of one row writes its share of the row's gradient.
template <int TPR, typename T, typename A>
FASTMI_HD void bwd_lane(const T* row, T* orow, int m, const Row& r, const BwdRow<A>& b, A tau,
                        int lane) {
  constexpr int V = Pack<T>::V;
  const bool any_pos = b.use_pos || b.use_psp || b.use_cpos;
  const bool single = r.pm == nullptr;
  auto grad = [&](A x, int j, bool pm) -> A {
    if (r.bad) return nan_v<A>();
    const bool pos = any_pos && (single ? j == r.pos_col : pm);
    const bool neg = j != r.excl && !(r.skip_pos && pm);
    return bwd_elem(x, neg, pos, b, tau);
  };
  auto scalar = [&](int j) {
    const bool pm = r.read_mask && r.pm[j] != 0;
    orow[j] = static_cast<T>(grad(static_cast<A>(row[j]), j, pm));
  };
  // Vector loads and stores need the same misalignment on both sides; else the row is all scalar.
  int head = head_len(row, m);
  if (head != head_len(orow, m)) head = m;
  const int nvec = (m - head) / V;
  const int tail = head + nvec * V;
  const bool mask_vec = r.read_mask && (reinterpret_cast<uintptr_t>(r.pm + head) % V) == 0;
  const Pack<T>* pv = reinterpret_cast<const Pack<T>*>(row + head);
  Pack<T>* po = reinterpret_cast<Pack<T>*>(orow + head);
  auto vec = [&](const Pack<T>& pk, int c) {
    const int j0 = head + c * V;
    uint8_t mb[V];
    pack_mask<V>(r, j0, mask_vec, mb);
    Pack<T> o;
#pragma unroll
    for (int k = 0; k < V; ++k) o.v[k] = static_cast<T>(grad(static_cast<A>(pk.v[k]), j0 + k, mb[k] != 0));
    po[c] = o;
  };

  for_each_pack<TPR>(pv, nvec, lane, vec);
  // Scalar head and tail (the whole row when input and output are misaligned to each other).
  const int nscalar = head + (m - tail);
  for (int t = lane; t < nscalar; t += TPR) scalar(t < head ? t : tail + (t - head));
}

// ---------------------------------------------------------------------------------------------
// Device kernels.

template <typename A>
__device__ __forceinline__ void warp_reduce(FwdAcc<A>& st, const Need& f, bool mpos) {
  constexpr unsigned FULL = 0xffffffffu;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    FwdAcc<A> o = fwd_identity<A>();
    if (f.lse) {
      o.m0 = __shfl_xor_sync(FULL, st.m0, off);
      o.s0 = __shfl_xor_sync(FULL, st.s0, off);
    }
    if (f.clse) {
      o.m1 = __shfl_xor_sync(FULL, st.m1, off);
      o.s1 = __shfl_xor_sync(FULL, st.s1, off);
    }
    if (f.sp) o.sp = __shfl_xor_sync(FULL, st.sp, off);
    if (mpos) {
      o.pos = __shfl_xor_sync(FULL, st.pos, off);
      o.psp = __shfl_xor_sync(FULL, st.psp, off);
      o.cpos = __shfl_xor_sync(FULL, st.cpos, off);
    }
    if (f.lse || f.clse) o.flags = __shfl_xor_sync(FULL, st.flags, off);
    merge(st, o, f, mpos);
  }
}

// Blocks per SM to plan registers for: 4 x 256 threads (64 registers) for 2- and 4-byte types;
// 3 x 256 for double, whose exp/log need more registers (no spills).
template <typename T>
constexpr int min_blocks(int block) {
  return block > 256 ? 1 : (sizeof(T) == 8 ? 3 : 4);
}

// Rows are handled by groups of TPR threads (TPR = 32: a warp per row, BLOCK / 32 rows per block;
// TPR = BLOCK: a block per row); groups stride over the rows.
template <typename T, typename A, int TPR, int BLOCK>
__global__ void __launch_bounds__(BLOCK, min_blocks<T>(BLOCK))
    critic_lse_fwd_kernel(const T* __restrict__ S, const int64_t* __restrict__ pos_index,
                          const uint8_t* __restrict__ pos_mask, int64_t n, int m, int neg_mode,
                          A tau, int need, A* __restrict__ out) {
  static_assert(TPR % 32 == 0 && BLOCK % TPR == 0 && TPR <= 1024, "bad group size");
  constexpr int RPB = BLOCK / TPR;
  constexpr int NW = TPR / 32;
  __shared__ FwdAcc<A> red[NW];
  const int lane = threadIdx.x % TPR;
  const Need f(need);
  const bool mpos = pos_mask != nullptr && f.any_pos();
  // The loop bounds are the same for all threads of a group (for TPR = BLOCK: of the block).
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * RPB + threadIdx.x / TPR; i < n;
       i += static_cast<int64_t>(gridDim.x) * RPB) {
    const Row r = make_row(pos_index, pos_mask, i, m, neg_mode, f.any_pos());
    if (lane == 0) {
      CUDA_KERNEL_ASSERT_MSG(!r.bad, "fastmi::critic_lse: pos_index out of range");
    }
    const T* row = S + i * static_cast<int64_t>(m);
    FwdAcc<A> st = fwd_lane<TPR>(row, m, r, f, tau, lane);
    warp_reduce(st, f, mpos);
    if constexpr (NW > 1) {
      const int warp = lane / 32, wl = lane % 32;
      if (wl == 0) red[warp] = st;
      __syncthreads();
      if (warp == 0) {
        st = wl < NW ? red[wl] : fwd_identity<A>();
        warp_reduce(st, f, mpos);
      }
      __syncthreads();  // red is written again for the next row
    }
    if (lane == 0) fwd_finish(st, r, row, f, tau, out, n);
  }
}

template <typename T, typename A, int TPR, int BLOCK>
__global__ void __launch_bounds__(BLOCK, min_blocks<T>(BLOCK))
    critic_lse_bwd_kernel(const T* __restrict__ S, const int64_t* __restrict__ pos_index,
                          const uint8_t* __restrict__ pos_mask, int64_t n, int m, int neg_mode,
                          A tau, int need, const A* __restrict__ G, const A* __restrict__ ST,
                          T* __restrict__ out) {
  static_assert(TPR % 32 == 0 && BLOCK % TPR == 0 && TPR <= 1024, "bad group size");
  constexpr int RPB = BLOCK / TPR;
  const int lane = threadIdx.x % TPR;
  const Need f(need);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * RPB + threadIdx.x / TPR; i < n;
       i += static_cast<int64_t>(gridDim.x) * RPB) {
    const Row r = make_row(pos_index, pos_mask, i, m, neg_mode, f.any_pos());
    if (lane == 0) {
      CUDA_KERNEL_ASSERT_MSG(!r.bad, "fastmi::critic_lse_backward: pos_index out of range");
    }
    const BwdRow<A> b = make_bwd_row(G, ST, i, n, f);
    const int64_t off = i * static_cast<int64_t>(m);
    bwd_lane<TPR>(S + off, out + off, m, r, b, tau, lane);
  }
}

}  // namespace critic_lse_kernels

// ---------------------------------------------------------------------------------------------
// Host wrappers and registration.
#ifndef FASTMI_CRITIC_LSE_NO_OPS
namespace {

using namespace critic_lse_kernels;

using Inputs = CriticLseInputs;

Inputs check_inputs(const at::Tensor& scores, const std::optional<at::Tensor>& pos_index,
                    const std::optional<at::Tensor>& pos_mask, int64_t neg_mode) {
  return check_critic_lse_inputs(scores, pos_index, pos_mask, neg_mode, /*cuda=*/true, /*max_cols_log2=*/30);
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Threads per row: a warp for short rows or when there are rows enough to fill the GPU with warps;
// else a block of 256 (or 1024 when there are only a few rows).
struct Plan {
  int tpr, block, grid;
};

Plan plan_for(int64_t n, int64_t m) {
  int dev = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  sms = std::max(sms, 1);
  Plan p;
  if (m <= 512 || n >= int64_t(sms) * 64) {
    p.tpr = 32;
  } else if (n <= int64_t(sms) * 2) {
    p.tpr = 1024;
  } else {
    p.tpr = 256;
  }
  p.block = std::max(p.tpr, 256);
  const int64_t rpb = p.block / p.tpr;
  const int64_t want = (n + rpb - 1) / rpb;
  const int64_t cap = int64_t(sms) * (2048 / p.block) * 8;  // groups stride over the rest
  p.grid = static_cast<int>(std::max<int64_t>(1, std::min(want, cap)));
  return p;
}

const uint8_t* mask_ptr(const Inputs& in) {
  return in.pos_mask.defined() ? reinterpret_cast<const uint8_t*>(in.pos_mask.data_ptr<bool>())
                               : nullptr;
}
const int64_t* index_ptr(const Inputs& in) {
  return in.pos_index.defined() ? in.pos_index.data_ptr<int64_t>() : nullptr;
}

template <typename T, typename A, int TPR, int BLOCK>
void launch_fwd(const Plan& p, const Inputs& in, int64_t neg_mode, A tau, int need, A* out,
                cudaStream_t stream) {
  critic_lse_fwd_kernel<T, A, TPR, BLOCK><<<p.grid, BLOCK, 0, stream>>>(
      in.scores.data_ptr<T>(), index_ptr(in), mask_ptr(in), in.n, static_cast<int>(in.m), static_cast<int>(neg_mode),
      tau, need, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, typename A, int TPR, int BLOCK>
void launch_bwd(const Plan& p, const Inputs& in, int64_t neg_mode, A tau, int need, const A* G,
                const A* ST, T* out, cudaStream_t stream) {
  critic_lse_bwd_kernel<T, A, TPR, BLOCK><<<p.grid, BLOCK, 0, stream>>>(
      in.scores.data_ptr<T>(), index_ptr(in), mask_ptr(in), in.n, static_cast<int>(in.m), static_cast<int>(neg_mode),
      tau, need, G, ST, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor critic_lse_cuda(const at::Tensor& scores, const std::optional<at::Tensor>& pos_index,
                           const std::optional<at::Tensor>& pos_mask, int64_t neg_mode, double clip,
                           int64_t need) {
  Inputs in = check_inputs(scores, pos_index, pos_mask, neg_mode);
  const c10::cuda::CUDAGuard guard(scores.device());
  at::Tensor stats = at::empty({NUM_STATS, in.n}, scores.options().dtype(acc_type(scores.scalar_type())));
  if (in.n == 0) return stats;
  const Plan p = plan_for(in.n, in.m);
  const int need_bits = static_cast<int>(need & ((1 << NUM_STATS) - 1));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scores.scalar_type(), "critic_lse_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const A tau = static_cast<A>(clip);
    A* out = stats.data_ptr<A>();
    if (p.tpr == 32) {
      launch_fwd<scalar_t, A, 32, 256>(p, in, neg_mode, tau, need_bits, out, stream);
    } else if (p.tpr == 256) {
      launch_fwd<scalar_t, A, 256, 256>(p, in, neg_mode, tau, need_bits, out, stream);
    } else {
      launch_fwd<scalar_t, A, 1024, 1024>(p, in, neg_mode, tau, need_bits, out, stream);
    }
  });
  return stats;
}

at::Tensor critic_lse_backward_cuda(const at::Tensor& grad_stats, const at::Tensor& scores,
                                    const std::optional<at::Tensor>& pos_index,
                                    const std::optional<at::Tensor>& pos_mask, int64_t neg_mode,
                                    double clip, int64_t need, const at::Tensor& stats) {
  Inputs in = check_inputs(scores, pos_index, pos_mask, neg_mode);
  check_critic_lse_backward(grad_stats, stats, in);
  const c10::cuda::CUDAGuard guard(scores.device());
  const at::ScalarType at_acc = acc_type(scores.scalar_type());
  const at::Tensor g = grad_stats.to(at_acc).contiguous();  // [NUM_STATS, n]
  const at::Tensor st = stats.to(at_acc).contiguous();
  at::Tensor grad = at::empty({in.n, in.m}, scores.options());
  if (in.n == 0 || in.m == 0) return grad;
  const Plan p = plan_for(in.n, in.m);
  const int need_bits = static_cast<int>(need & ((1 << NUM_STATS) - 1));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scores.scalar_type(), "critic_lse_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const A tau = static_cast<A>(clip);
    const A* G = g.data_ptr<A>();
    const A* ST = st.data_ptr<A>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    if (p.tpr == 32) {
      launch_bwd<scalar_t, A, 32, 256>(p, in, neg_mode, tau, need_bits, G, ST, out, stream);
    } else if (p.tpr == 256) {
      launch_bwd<scalar_t, A, 256, 256>(p, in, neg_mode, tau, need_bits, G, ST, out, stream);
    } else {
      launch_bwd<scalar_t, A, 1024, 1024>(p, in, neg_mode, tau, need_bits, G, ST, out, stream);
    }
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmi, CUDA, m) {
  m.impl("critic_lse", &critic_lse_cuda);
  m.impl("critic_lse_backward", &critic_lse_backward_cuda);
}
#endif  // FASTMI_CRITIC_LSE_NO_OPS

}  // namespace fastmi
#undef FASTMI_HD
