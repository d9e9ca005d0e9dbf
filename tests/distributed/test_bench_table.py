"""docs/distributed.md's scaling table is the one bench/bench_distributed.py renders from the newest
committed results file, and the benchmark's command line refuses to overwrite results."""
import glob
import json
import os

from bench import bench_distributed as B

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _newest_results() -> str:
    files = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "cpu-distributed-*.json")))
    assert files, "no committed bench/results/cpu-distributed-*.json"
    return files[-1]


def test_docs_table_is_generated_from_the_committed_results():
    with open(_newest_results()) as f:
        results = json.load(f)
    with open(B.DOCS) as f:
        page = f.read()
    assert f"{B.START}\n{B.table(results)}\n{B.END}" in page, \
        "regenerate it: python -m bench.bench_distributed --table <results> --docs docs/distributed.md"


def test_existing_results_are_not_overwritten(capsys):
    path = _newest_results()
    before = os.path.getmtime(path)
    assert B.main(["--out", path]) == 2
    assert "exists" in capsys.readouterr().err
    assert os.path.getmtime(path) == before
