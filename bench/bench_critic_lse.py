"""critic_lse microbenchmarks on CPU (pytest-benchmark): forward+backward, float32, n x n scores,
fused vs reference vs torch.compile(reference) in the same run, plus peak extra memory. A fourth,
"textbook" baseline is the shortest eager code for the diagonal case (cross_entropy for InfoNCE).

    make bench                                   # all families
    python -m bench.report .benchmarks/...json   # ratios table for the README
"""
import pytest
import torch

from bench.critic_lse_cases import CASES, TEXTBOOK, loss_fn, scores, step
from bench.memory import peak_extra_bytes

SIZES = [1024, 4096]
IMPLS = ["fused", "reference", "compiled", "textbook"]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name,impl", [(c, i) for c in CASES for i in IMPLS if i != "textbook" or c in TEXTBOOK])
def test_critic_lse(benchmark, name, n, impl):
    fn = loss_fn(name, impl)
    s = scores(n)
    step(fn, s)  # warm-up (and compilation for torch.compile)
    benchmark.group = f"critic_lse {name} n={n}"
    benchmark.extra_info.update(family="critic_lse", loss=name, n=n, impl=impl, dtype="float32",
                                threads=torch.get_num_threads())
    if impl != "compiled":  # compiled graphs are measured for time only (a child process would recompile)
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(name, impl, n)
    benchmark.pedantic(step, args=(fn, s), rounds=15 if n <= 1024 else 11, warmup_rounds=2)
