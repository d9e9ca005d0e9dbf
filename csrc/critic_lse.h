// Shared declarations of the critic_lse family (fused row statistics of a score matrix).
//
// Row statistics, one row of `stats` (shape [NUM_STATS, n], fp32 for half/bf16/float inputs,
// fp64 for double) per statistic; N_i is row i's set of negatives, P_i its set of positives:
//   STAT_LSE  : log sum_{j in N_i} exp(S_ij)
//   STAT_CLSE : log sum_{j in N_i} exp(clip(S_ij, -tau, tau))
//   STAT_SP   : sum_{j in N_i} softplus(S_ij)
//   STAT_POS  : sum_{j in P_i} S_ij
//   STAT_PSP  : sum_{j in P_i} softplus(-S_ij)
//   STAT_CPOS : sum_{j in P_i} clip(S_ij, -tau, tau)
// Statistics whose bit is not set in `need` are written as 0.
// Positives: the diagonal (no index, no mask), one column per row (pos_index), or a mask.
// Negatives (neg_mode): 0 all entries, 1 entries that are not positives, 2 entries off the diagonal.
// Backward of sum_k G_k stat_k: the terms G_LSE exp(S_ij - LSE_i) and G_CLSE exp(clip(S_ij) - CLSE_i)
// are skipped where G is 0 or the statistic is +-inf (they are 0 at every finite entry; G may then
// be inf or NaN), so that one infinite score does not turn its row's finite gradients into NaN.
#pragma once

namespace fastmi {
enum Stat { STAT_LSE = 0, STAT_CLSE, STAT_SP, STAT_POS, STAT_PSP, STAT_CPOS, NUM_STATS };
enum NegMode { NEG_ALL = 0, NEG_OFF_POSITIVE = 1, NEG_OFF_DIAGONAL = 2 };
}  // namespace fastmi
