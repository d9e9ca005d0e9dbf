"""The critic_lse kernel contract, stated once for Python (the Triton kernels and the ops import it;
csrc/critic_lse.h states the same numbers for C++, and tests/critic_lse/test_contract.py checks that
the two agree).

Row statistics, row k of the kernels' ``[NUM_STATS, n]`` output, for row i with positives P_i and
negatives N_i (tau = clip, +inf for none):

    LSE  = log sum_{j in N_i} exp S_ij            CLSE = log sum_{j in N_i} exp clamp(S_ij, -tau, tau)
    SP   = sum_{j in N_i} softplus(S_ij)          POS  = sum_{j in P_i} S_ij
    PSP  = sum_{j in P_i} softplus(-S_ij)         CPOS = sum_{j in P_i} clamp(S_ij, -tau, tau)

A statistic is computed only when its bit (1 << k) is set in ``need``. Positives kind: the diagonal,
one column per row (an index vector) or a boolean mask. Negatives mode: all entries, the entries
that are not positives, or the entries off the diagonal.
"""
STATS = ("LSE", "CLSE", "SP", "POS", "PSP", "CPOS")
LSE, CLSE, SP, POS, PSP, CPOS = range(len(STATS))
NUM_STATS = len(STATS)
NEGATIVE_STATS = (LSE, CLSE, SP)   # sums over N_i
POSITIVE_STATS = (POS, PSP, CPOS)  # sums over P_i

NEGATIVES = ("all", "off_positive", "off_diagonal")  # index = neg_mode
POSITIVE_KINDS = ("diag", "index", "mask")  # index = the kernels' POS_KIND


def bits(*stats: int) -> int:
    """The ``need`` bit set of ``stats``."""
    out = 0
    for s in stats:
        out |= 1 << s
    return out
