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
// nothing n x m exists, only one B x B tile per thread and O((n + m) K) buffers. Tiles are handed
// out dynamically; the value is summed in a fixed order (deterministic), the gradient through
// per-thread buffers (run-to-run differences at the rounding level are possible).
//
// Conditioning: the x-x and y-y blocks use x and y centred on their own means, the x-y block both
// centred on the midpoint of the two means (distances are translation invariant, and so the
// gradient is exact without a term through the means). Inputs of huge magnitude are scaled by a
// power of two s (exact), with C -> C / s^2, so that ||z||^2 never overflows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
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

struct Task {
  int region;  // 0: x-x, 1: y-y, 2: x-y
  int64_t i0, j0;
};

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

  std::vector<Task> tasks;
  for (int64_t i0 = 0; i0 < n; i0 += kTile)
    for (int64_t j0 = i0; j0 < n; j0 += kTile) tasks.push_back({0, i0, j0});
  for (int64_t i0 = 0; i0 < m; i0 += kTile)
    for (int64_t j0 = i0; j0 < m; j0 += kTile) tasks.push_back({1, i0, j0});
  for (int64_t i0 = 0; i0 < n; i0 += kTile)
    for (int64_t j0 = 0; j0 < m; j0 += kTile) tasks.push_back({2, i0, j0});

  const int nt = std::max<int>(1, at::get_num_threads());
  const auto opt = x.options();
  // per-thread gradient accumulators (O((n + m) K) each; reduced at the end), values in double
  at::Tensor gx_t = want_grad ? at::zeros({nt, n, K}, opt) : at::Tensor();
  at::Tensor gy_t = want_grad ? at::zeros({nt, m, K}, opt) : at::Tensor();
  std::vector<double> val_task(tasks.size(), 0.0);  // summed in task order: a deterministic value
  const int64_t ntask = static_cast<int64_t>(tasks.size());
  // Dynamic scheduling: each worker pulls the next tile from a shared counter, so a worker that the
  // OS preempts (shared machines) delays only its current tile, not a fixed half of the work.
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nt, 1, [&](int64_t, int64_t) {
    const int tid = at::get_thread_num();
    std::vector<T> D(kTile * kTile), rowsum(kTile), colsum(kTile);
    T* gx = want_grad ? gx_t.data_ptr<T>() + tid * n * K : nullptr;
    T* gy = want_grad ? gy_t.data_ptr<T>() + tid * m * K : nullptr;
    for (int64_t t = next.fetch_add(1); t < ntask; t = next.fetch_add(1)) {
      const Task& w = tasks[t];
      if (w.region == 2) {
        const int64_t ra = std::min(kTile, n - w.i0), rb = std::min(kTile, m - w.j0);
        val_task[t] = tile<T>(P, xc.zp() + w.i0 * K, xc.qp() + w.i0, ra, yc.zp() + w.j0 * K, yc.qp() + w.j0, rb, false,
                       2 * cxy, 4 * cxy, D.data(), rowsum.data(), colsum.data(), gx ? gx + w.i0 * K : nullptr,
                       gy ? gy + w.j0 * K : nullptr);
        continue;
      }
      const Points<T>& p = w.region == 0 ? xs : ys;
      const int64_t rows = w.region == 0 ? n : m;
      const double c = w.region == 0 ? a : b;
      T* g = w.region == 0 ? gx : gy;
      const int64_t ra = std::min(kTile, rows - w.i0), rb = std::min(kTile, rows - w.j0);
      const bool self = w.i0 == w.j0;
      val_task[t] = tile<T>(P, p.zp() + w.i0 * K, p.qp() + w.i0, ra, p.zp() + w.j0 * K, p.qp() + w.j0, rb, self,
                     self ? c : 2 * c, 4 * c, D.data(), rowsum.data(), colsum.data(), g ? g + w.i0 * K : nullptr,
                     (g && !self) ? g + w.j0 * K : nullptr);
    }
  });
  double value = 0.0;
  for (double v : val_task) value += v;
  at::Tensor val = at::scalar_tensor(value, opt);
  if (!want_grad) return {val, x.new_empty({0, K}), y.new_empty({0, K})};
  // back to the caller's units: d/dx of d2 in scaled units carries 1/s
  return {val, gx_t.sum(0).mul_(inv_s), gy_t.sum(0).mul_(inv_s)};
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
