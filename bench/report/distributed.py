"""The scaling table of a ``python -m bench.bench_distributed`` run (a bench/results JSON with "meta"
and "rows"): per case and world size, the slowest rank's step time, the largest rank's peak extra
memory and bytes sent per step, and the collectives per step."""
from __future__ import annotations

import json
from pathlib import Path


def table(results: Path, file: str) -> str:
    from bench import bench_distributed  # torch.distributed only when the block is generated

    data = json.loads((Path(results) / file).read_text())
    if not {"meta", "rows"} <= set(data):
        raise ValueError(f"{file}: not a bench.bench_distributed result (needs meta and rows)")
    return bench_distributed.table(data)
