// Input checks of the critic_lse ops, stated once for the CPU and the CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

#include "critic_lse.h"

namespace fastmi {

struct CriticLseInputs {
  at::Tensor scores, pos_index, pos_mask;  // contiguous; pos_index / pos_mask undefined when absent
  int64_t n, m;
};

// `device`: "CPU" or "CUDA" (for the messages; "CUDA" also requires CUDA tensors); the kernel takes
// at most 2^max_cols_log2 columns.
inline CriticLseInputs check_critic_lse_inputs(const at::Tensor& scores, const std::optional<at::Tensor>& pos_index,
                                               const std::optional<at::Tensor>& pos_mask, int64_t neg_mode,
                                               bool cuda, int max_cols_log2) {
  const char* device = cuda ? "CUDA" : "CPU";
  TORCH_CHECK(scores.dim() == 2, "fastmi::critic_lse: scores must be 2-D, got ", scores.dim(), "-D");
  TORCH_CHECK(!cuda || scores.is_cuda(), "fastmi::critic_lse (CUDA): scores must be a CUDA tensor");
  const auto st = scores.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, "fastmi::critic_lse (",
              device, "): scores must be float16, bfloat16, float32 or float64, got ", st);
  TORCH_CHECK(neg_mode >= NEG_ALL && neg_mode <= NEG_OFF_DIAGONAL, "fastmi::critic_lse: neg_mode must be 0, 1 or 2");
  TORCH_CHECK(!(pos_index.has_value() && pos_mask.has_value()),
              "fastmi::critic_lse: give pos_index or pos_mask, not both");
  CriticLseInputs in;
  in.scores = scores.contiguous();
  in.n = scores.size(0);
  in.m = scores.size(1);
  TORCH_CHECK(in.m < (int64_t(1) << max_cols_log2), "fastmi::critic_lse (", device, "): at most 2^", max_cols_log2,
              " columns");
  if (pos_index.has_value()) {
    TORCH_CHECK(pos_index->dim() == 1 && pos_index->size(0) == in.n && pos_index->scalar_type() == at::kLong,
                "fastmi::critic_lse: pos_index must be an int64 vector of length n");
    TORCH_CHECK(pos_index->device() == scores.device(), "fastmi::critic_lse: pos_index must be on the device of scores");
    // Every index is out of range for an empty row (checked here: a CUDA kernel would assert).
    TORCH_CHECK(in.m > 0 || in.n == 0, "fastmi::critic_lse: pos_index is out of range for 0 columns");
    in.pos_index = pos_index->contiguous();
  } else if (pos_mask.has_value()) {
    TORCH_CHECK(pos_mask->sizes() == scores.sizes() && pos_mask->scalar_type() == at::kBool,
                "fastmi::critic_lse: pos_mask must be a bool tensor shaped like scores");
    TORCH_CHECK(pos_mask->device() == scores.device(), "fastmi::critic_lse: pos_mask must be on the device of scores");
    in.pos_mask = pos_mask->contiguous();
  } else {
    TORCH_CHECK(in.n == in.m, "fastmi::critic_lse: diagonal positives need a square score matrix");
  }
  return in;
}

// The backward op's own inputs: grad_stats and stats are [NUM_STATS, n], on the device of scores.
inline void check_critic_lse_backward(const at::Tensor& grad_stats, const at::Tensor& stats,
                                      const CriticLseInputs& in) {
  TORCH_CHECK(grad_stats.sizes() == stats.sizes() && stats.dim() == 2 && stats.size(0) == NUM_STATS &&
                  stats.size(1) == in.n,
              "fastmi::critic_lse_backward: grad_stats and stats must be [", int(NUM_STATS), ", n]");
  TORCH_CHECK(grad_stats.device() == in.scores.device() && stats.device() == in.scores.device(),
              "fastmi::critic_lse_backward: grad_stats and stats must be on the device of scores");
}

}  // namespace fastmi
