"""The report command (bench/report): the committed README/docs tables are current, the result files
behind them are well formed, and the generator itself on small fixture files (tests/fixtures/report)."""
import json
import re
import shutil
from pathlib import Path

import pytest

import bench.report as report
from bench.report import markers

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "report"


# --- the repository's own docs and results ---------------------------------------------------------
def test_committed_tables_are_current():
    stale = report.run(ROOT, check=True)
    assert not stale, "stale generated tables (run `make report` and commit):\n" + "\n".join(stale)


def _benchmark_medians(path):
    data = json.loads(path.read_text())
    return tuple(sorted((b["fullname"] if "fullname" in b else b["name"], b["stats"]["median"])
                        for b in data["benchmarks"]))


def test_bench_results_one_file_per_run():
    results = ROOT / "bench" / "results"
    runs = {p.name: _benchmark_medians(p) for p in results.glob("*.json")
            if p.name != "INDEX.json" and "benchmarks" in json.loads(p.read_text())}
    seen = {}
    for name, medians in sorted(runs.items()):
        assert medians not in seen, f"{name} holds the same measurements as {seen.get(medians)}"
        seen[medians] = name
    index = json.loads((results / "INDEX.json").read_text())
    for name in list(index["runs"]) + list(index["summary"].values()):
        assert (results / name).exists(), f"INDEX.json names {name}, which is not in bench/results"


def test_experiment_results_are_complete_and_small():
    results = ROOT / "results"
    runs = sorted(p.parent for p in results.glob("*/*/meta.json"))
    assert runs
    for run in runs:
        meta = json.loads((run / "meta.json").read_text())
        assert meta.get("command", "").startswith("fastmi run"), run
        assert (run / "table.txt").exists(), run
        assert not (run / "jobs").exists(), f"{run}: checkpoints are not committed"
        if meta.get("raw_data", True):
            for f in ("config.json", "results.json", "metrics.csv"):
                assert (run / f).exists() or (run / (f + ".gz")).exists(), f"{run}: no {f}"
        else:
            assert meta.get("rerun_time"), f"{run}: a run without raw data says what a rerun costs"
        size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
        assert size < 8 * 2**20, f"{run}: {size / 2**20:.1f} MiB"


# --- the generator on fixtures -----------------------------------------------------------------------
@pytest.fixture
def root(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "repo")
    return tmp_path / "repo"


def _block(text, opening):
    m = re.search(re.escape(opening) + r"\n(.*?)\n\s*<!-- /report:", text, re.S)
    assert m, opening
    return m.group(1)


def test_check_names_stale_blocks_and_write_fixes_them(root, capsys):
    before = (root / "README.md").read_text()
    assert report.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "README.md:5: report:bench-summary is stale" in err
    assert (root / "README.md").read_text() == before          # --check writes nothing
    assert report.main(["--root", str(root)]) == 0
    assert report.main(["--check", "--root", str(root)]) == 0
    after = (root / "README.md").read_text()
    assert "stale text" not in after
    # everything outside the blocks is untouched, including the marker shown in a code block
    outside = lambda t: re.sub(r"(<!-- report:[^>]*-->\n).*?(\n\s*<!-- /report)", r"\1\2", t, flags=re.S)  # noqa: E731
    assert outside(after) == outside(before).replace("\nstale text", "")
    assert "<!-- report:not-a-block shown as an example -->" in after


def test_bench_run_table_values(root):
    report.run(root, check=False)
    text = (root / "docs" / "toy.md").read_text()
    body = _block(text, "<!-- report:bench-run file=cpu-toy.json -->")
    assert "2026-01-02 03:04 UTC, commit 0123456, Toy CPU, 2 cores; load: quiet. The toy run." in body
    rows = [r for r in body.splitlines() if r.startswith("| ")]
    assert rows[0].startswith("| family | case | n | reference ms | compiled ms | fused ms | vs reference")
    # reference 10 ms, compiled 4 ms, fused 2 ms: 5.0x and 2.0x; memory 10 MiB and 1 MiB
    assert "| critic_lse | DV | 64 | 10.0 | 4.0 | 2.0 | 5.0x | 2.0x | 10.0 | 1.0 |" in rows
    assert "| critic_lse | DV | 128 | 64.0 | 12.0 | 8.0 | 8.0x | 1.5x | 40.0 | 0.0 |" in rows
    # a case without a compiled timing and a loss without a label
    assert "| mmd_imq | mmd_imq | 64 | 6.0 | - | 3.0 | 2.0x | - | 2.0 | 0.0 |" in rows
    assert "(../bench/results/cpu-toy.json)" in body          # links are relative to the document


def test_summary_history_and_runs(root):
    report.run(root, check=False)
    readme = (root / "README.md").read_text()
    summary = _block(readme, "<!-- report:bench-summary -->")
    assert "| critic_lse | DV | 128 | 8.0 | 8.0x | 1.5x | 0.0 | 40.0 |" in summary
    assert "mmd_imq" not in summary                          # only the families INDEX.json names
    doc = (root / "docs" / "toy.md").read_text()
    history = _block(doc, "<!-- report:bench-history family=critic_lse -->")
    assert "| DV | 64 | 2.0 / 4.0 (2.0x) | 1.0 / 3.0 (3.0x) |" in history
    assert "| DV | 128 | 8.0 / 12.0 (1.5x) |  |" in history   # the later run lacks that case
    runs = _block(doc, "<!-- report:bench-runs -->")
    assert "fedcba9+" in runs and "not recorded" in runs       # dirty commit; no INDEX entry


def test_run_tables_and_claims(root):
    report.run(root, check=False)
    doc = (root / "docs" / "toy.md").read_text()
    fresh = _block(doc, "<!-- report:run-table run=toy/seed0 -->")
    assert "`fastmi run toy`, 2026-01-02, wall time 2.5 min." in fresh
    assert "[metrics.csv](../results/toy/seed0/metrics.csv)" in fresh
    assert "```text\ntoy table\nrow a-b  2.500\n```" in fresh
    old = _block(doc, "<!-- report:run-table run=toy/old -->")
    assert "Raw per-step data not kept; rerun: `fastmi run toy --old`, about 3 h on one core." in old
    claims = _block(doc, "<!-- report:claims -->")
    assert "| mi 2.50, slope -0.125, c nan | 2.0 | ok |" in claims
    assert "| dv 12.5 to 0.25 | figure | held: 0.25 |" in claims
    assert "[Toy paper](toy.md)" in claims
    runs = _block(doc, "<!-- report:experiment-runs -->")
    assert "| 2.5 min | yes |" in runs and "(rerun: about 3 h on one core) | no |" in runs
    # a block inside a list item is indented like its marker
    readme = (root / "README.md").read_text()
    assert "\n  | experiment | claim | ours | paper | status |\n" in readme


@pytest.mark.parametrize("text, message", [
    ("<!-- report:bench-runs -->\n", "README.md:1: report:bench-runs is never closed"),
    ("<!-- /report:bench-runs -->\n", "README.md:1: closing marker without an opening one"),
    ("<!-- report:bench-runs -->\n<!-- /report:claims -->\n", "closes report:claims, but line 1 opened"),
    ("<!-- report:bench-runs -->\n<!-- report:claims -->\n", "opened inside the block of line 1"),
    ("<!-- report:bench-runs oops -->\n<!-- /report:bench-runs -->\n", "malformed report marker"),
    ("<!-- report:nope -->\n<!-- /report:nope -->\n", "README.md:1: report:nope: unknown kind"),
    ("<!-- report:bench-runs x=1 -->\n<!-- /report:bench-runs -->\n", "unknown argument 'x'"),
    ("<!-- report:bench-run -->\n<!-- /report:bench-run -->\n", "missing 1 required"),
    ("<!-- report:bench-run file=absent.json -->\n<!-- /report:bench-run -->\n", "absent.json"),
    ("<!-- report:run-table run=toy/none -->\n<!-- /report:run-table -->\n", "results/toy/none: no such run"),
])
def test_errors_are_one_line_and_change_nothing(root, capsys, text, message):
    (root / "README.md").write_text(text)
    toy_before = (root / "docs" / "toy.md").read_text()
    assert report.main(["--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert (root / "README.md").read_text() == text
    assert (root / "docs" / "toy.md").read_text() == toy_before   # nothing written when one block fails


def test_print_one_run(root, capsys):
    assert report.main([str(root / "bench" / "results" / "cpu-toy.json")]) == 0
    out = capsys.readouterr().out
    assert "| critic_lse | DV | 64 | 10.0 | 4.0 | 2.0 | 5.0x | 2.0x | 10.0 | 1.0 |" in out


def test_markers_parse_arguments():
    lines = ["x", "<!-- report:bench-run file=a.json families=a,b -->", "old", "<!-- /report:bench-run -->"]
    (b,) = markers.blocks(lines, "doc.md")
    assert (b.kind, b.args, b.line, b.start, b.end) == ("bench-run", {"file": "a.json", "families": "a,b"}, 2, 2, 3)
    assert b.name == "report:bench-run file=a.json families=a,b"
    new, changed = markers.render("\n".join(lines), "doc.md", lambda blk: "new\nlines")
    assert new == "x\n<!-- report:bench-run file=a.json families=a,b -->\nnew\nlines\n<!-- /report:bench-run -->"
    assert changed == [b]
    assert markers.render(new, "doc.md", lambda blk: "new\nlines")[1] == []


def test_dms_draws(root):
    new, old = root / "results" / "dms" / "new", root / "results" / "dms" / "old"
    new.mkdir(parents=True)
    old.mkdir(parents=True)
    (new / "meta.json").write_text('{"command": "fastmi run nb_dms_2d", "label": "new one"}')
    (new / "results.json").write_text('{"datasets": {"spirals": {"ari": [1.0, 0.5, 0.9996, 0.25]}}}')
    (old / "meta.json").write_text('{"command": "fastmi run nb_dms_2d", "raw_data": false, "rerun_time": "1 h"}')
    (old / "table.txt").write_text("head\nspirals    1200  3  1  600  1 mean 0.639 (0.26, 1.00, 0.58)   0.639  optimal\n")
    (root / "docs" / "toy.md").write_text("<!-- report:dms-draws runs=dms/new,dms/old -->\n<!-- /report:dms-draws -->\n")
    assert report.main(["--root", str(root)]) == 0
    text = (root / "docs" / "toy.md").read_text()
    assert "| [new one](../results/dms/new) | 1.00, 0.50, 1.00, 0.25 | 0.687 | 2 / 4 |" in text
    assert "| [dms/old](../results/dms/old) | 0.26, 1.00, 0.58 | 0.639 | 1 / 3 |" in text


def test_a_claim_rechecks_from_the_raw_data():
    """The one-hot run's summary numbers follow from its committed per-step data (independent of
    fastmi: numpy only): final estimate = mean of the last 500 steps, drift = least-squares slope of
    the second term over the last 1000 steps."""
    import csv
    import gzip

    import numpy as np

    run = ROOT / "results" / "remine_onehot" / "seed0"
    summary = json.loads((run / "results.json").read_text())["runs"]
    rows = {}
    with gzip.open(run / "metrics.csv.gz", "rt") as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["job"], []).append(r)
    for job in ("dv-b100", "redv-b100"):
        mi = np.array([float(r["mi"]) for r in rows[job]])
        second = np.array([float(r["second"]) for r in rows[job]])
        assert np.mean(mi[-500:]) == pytest.approx(summary[job]["final_mi"], rel=1e-9)
        slope = np.polyfit(np.arange(1000), second[-1000:], 1)[0]
        assert slope == pytest.approx(summary[job]["second_term_slope"], rel=1e-6, abs=1e-12)
