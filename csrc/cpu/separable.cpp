// Fused CPU kernels of the separable family: log-sum-exp statistics of S without S, where
//           S_ij = a_i b_j (x_i . y_j)      (a = x_scale, b = y_scale: temperature, cosine norms)
// Forward:  row_lse[i] = log sum_{j in N_i} exp(S_ij)      (and, when `cols`,
//           col_lse[j] = log sum_{i in N^j} exp(S_ij)),     pos[i] = S_{i p(i)}
// Backward: given g = dL/drow_lse, h = dL/dcol_lse and q = dL/dpos,
//           dS_ij = g_i exp(S_ij - row_lse_i) + h_j exp(S_ij - col_lse_j)   (0 off the negatives)
//                   + q_i [j = p(i)]
//           E = a dS b:  dx = E y,  dy = E^T x,  da_i = sum_j dS_ij b_j (x_i . y_j),  db likewise
// S exists only as one TILE x TILE block per thread, computed with the CPU matmul (at::mm, MKL or
// OpenBLAS) and reduced on the fly, so memory is O(threads * TILE^2) beyond inputs and outputs.
//
// The positive column p(i) is pos_index[i], or i (the diagonal) when pos_index is None. Negatives
// exclude at most one column per row (`exclude`): none, the diagonal, or the positive column.
// Computing pos here too (rather than in autograd) keeps the op the only user of x and y, so their
// gradients are the kernel's outputs with no O(n d) temporaries or accumulations around them.
//
// Schedule: rows and columns are cut into T super-blocks each (T depends only on n and m). Step s
// runs the T block pairs (I, (I + s) mod T) in parallel: no two of them share a row block or a
// column block, so every row statistic / dx row and every column statistic / dy row has a single
// writer per step and is accumulated in the same order whatever the thread count. No atomics, no
// per-thread copies of dy; the tile GEMMs run single-threaded inside the tasks (parallel_tasks.h):
// the results are deterministic and independent of the number of threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "fast_exp.h"
#include "parallel_tasks.h"

namespace fastmi {
namespace {

using at::vec::Vectorized;

constexpr int64_t TILE = 256;    // rows and columns of one score tile
constexpr int64_t SUPER = 512;   // nominal rows (columns) of a super-block of the schedule

enum Exclude { EXCL_NONE = 0, EXCL_DIAG = 1, EXCL_POSITIVE = 2 };

struct Schedule {
  int64_t n, m, T, rows_per, cols_per;
  Schedule(int64_t n_, int64_t m_) : n(n_), m(m_) {
    T = std::max<int64_t>(1, (std::max(n, m) + SUPER - 1) / SUPER);
    rows_per = (n + T - 1) / T;
    cols_per = (m + T - 1) / T;
  }
  int64_t row_begin(int64_t I) const { return std::min(n, I * rows_per); }
  int64_t row_end(int64_t I) const { return std::min(n, (I + 1) * rows_per); }
  int64_t col_begin(int64_t J) const { return std::min(m, J * cols_per); }
  int64_t col_end(int64_t J) const { return std::min(m, (J + 1) * cols_per); }

  // f(I, J) over all block pairs, T steps of T independent pairs.
  template <typename F>
  void run(const F& f) const {
    for (int64_t step = 0; step < T; ++step) {
      parallel_tasks(T, [&](int64_t I) { f(I, (I + step) % T); });
    }
  }
};

struct Inputs {
  at::Tensor x, y, idx;  // contiguous; idx is int64 [n] or undefined
  at::Tensor a, b;       // x_scale [n], y_scale [m] in the dtype of x
  int64_t n, m, d, exclude;
  bool cols;
};

Inputs check_inputs(const char* op, const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_scale,
                    const at::Tensor& y_scale, const std::optional<at::Tensor>& pos_index, int64_t exclude,
                    bool cols) {
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2, op, ": x and y must be 2-D");
  TORCH_CHECK(x.size(1) == y.size(1), op, ": x has ", x.size(1), " features but y has ", y.size(1));
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), op, ": x and y must have the same dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              " (CPU): float32 or float64 inputs expected, got ", x.scalar_type());
  TORCH_CHECK(exclude >= EXCL_NONE && exclude <= EXCL_POSITIVE, op, ": exclude must be 0, 1 or 2");
  // The tile matmuls below are internal: detached views keep autograd out of at::mm_out / addmm_.
  Inputs in{x.detach().contiguous(), y.detach().contiguous(), at::Tensor(), at::Tensor(), at::Tensor(),
            x.size(0), y.size(0), x.size(1), exclude, cols};
  TORCH_CHECK(x_scale.dim() == 1 && x_scale.size(0) == in.n && y_scale.dim() == 1 && y_scale.size(0) == in.m, op,
              ": x_scale must have n entries and y_scale m entries");
  in.a = x_scale.detach().to(x.scalar_type()).contiguous();
  in.b = y_scale.detach().to(x.scalar_type()).contiguous();
  if (pos_index.has_value()) {
    TORCH_CHECK(pos_index->dim() == 1 && pos_index->size(0) == in.n, op, ": pos_index must have n entries");
    in.idx = pos_index->to(at::kLong).contiguous();
    const int64_t* p = in.idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < in.n; ++i)
      TORCH_CHECK(p[i] >= 0 && p[i] < in.m, op, ": pos_index[", i, "] = ", p[i], " is outside [0, ", in.m, ")");
  } else {
    TORCH_CHECK(in.n <= in.m, op, ": diagonal positives need n <= m");
  }
  return in;
}

// The positive column of row i.
inline int64_t positive_col(const int64_t* idx, int64_t i) { return idx ? idx[i] : i; }

// The excluded column of row i, or -1.
inline int64_t excluded_col(const Inputs& in, const int64_t* idx, int64_t i) {
  if (in.exclude == EXCL_DIAG) return i;
  if (in.exclude == EXCL_POSITIVE) return positive_col(idx, i);
  return -1;
}

// raw = x[r0:r0+rn] . y[c0:c0+cn]^T (unscaled), a view of the thread's buffer.
at::Tensor raw_tile(const Inputs& in, at::Tensor& buf, int64_t r0, int64_t rn, int64_t c0, int64_t cn) {
  at::Tensor R = buf.narrow(0, 0, rn * cn).view({rn, cn});
  at::mm_out(R, in.x.narrow(0, r0, rn), in.y.narrow(0, c0, cn).t());
  return R;
}

// s_i. = a_i b_. raw_i. for one tile row, with the excluded entry (if in the tile) at -inf.
template <typename T>
inline void scale_row(const T* raw, T* s, int64_t cn, T a, const T* b, int64_t excl_in_tile) {
  using Vec = Vectorized<T>;
  const int64_t V = Vec::size();
  const Vec va(a);
  int64_t j = 0;
  for (; j + V <= cn; j += V) (va * Vec::loadu(b + j) * Vec::loadu(raw + j)).store(s + j);
  for (; j < cn; ++j) s[j] = a * b[j] * raw[j];
  if (excl_in_tile >= 0 && excl_in_tile < cn) s[excl_in_tile] = -std::numeric_limits<T>::infinity();
}

template <typename T>
inline Vectorized<T> load(const T* p, int64_t left) {
  return left >= Vectorized<T>::size() ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, left);
}

// A finite stand-in for a max of -inf, so that exp(s - max) is 0 instead of NaN.
template <typename T>
inline T safe_max(T mx) {
  return mx == -std::numeric_limits<T>::infinity() ? T(0) : mx;
}

// Online row update: (mx, sum) of row i absorbs the tile row s[0:cn].
template <typename T>
void absorb_row(const T* s, int64_t cn, T& mx, T& sum) {
  using Vec = Vectorized<T>;
  const int64_t V = Vec::size();
  const T ninf = -std::numeric_limits<T>::infinity();
  T tmax = at::vec::reduce_all<T>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, s, cn);
  const T M = std::max(mx, tmax);
  if (std::isnan(tmax)) {
    mx = tmax;
    sum = tmax;
    return;
  }
  const T Ms = safe_max(M);
  Vec acc(T(0));
  const Vec vM(Ms);
  int64_t j = 0;
  for (; j + V <= cn; j += V) acc = acc + fast_exp(Vec::loadu(s + j) - vM);
  if (j < cn) acc = acc + Vec::set(Vec(T(0)), fast_exp(load(s + j, cn - j) - vM), cn - j);
  T tsum = at::vec::vec_reduce_all<T>([](Vec& a, Vec& b) { return a + b; }, acc);
  sum = (mx == ninf ? T(0) : sum * std::exp(mx - Ms)) + tsum;
  mx = M;
}

// Online column update: columns c0.. absorb the tile's rn rows (cmax/csum have cn entries).
template <typename T>
void absorb_cols(const T* s, int64_t rn, int64_t cn, T* cmax, T* csum, T* tmp) {
  using Vec = Vectorized<T>;
  const int64_t V = Vec::size();
  const T ninf = -std::numeric_limits<T>::infinity();
  // tmp = max over the tile's rows, then the new running max (old in cmax).
  std::fill(tmp, tmp + cn, ninf);
  for (int64_t i = 0; i < rn; ++i) {
    const T* row = s + i * cn;
    int64_t j = 0;
    for (; j + V <= cn; j += V) at::vec::maximum(Vec::loadu(tmp + j), Vec::loadu(row + j)).store(tmp + j);
    for (; j < cn; ++j) tmp[j] = std::isnan(row[j]) ? row[j] : std::max(tmp[j], row[j]);
  }
  for (int64_t j = 0; j < cn; ++j) {
    const T M = std::isnan(tmp[j]) ? tmp[j] : std::max(cmax[j], tmp[j]);
    csum[j] = (cmax[j] == ninf) ? T(0) : csum[j] * std::exp(cmax[j] - safe_max(M));
    cmax[j] = M;
    tmp[j] = safe_max(M);
  }
  for (int64_t i = 0; i < rn; ++i) {
    const T* row = s + i * cn;
    int64_t j = 0;
    for (; j + V <= cn; j += V)
      (Vec::loadu(csum + j) + fast_exp(Vec::loadu(row + j) - Vec::loadu(tmp + j))).store(csum + j);
    for (; j < cn; ++j) csum[j] += std::exp(row[j] - tmp[j]);
  }
}

template <typename T>
inline T lse_finish(T mx, T sum) {
  // torch.logsumexp's conventions: an empty or all -inf set gives -inf, +inf gives +inf.
  if (std::isinf(mx) || std::isnan(mx)) return mx;
  return mx + std::log(sum);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> separable_lse_cpu(const at::Tensor& x, const at::Tensor& y,
                                                     const at::Tensor& x_scale, const at::Tensor& y_scale,
                                                     const std::optional<at::Tensor>& pos_index,
                                                     int64_t exclude, bool cols) {
  Inputs in = check_inputs("fastmi::separable_lse", x, y, x_scale, y_scale, pos_index, exclude, cols);
  const auto opts = in.x.options();
  at::Tensor row_lse = at::empty({in.n}, opts);
  at::Tensor col_lse = at::empty({cols ? in.m : 0}, opts);
  at::Tensor pos = at::zeros({in.n}, opts);
  if (in.n == 0 || in.m == 0) {
    row_lse.fill_(-std::numeric_limits<double>::infinity());
    col_lse.fill_(-std::numeric_limits<double>::infinity());
    return {row_lse, col_lse, pos};
  }
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "separable_lse_cpu", [&] {
    using T = scalar_t;
    const T ninf = -std::numeric_limits<T>::infinity();
    std::vector<T> rmax(in.n, ninf), rsum(in.n, T(0));
    std::vector<T> cmax(cols ? in.m : 0, ninf), csum(cols ? in.m : 0, T(0));
    const int64_t* idx = in.idx.defined() ? in.idx.data_ptr<int64_t>() : nullptr;
    const T* a = in.a.data_ptr<T>();
    const T* b = in.b.data_ptr<T>();
    T* ps = pos.data_ptr<T>();
    Schedule sched(in.n, in.m);
    sched.run([&](int64_t I, int64_t J) {
      at::Tensor buf = at::empty({TILE * TILE}, opts);
      std::vector<T> tmp(TILE);
      const int64_t r1 = sched.row_end(I), c1 = sched.col_end(J);
      for (int64_t r0 = sched.row_begin(I); r0 < r1; r0 += TILE) {
        const int64_t rn = std::min(TILE, r1 - r0);
        for (int64_t c0 = sched.col_begin(J); c0 < c1; c0 += TILE) {
          const int64_t cn = std::min(TILE, c1 - c0);
          T* s = raw_tile(in, buf, r0, rn, c0, cn).data_ptr<T>();
          for (int64_t i = 0; i < rn; ++i) {
            T* row = s + i * cn;
            const int64_t p = positive_col(idx, r0 + i) - c0;
            if (p >= 0 && p < cn) ps[r0 + i] = a[r0 + i] * b[c0 + p] * row[p];
            scale_row<T>(row, row, cn, a[r0 + i], b + c0, excluded_col(in, idx, r0 + i) - c0);
            absorb_row<T>(row, cn, rmax[r0 + i], rsum[r0 + i]);
          }
          if (cols) absorb_cols<T>(s, rn, cn, cmax.data() + c0, csum.data() + c0, tmp.data());
        }
      }
    });
    T* rl = row_lse.data_ptr<T>();
    for (int64_t i = 0; i < in.n; ++i) rl[i] = lse_finish(rmax[i], rsum[i]);
    if (cols) {
      T* cl = col_lse.data_ptr<T>();
      for (int64_t j = 0; j < in.m; ++j) cl[j] = lse_finish(cmax[j], csum[j]);
    }
  });
  return {row_lse, col_lse, pos};
}

// Coefficient a and shift b of one term a * exp(s - b) of dS; terms whose statistic is not finite
// (no negatives, or an overflowed row) or whose gradient is 0 contribute nothing: b = +inf makes
// exp(s - b) exactly 0 for finite s, so 0 * exp(...) never becomes 0 * inf = NaN.
template <typename T>
inline void term(T g, T lse, T& a, T& b) {
  if (g == T(0) || !std::isfinite(lse)) {
    a = T(0);
    b = std::numeric_limits<T>::infinity();
  } else {
    a = g;
    b = lse;
  }
}

// In place: the raw tile becomes E = a dS b; da/db of the tile's rows/columns accumulate
// sum dS b raw / sum dS a raw. `tmp` holds one tile row of scaled scores.
template <typename T>
void tile_grad(T* raw, int64_t rn, int64_t cn, const T* a, const T* b, const T* ga, const T* gb, const T* ha,
               const T* hb, bool cols, const int64_t* excl, const int64_t* pcol, const T* q, T* da, T* db, T* tmp) {
  using Vec = Vectorized<T>;
  const int64_t V = Vec::size();
  for (int64_t i = 0; i < rn; ++i) {
    T* row = raw + i * cn;
    const int64_t p = pcol[i];
    const bool has_pos = p >= 0 && p < cn && q[i] != T(0);
    const T raw_pos = has_pos ? row[p] : T(0);
    scale_row<T>(row, tmp, cn, a[i], b, excl[i]);
    const Vec vga(ga[i]), vgb(gb[i]), va(a[i]);
    Vec dacc(T(0));
    int64_t j = 0;
    // `left` < V: a tail whose lanes from `left` on are padding. Their ds is set to 0 before it meets
    // r and b (0 there): exp(0 - lse) is inf when a row's lse is below -88.7, and inf * 0 = NaN.
    auto step = [&](const Vec& r, const Vec& s, const Vec& vb, const Vec& vha, const Vec& vhb, Vec& dbv,
                    int64_t left) __attribute__((always_inline)) {
      Vec ds = vga * fast_exp(s - vgb);
      if (cols) ds = ds + vha * fast_exp(s - vhb);
      if (left < V) ds = Vec::set(Vec(T(0)), ds, left);
      const Vec dsr = ds * r;
      dacc = dacc + dsr * vb;
      dbv = dsr * va;
      return ds * va * vb;
    };
    for (; j + V <= cn; j += V) {
      const Vec vb = Vec::loadu(b + j);
      Vec dbv;
      const Vec e = step(Vec::loadu(row + j), Vec::loadu(tmp + j), vb, cols ? Vec::loadu(ha + j) : Vec(T(0)),
                         cols ? Vec::loadu(hb + j) : Vec(T(0)), dbv, V);
      (Vec::loadu(db + j) + dbv).store(db + j);
      e.store(row + j);
    }
    if (j < cn) {
      const int64_t left = cn - j;
      const Vec vb = Vec::loadu(b + j, left);
      Vec dbv;
      const Vec e = step(Vec::loadu(row + j, left), Vec::loadu(tmp + j, left), vb,
                         cols ? Vec::loadu(ha + j, left) : Vec(T(0)), cols ? Vec::loadu(hb + j, left) : Vec(T(0)), dbv,
                         left);
      (Vec::loadu(db + j, left) + dbv).store(db + j, left);
      e.store(row + j, left);
    }
    da[i] += at::vec::vec_reduce_all<T>([](Vec& x, Vec& y) { return x + y; }, dacc);
    if (has_pos) {  // + q_i at the positive entry
      row[p] += q[i] * a[i] * b[p];
      da[i] += q[i] * b[p] * raw_pos;
      db[p] += q[i] * a[i] * raw_pos;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> separable_lse_backward_cpu(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& grad_pos, const at::Tensor& x,
    const at::Tensor& y,
    const at::Tensor& x_scale, const at::Tensor& y_scale, const std::optional<at::Tensor>& pos_index,
    int64_t exclude, bool cols, const at::Tensor& row_lse, const at::Tensor& col_lse) {
  Inputs in = check_inputs("fastmi::separable_lse_backward", x, y, x_scale, y_scale, pos_index, exclude, cols);
  TORCH_CHECK(grad_row.numel() == in.n && row_lse.numel() == in.n && grad_pos.numel() == in.n,
              "fastmi::separable_lse_backward: grad_row, grad_pos and row_lse must have n entries");
  if (cols)
    TORCH_CHECK(grad_col.numel() == in.m && col_lse.numel() == in.m,
                "fastmi::separable_lse_backward: grad_col and col_lse must have m entries");
  const auto opts = in.x.options();
  at::Tensor dx = at::zeros_like(in.x);
  at::Tensor dy = at::zeros_like(in.y);
  at::Tensor da = at::zeros_like(in.a);
  at::Tensor db = at::zeros_like(in.b);
  if (in.n == 0 || in.m == 0) return {dx, dy, da, db};
  const auto dt = in.x.scalar_type();
  at::Tensor g = grad_row.to(dt).contiguous(), L = row_lse.to(dt).contiguous(), q = grad_pos.to(dt).contiguous();
  at::Tensor h = cols ? grad_col.to(dt).contiguous() : at::Tensor();
  at::Tensor C = cols ? col_lse.to(dt).contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(dt, "separable_lse_backward_cpu", [&] {
    using T = scalar_t;
    std::vector<T> ga(in.n), gb(in.n), ha(cols ? in.m : 0), hb(cols ? in.m : 0);
    for (int64_t i = 0; i < in.n; ++i) term(g.data_ptr<T>()[i], L.data_ptr<T>()[i], ga[i], gb[i]);
    for (int64_t j = 0; cols && j < in.m; ++j) term(h.data_ptr<T>()[j], C.data_ptr<T>()[j], ha[j], hb[j]);
    const int64_t* idx = in.idx.defined() ? in.idx.data_ptr<int64_t>() : nullptr;
    const T* a = in.a.data_ptr<T>();
    const T* b = in.b.data_ptr<T>();
    T* pda = da.data_ptr<T>();
    T* pdb = db.data_ptr<T>();
    Schedule sched(in.n, in.m);
    sched.run([&](int64_t I, int64_t J) {
      at::Tensor buf = at::empty({TILE * TILE}, opts);
      std::vector<T> tmp(TILE);
      std::vector<int64_t> excl(TILE), pcol(TILE);
      const int64_t r1 = sched.row_end(I), c1 = sched.col_end(J);
      for (int64_t r0 = sched.row_begin(I); r0 < r1; r0 += TILE) {
        const int64_t rn = std::min(TILE, r1 - r0);
        at::Tensor dxb = dx.narrow(0, r0, rn);
        at::Tensor xb = in.x.narrow(0, r0, rn);
        for (int64_t c0 = sched.col_begin(J); c0 < c1; c0 += TILE) {
          const int64_t cn = std::min(TILE, c1 - c0);
          for (int64_t i = 0; i < rn; ++i) {
            excl[i] = excluded_col(in, idx, r0 + i) - c0;
            pcol[i] = positive_col(idx, r0 + i) - c0;
          }
          at::Tensor E = raw_tile(in, buf, r0, rn, c0, cn);
          tile_grad<T>(E.data_ptr<T>(), rn, cn, a + r0, b + c0, ga.data() + r0, gb.data() + r0,
                       cols ? ha.data() + c0 : nullptr, cols ? hb.data() + c0 : nullptr, cols, excl.data(),
                       pcol.data(), q.data_ptr<T>() + r0, pda + r0, pdb + c0, tmp.data());
          dxb.addmm_(E, in.y.narrow(0, c0, cn));
          dy.narrow(0, c0, cn).addmm_(E.t(), xb);
        }
      }
    });
  });
  return {dx, dy, da, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmi, CPU, m) {
  m.impl("separable_lse", &separable_lse_cpu);
  m.impl("separable_lse_backward", &separable_lse_backward_cpu);
}

}  // namespace fastmi
