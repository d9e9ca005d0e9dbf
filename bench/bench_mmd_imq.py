"""mmd_imq microbenchmarks on CPU (pytest-benchmark): forward+backward, float32, K = 64, n = m,
fused vs dense reference vs torch.compile(reference) (and pykeops when installed) in the same run,
plus peak extra memory (beyond the inputs and their gradients), measured in a child process.

    .venv/bin/python -m pytest -q bench/bench_mmd_imq.py --benchmark-only
    python -m bench.memory mmd_imq fused 4096 mmd_imq     -> bytes
"""
import pytest
import torch

from bench.memory import peak_extra_bytes
from bench.mmd_imq_cases import CASES, impls, inputs, loss_fn, step

SIZES = [1024, 4096]


@pytest.mark.parametrize("impl", impls())
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", list(CASES))
def test_mmd_imq(benchmark, name, n, impl):
    fn = loss_fn(name, impl)
    xy = inputs(n)
    step(fn, xy)  # warm-up (and compilation for torch.compile / keops)
    benchmark.group = f"mmd_imq {name} n={n}"
    benchmark.extra_info.update(family="mmd_imq", loss=name, n=n, K=xy[0].shape[1], impl=impl, dtype="float32",
                                threads=torch.get_num_threads())
    if impl not in ("compiled", "keops"):  # a child process would recompile
        benchmark.extra_info["peak_extra_bytes"] = peak_extra_bytes(name, impl, n, family="mmd_imq")
    benchmark.pedantic(step, args=(fn, xy), rounds=9 if n <= 1024 else 5, warmup_rounds=1)
