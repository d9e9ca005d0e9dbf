"""The distributed benchmark's command line refuses to overwrite results (docs/distributed.md's table
is generated from the committed file by `make report`, checked by tests/test_report.py)."""
import glob
import json
import os

from bench import bench_distributed as B

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _newest_results() -> str:
    files = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "cpu-distributed-*.json")))
    assert files, "no committed bench/results/cpu-distributed-*.json"
    return files[-1]


def test_existing_results_are_not_overwritten(capsys):
    path = _newest_results()
    before = os.path.getmtime(path)
    assert B.main(["--out", path]) == 2
    assert "exists" in capsys.readouterr().err
    assert os.path.getmtime(path) == before
