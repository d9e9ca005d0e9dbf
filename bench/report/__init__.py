"""The report: every table of measured numbers in README.md and docs/ generated from committed results.

    python -m bench.report            rewrite the generated blocks of README.md and docs/**/*.md in place
    python -m bench.report --check    exit 1 naming each block that differs from what would be generated
    python -m bench.report RUN.json   print the table of one benchmark run (what `make bench` shows)

Sources: bench/results/ (one pytest-benchmark JSON per CPU run, INDEX.json with load notes) and
results/<experiment>/<run>/ (committed experiment runs, CLAIMS.json). Blocks are written between
``<!-- report:KIND args -->`` and ``<!-- /report:KIND -->`` (see ``markers``); KIND is one of
``GENERATORS``. Exit status 2 with one line on stderr for a malformed block or a missing source.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path

from . import benchruns, distributed, experiments, hybrid, markers, torchmist

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Context:
    """Where a block's generator reads from and the document it writes into (for relative links)."""
    root: Path
    doc: Path

    @property
    def bench(self) -> Path:
        return self.root / "bench" / "results"

    @property
    def results(self) -> Path:
        return self.root / "results"


GENERATORS = {
    "bench-run": lambda c, file, families=None: benchruns.run_table(c.bench, c.doc, file, families),
    "bench-summary": lambda c, largest="no": benchruns.summary(c.bench, c.doc, largest),
    "bench-history": lambda c, family: benchruns.history(c.bench, c.doc, family),
    "bench-runs": lambda c: benchruns.runs_list(c.bench, c.doc),
    "bench-sweep": lambda c, file: benchruns.sweep(c.bench, c.doc, file),
    "distributed": lambda c, file: distributed.table(c.bench, file),
    "torchmist-steps": lambda c, file: torchmist.step_table(c.bench, c.doc, file),
    "torchmist-estimates": lambda c, file: torchmist.estimate_table(c.bench, c.doc, file),
    "run-table": lambda c, run: experiments.run_table(c.results, c.doc, run),
    "experiment-runs": lambda c: experiments.runs_list(c.results, c.doc),
    "claims": lambda c, paper=None: experiments.claims_summary(c.results, c.doc, paper),
    "dms-draws": lambda c, runs: experiments.dms_draws(c.results, c.doc, runs),
    "hybrid-table1": lambda c, run: hybrid.table1(c.results, c.doc, run),
}


class ReportError(Exception):
    """A block that cannot be generated; the message names the file, line and block."""


def generate(root: Path, doc: Path, block: markers.Block) -> str:
    fn = GENERATORS.get(block.kind)
    where = f"{doc.relative_to(root)}:{block.line}: {block.name}"
    if fn is None:
        raise ReportError(f"{where}: unknown kind (known: {', '.join(sorted(GENERATORS))})")
    params = list(inspect.signature(fn).parameters)[1:]
    unknown = [k for k in block.args if k not in params]
    if unknown:
        raise ReportError(f"{where}: unknown argument {unknown[0]!r} (takes: {', '.join(params) or 'none'})")
    try:
        return fn(Context(root, doc), **block.args)
    except TypeError as e:
        raise ReportError(f"{where}: {e}") from None
    except (OSError, ValueError, KeyError) as e:
        raise ReportError(f"{where}: {e}") from None


def documents(root: Path) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    docs = [root / "README.md"] if (root / "README.md").exists() else []
    return docs + sorted((root / "docs").rglob("*.md"))


def run(root: Path, check: bool) -> list[str]:
    """Regenerate (or, with ``check``, compare) every block; returns 'file:line: block' of each stale one."""
    stale, updates = [], []
    for doc in documents(root):
        text = doc.read_text()
        try:
            new, changed = markers.render(text, str(doc.relative_to(root)), lambda b: generate(root, doc, b))
        except markers.MarkerError as e:
            raise ReportError(str(e)) from None
        stale += [f"{doc.relative_to(root)}:{b.line}: {b.name}" for b in changed]
        if new != text:
            updates.append((doc, new))
    if not check:            # written only once every block generated: an error leaves every file as it was
        for doc, new in updates:
            doc.write_text(new)
    return stale


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument("run_json", nargs="?", help="print the table of this benchmark run and exit")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated block is stale")
    p.add_argument("--root", default=str(ROOT), help="the repository root (default: this checkout)")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        if args.run_json:
            path = Path(args.run_json).resolve()
            print(benchruns.run_table(path.parent, Path.cwd() / "stdout.md", path.name))
            return 0
        stale = run(root, args.check)
    except (ReportError, OSError, ValueError, KeyError) as e:
        print(f"python -m bench.report: error: {e}", file=sys.stderr)
        return 2
    if args.check:
        for s in stale:
            print(f"{s} is stale: run `make report` (python -m bench.report) and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for s in stale:
        print(f"updated {s}")
    return 0
