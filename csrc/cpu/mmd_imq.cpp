// Fused CPU kernel of the mmd_imq family: MMD^2 with the inverse-multiquadric kernel
// k(a, b) = sum_C C / (C + ||a - b||^2), and (optionally, in the same pass) its gradient.
//
// With the symmetric pair weights c (x-x: a, y-y: b, x-y and y-x: -1/(nm)) the value is
// V = sum_{i,j} c_ij k(d2_ij) over the rows z of [x; y], and
//     dV/dz_l = 4 sum_j c_lj g_lj (z_l - z_j),   g = dk/dd2 = -sum_C C / (C + d2)^2,
// i.e. with W = 4 c g:  dZ = rowsum(W) * Z - W Z.  Tiles of B rows: D = Z_I Z_J^T (a GEMM),
// d2 = |z_i|^2 + |z_j|^2 - 2 D (clamped at 0; pairs that lose too many digits to cancellation are
// recomputed from exact differences), kernel values summed and W written in place of D, then two
// GEMMs (W Z_J and W^T Z_I) update the gradient. x-x and y-y use only the upper triangle of tiles;
// nothing n x m exists, only one B x B tile per thread and O((n + m) K) buffers.
//
// Schedule (bitwise-reproducible results whatever the thread count): a tile (I, J) adds to the
// gradient rows of block I ("A side") and of block J ("B side"), kept in two separate accumulators.
// The tiles of a region run in steps; step s holds the tiles (k, (k + s) mod L), k = 0..L-1, so no
// two tiles of a step share an A block or a B block: each gradient row has one writer per step and
// receives its terms in step order. Values are kept per tile and summed in a fixed order.
//
// Conditioning: the x-x and y-y blocks use x and y centred on their own means, the x-y block both
// centred on the midpoint of the two means (distances are translation invariant, and so the
// gradient is exact without a term through the means). Inputs of huge magnitude are scaled by a
// power of two s (exact), with C -> C / s^2, so that ||z||^2 never overflows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "parallel_tasks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace fastmi {
namespace {

using at::vec::Vectorized;

constexpr int64_t kTile = 256;
// d2 < (|a|^2 + |b|^2) * 2^-5 has lost more than ~5 bits to cancellation: recompute it exactly.
constexpr double kCancel = 1.0 / 32.0;

template <typename T>
struct Points {  // one centred, scaled copy of a sample, with squared row norms
  at::Tensor z, q;
  const T* zp() const { return z.data_ptr<T>(); }
  const T* qp() const { return q.data_ptr<T>(); }
};

template <typename T>
Points<T> make_points(const at::Tensor& v, const at::Tensor& center, double inv_s) {
  at::Tensor z = ((v - center) * inv_s).contiguous();
  return {z, (z * z).sum(1).contiguous()};
}

template <typename T>
struct Problem {
  int64_t K;
  std::vector<T> C, invC;  // scaled scales and their inverses
  bool unbiased;
};

// One tile: rows A[0:ra] against rows B[0:rb]. Adds coef_v * sum k to the value (diagonal of a
// self tile per the estimator), and when GA is set, the gradient with W = coef_w * g.
template <typename T>
double tile(const Problem<T>& P, const T* A, const T* qa, int64_t ra, const T* B, const T* qb, int64_t rb,
            bool self_tile, double coef_v, double coef_w, T* D, T* rowsum, T* colsum, T* GA, T* GB) {
  using Vec = Vectorized<T>;
  const int64_t V = Vec::size(), K = P.K;
  at::Tensor Dt = at::from_blob(D, {ra, rb}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  at::Tensor At = at::from_blob(const_cast<T*>(A), {ra, K}, Dt.options());
  at::Tensor Bt = at::from_blob(const_cast<T*>(B), {rb, K}, Dt.options());
  at::mm_out(Dt, At, Bt.t());

  const int64_t ns = static_cast<int64_t>(P.C.size());
  const bool grad = GA != nullptr;
  const T cw = static_cast<T>(coef_w);
  if (grad) std::fill(colsum, colsum + rb, T(0));
  double value = 0.0;
  for (int64_t i = 0; i < ra; ++i) {
    T* d = D + i * rb;
    const T qi = qa[i];
    const T* ai = A + i * K;
    // pass 1: squared distances; flag pairs that cancelled
    bool any_flag = false;
    int64_t j = 0;
    const Vec vqi(qi), two(T(2)), zero(T(0)), thr(static_cast<T>(kCancel));
    for (; j + V <= rb; j += V) {
      Vec s = vqi + Vec::loadu(qb + j);
      Vec d2 = at::vec::maximum(s - two * Vec::loadu(d + j), zero);
      d2.store(d + j);
      any_flag |= (d2 < s * thr).zero_mask() != (1 << V) - 1 ? true : false;
    }
    for (; j < rb; ++j) {
      const T s = qi + qb[j];
      d[j] = std::max(s - T(2) * d[j], T(0));
      any_flag |= d[j] < s * T(kCancel);
    }
    if (any_flag) {
      for (int64_t jj = 0; jj < rb; ++jj) {
        if (d[jj] < (qi + qb[jj]) * T(kCancel)) {
          const T* bj = B + jj * K;
          T acc = 0;
          for (int64_t k = 0; k < K; ++k) {
            const T t = ai[k] - bj[k];
            acc += t * t;
          }
          d[jj] = acc;
        }
      }
    }
    if (self_tile) d[i] = T(0);
    // pass 2: kernel sums (value) and W in place of d2
    Vec vk(T(0)), vrow(T(0));
    T sk = 0, srow = 0;
    j = 0;
    for (; j + V <= rb; j += V) {
      Vec d2 = Vec::loadu(d + j), k(T(0)), g(T(0));
      for (int64_t c = 0; c < ns; ++c) {
        Vec t = Vec(P.C[c]) / (Vec(P.C[c]) + d2);
        k = k + t;
        g = g + t * t * Vec(P.invC[c]);
      }
      vk = vk + k;
      if (grad) {
        Vec w = Vec(-cw) * g;
        w.store(d + j);
        vrow = vrow + w;
        (Vec::loadu(colsum + j) + w).store(colsum + j);
      }
    }
    for (; j < rb; ++j) {
      T k = 0, g = 0;
      for (int64_t c = 0; c < ns; ++c) {
        const T t = P.C[c] / (P.C[c] + d[j]);
        k += t;
        g += t * t * P.invC[c];
      }
      sk += k;
      if (grad) {
        d[j] = -cw * g;
        srow += d[j];
        colsum[j] += d[j];
      }
    }
    T buf[Vec::size()];
    vk.store(buf);
    double rowk = sk;
    for (int64_t l = 0; l < V; ++l) rowk += buf[l];
    if (self_tile && P.unbiased) rowk -= static_cast<double>(ns);  // k(z_i, z_i) = number of scales
    value += rowk;
    if (grad) {
      vrow.store(buf);
      for (int64_t l = 0; l < V; ++l) srow += buf[l];
      if (self_tile) {  // the pair (i, i) has no gradient; drop its (large for tiny C) weight exactly
        srow -= d[i];
        colsum[i] -= d[i];
        d[i] = T(0);
      }
      rowsum[i] = srow;
    }
  }
  if (grad) {
    // GA += rowsum * A - W B ;  GB += colsum * B - W^T A   (GB null on a self tile)
    at::Tensor GAt = at::from_blob(GA, {ra, K}, Dt.options());
    GAt.addmm_(Dt, Bt, 1, -1);
    for (int64_t i = 0; i < ra; ++i)
      for (int64_t k = 0; k < K; ++k) GA[i * K + k] += rowsum[i] * A[i * K + k];
    if (GB != nullptr) {
      at::Tensor GBt = at::from_blob(GB, {rb, K}, Dt.options());
      GBt.addmm_(Dt.t(), At, 1, -1);
      for (int64_t j2 = 0; j2 < rb; ++j2)
        for (int64_t k = 0; k < K; ++k) GB[j2 * K + k] += colsum[j2] * B[j2 * K + k];
    }
  }
  return coef_v * value;
}

// One tile of a region: rows of block I of `a` against rows of block J of `b`.
struct Tile {
  int64_t I, J;
};

// The steps of a region's tiles: self=true covers the pairs J >= I of one sample's L blocks (each
// unordered pair once), self=false all L_a x L_b pairs. Within a step no A block and no B block repeats.
std::vector<std::vector<Tile>> steps_of(int64_t La, int64_t Lb, bool self) {
  std::vector<std::vector<Tile>> steps;
  if (self) {
    for (int64_t s = 0; s <= La / 2; ++s) {
      std::vector<Tile> step;
      for (int64_t k = 0; k < La; ++k) {
        const int64_t j = (k + s) % La;
        if (2 * s == La && k >= La / 2) continue;  // {k, k + L/2} once
        step.push_back({k, j});  // A side k, B side j (a lower-triangle tile is its transpose's twin)
      }
      steps.push_back(step);
    }
  } else {
    const int64_t L = std::max(La, Lb);
    for (int64_t s = 0; s < L; ++s) {
      std::vector<Tile> step;
      for (int64_t k = 0; k < L; ++k) {
        const int64_t j = (k + s) % L;
        if (k < La && j < Lb) step.push_back({k, j});
      }
      steps.push_back(step);
    }
  }
  return steps;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run(const at::Tensor& x_in, const at::Tensor& y_in,
                                                   const std::vector<double>& scales, bool unbiased, bool want_grad) {
  at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  const int64_t n = x.size(0), m = y.size(0), K = x.size(1);
  at::Tensor mx = x.mean(0), my = y.mean(0), mid = (mx + my) * 0.5;
  // power-of-two scale so that squared norms cannot overflow (exact: only exponents change)
  const double maxabs = std::max({(x - mx).abs().max().item<double>(), (y - my).abs().max().item<double>(),
                                  (x - mid).abs().max().item<double>(), (y - mid).abs().max().item<double>()});
  int e = 0;
  if (maxabs > 0x1p20) e = static_cast<int>(std::ceil(std::log2(maxabs))) - 20;
  const double inv_s = std::ldexp(1.0, -e);
  Points<T> xs = make_points<T>(x, mx, inv_s), ys = make_points<T>(y, my, inv_s);
  Points<T> xc = make_points<T>(x, mid, inv_s), yc = make_points<T>(y, mid, inv_s);

  Problem<T> P{K, {}, {}, unbiased};
  for (double c : scales) {
    const double cs = std::max(std::ldexp(c, -2 * e), static_cast<double>(std::numeric_limits<T>::min()));
    P.C.push_back(static_cast<T>(cs));
    P.invC.push_back(static_cast<T>(1.0 / cs));
  }
  const double dn = n, dm = m;
  const double a = unbiased ? 1.0 / (dn * (dn - 1)) : 1.0 / (dn * dn);
  const double b = unbiased ? 1.0 / (dm * (dm - 1)) : 1.0 / (dm * dm);
  const double cxy = -1.0 / (dn * dm);

  const auto opt = x.options();
  // gradient accumulators of the A side and the B side of the tiles (summed at the end)
  at::Tensor gxa = want_grad ? at::zeros({n, K}, opt) : at::Tensor(), gxb = want_grad ? at::zeros({n, K}, opt) : at::Tensor();
  at::Tensor gya = want_grad ? at::zeros({m, K}, opt) : at::Tensor(), gyb = want_grad ? at::zeros({m, K}, opt) : at::Tensor();
  const int64_t Lx = (n + kTile - 1) / kTile, Ly = (m + kTile - 1) / kTile;
  std::vector<double> values;  // one per tile, in schedule order

  // region 0: x-x, 1: y-y, 2: x-y
  for (int region = 0; region < 3; ++region) {
    const bool self = region < 2;
    const auto steps = region == 0 ? steps_of(Lx, Lx, true) : region == 1 ? steps_of(Ly, Ly, true)
                                                                           : steps_of(Lx, Ly, false);
    const Points<T>& pa = region == 0 ? xs : region == 1 ? ys : xc;
    const Points<T>& pb = region == 0 ? xs : region == 1 ? ys : yc;
    const int64_t na = region == 1 ? m : n, nb = region == 0 ? n : m;
    const double c = region == 0 ? a : region == 1 ? b : cxy;
    T* ga = want_grad ? (region == 1 ? gya : gxa).data_ptr<T>() : nullptr;
    T* gb = want_grad ? (region == 0 ? gxb : gyb).data_ptr<T>() : nullptr;
    for (const auto& step : steps) {
      const size_t first = values.size();
      values.resize(first + step.size(), 0.0);
      parallel_tasks(static_cast<int64_t>(step.size()), [&](int64_t t) {
        at::Tensor D = at::empty({kTile * kTile}, opt);  // aligned like every ATen buffer
        std::vector<T> rowsum(kTile), colsum(kTile);
        const int64_t i0 = step[t].I * kTile, j0 = step[t].J * kTile;
        const int64_t ra = std::min(kTile, na - i0), rb = std::min(kTile, nb - j0);
        const bool diag = self && i0 == j0;
        const double coef_v = region == 2 ? 2 * c : (diag ? c : 2 * c);
        values[first + t] = tile<T>(P, pa.zp() + i0 * K, pa.qp() + i0, ra, pb.zp() + j0 * K, pb.qp() + j0, rb, diag,
                                    coef_v, 4 * c, D.data_ptr<T>(), rowsum.data(), colsum.data(),
                                    ga ? ga + i0 * K : nullptr, (gb && !diag) ? gb + j0 * K : nullptr);
      });
    }
  }
  double value = 0.0;
  for (double v : values) value += v;
  at::Tensor val = at::scalar_tensor(value, opt);
  if (!want_grad) return {val, x.new_empty({0, K}), y.new_empty({0, K})};
  // back to the caller's units: d/dx of d2 in scaled units carries 1/s
  return {val, gxa.add_(gxb).mul_(inv_s), gya.add_(gyb).mul_(inv_s)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mmd_imq_cpu(const at::Tensor& x, const at::Tensor& y,
                                                           at::ArrayRef<double> scales, bool unbiased,
                                                           bool want_grad) {
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1), "mmd_imq: x and y must be n x K and m x K");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "mmd_imq: x and y must have the same dtype");
  TORCH_CHECK(!scales.empty(), "mmd_imq: scales is empty");
  TORCH_CHECK(x.size(0) >= (unbiased ? 2 : 1) && y.size(0) >= (unbiased ? 2 : 1), "mmd_imq: too few rows");
  std::vector<double> sc(scales.begin(), scales.end());
  at::NoGradGuard no_grad;
  if (x.scalar_type() == at::kDouble) return run<double>(x, y, sc, unbiased, want_grad);
  TORCH_CHECK(x.scalar_type() == at::kFloat, "mmd_imq (CPU): float32 or float64 inputs, got ", x.scalar_type());
  return run<float>(x, y, sc, unbiased, want_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmi, CPU, m) {
  m.impl("mmd_imq", &mmd_imq_cpu);
}

}  // namespace fastmi
