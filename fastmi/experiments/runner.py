"""The shared experiment runner: command line, configs, run folders, checkpoints and resume.

An experiment is a module with ``NAME``, ``SUMMARY`` (one line), a ``Config`` dataclass whose
defaults are the paper's settings, a ``QUICK`` dict of overrides (minutes on 2 CPU cores) and
``run(cfg, ctx) -> dict``. ``run`` trains through ``ctx.loop`` (one call per independent training
job), and returns results with a ``"table"`` string; the runner writes the run folder:

    <out>/<name>[-quick]-seed<N>/
        config.json     the full config plus the runner's settings
        metrics.csv     one row per logged step (or epoch) of every job, ``job`` first
        results.json    what ``run`` returned (without the table), plus wall-clock seconds per job
        table.txt       ours vs the paper, with the settings that differ from the paper named
        *.png           figures
        jobs/           finished jobs and checkpoints (used by --resume)

Resume: each job checkpoints every ``ckpt_every`` steps (models, optimizers, random generators, the
global torch RNG and the logged rows); ``--resume`` reloads finished jobs and continues the others
from their last checkpoint, so on the CPU a resumed run ends with the same results as an
uninterrupted one.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .._core.registry import BACKENDS

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a set-up dependency
    tqdm = None


class Interrupted(RuntimeError):
    """Raised by ``RunContext.loop`` when ``stop_after`` steps ran in this session (tests of --resume)."""


@dataclasses.dataclass
class JobResult:
    """What one training job produced: the logged rows and the ``finish`` function's output."""
    rows: list
    final: dict
    seconds: float


@dataclasses.dataclass
class RunContext:
    """Runner settings an experiment sees, and the checkpointed training loop."""
    name: str
    run_dir: Path
    seed: int = 0
    device: str = "cpu"
    backend: str = "auto"
    data_dir: Optional[str] = None
    download: bool = False
    resume: bool = False
    quick: bool = False
    progress: bool = True
    stop_after: Optional[int] = None   # testing hook: stop (Interrupted) after this many steps in this session
    seconds: dict = dataclasses.field(default_factory=dict)
    _steps_run: int = 0

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)   # a str from user code works too

    def job_seed(self, job: str) -> int:
        """A seed for ``job`` derived from the run's seed (stable across Python sessions)."""
        return (self.seed * 1_000_003 + zlib.crc32(job.encode())) % (2**31 - 1)

    def _job_path(self, job: str, kind: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in job)
        return self.run_dir / "jobs" / f"{safe}.{kind}.pt"

    def loop(self, job: str, state: dict, step_fn: Callable[[int], Optional[dict]], n_steps: int, *,
             ckpt_every: int = 0, finish: Optional[Callable[[], dict]] = None, unit: str = "step") -> JobResult:
        """Run ``step_fn(step)`` for step = 0 .. n_steps-1 with checkpoints; returns the job's result.

        ``state`` maps names to what must be saved: modules and optimizers (``state_dict``) and
        ``torch.Generator`` objects. ``step_fn`` returns a metrics row (dict) or None. ``finish``
        computes final quantities once the loop is done (e.g. test accuracy); they are stored with
        the job, so a resumed run does not recompute a finished job.
        """
        done_path, ckpt_path = self._job_path(job, "done"), self._job_path(job, "ckpt")
        if self.resume and done_path.exists():
            saved = torch.load(done_path, weights_only=True)
            self.seconds[job] = saved["seconds"]
            return JobResult(saved["rows"], saved["final"], saved["seconds"])
        rows, start, elapsed = [], 0, 0.0
        if self.resume and ckpt_path.exists():
            saved = torch.load(ckpt_path, weights_only=True)
            _load_state(state, saved["state"])
            torch.set_rng_state(saved["torch_rng"])
            rows, start, elapsed = saved["rows"], saved["step"], saved["seconds"]
        t0 = time.perf_counter()
        bar = None
        if self.progress and tqdm is not None:
            bar = tqdm(total=n_steps, initial=start, desc=job, unit=unit, leave=False, dynamic_ncols=True)
        try:
            for step in range(start, n_steps):
                if self.stop_after is not None and self._steps_run >= self.stop_after:
                    raise Interrupted(f"{job}: stopped after {self._steps_run} steps (stop_after)")
                row = step_fn(step)
                self._steps_run += 1
                if row is not None:
                    rows.append({unit: step, **{k: _plain(v) for k, v in row.items()}})
                if bar is not None:
                    bar.update(1)
                if ckpt_every and (step + 1) % ckpt_every == 0 and step + 1 < n_steps:
                    _atomic_save({"state": _save_state(state), "torch_rng": torch.get_rng_state(), "rows": rows,
                                  "step": step + 1, "seconds": elapsed + time.perf_counter() - t0}, ckpt_path)
        finally:
            if bar is not None:
                bar.close()
        final = {k: _plain(v) for k, v in (finish() if finish else {}).items()}
        seconds = elapsed + time.perf_counter() - t0
        _atomic_save({"rows": rows, "final": final, "seconds": seconds}, done_path)
        ckpt_path.unlink(missing_ok=True)
        self.seconds[job] = seconds
        return JobResult(rows, final, seconds)


def _plain(v):
    """Tensors and numpy scalars -> Python numbers / lists (for CSV, JSON and torch.load(weights_only))."""
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if hasattr(v, "item") and not isinstance(v, (list, dict)):
        return v.item()
    return v


def _save_state(state: dict) -> dict:
    out = {}
    for k, obj in state.items():
        out[k] = obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
    return out


def _load_state(state: dict, saved: dict) -> None:
    for k, obj in state.items():
        if isinstance(obj, torch.Generator):
            obj.set_state(saved[k])
        else:
            obj.load_state_dict(saved[k])


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


# --- configs ------------------------------------------------------------------------------------
def _coerce(name: str, key: str, raw: str, default):
    """Parse ``--set key=raw`` into the type of the field's default."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(raw).lower() in ("true", "false", "yes", "no", "1", "0"):
            return str(raw).lower() in ("true", "yes", "1")
    elif isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, list):
            value = [v.strip() for v in str(raw).split(",") if v.strip()]
            value = [json.loads(v) if _is_json(v) else v for v in value]
        return tuple(value)
    elif isinstance(default, str) or default is None:
        return value if default is None else str(raw)
    raise ValueError(f"--set {key}={raw}: {name}.{key} expects a {type(default).__name__} (default {default!r})")


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
        return True
    except json.JSONDecodeError:
        return False


def make_config(module, quick: bool, sets: list[str]):
    """The module's Config with the quick preset (if asked) and ``--set key=value`` overrides applied."""
    cfg = module.Config()
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    values = dict(getattr(module, "QUICK", {})) if quick else {}
    for item in sets or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ValueError(f"--set {item}: {module.NAME} has no setting {key!r}; settings: {', '.join(fields)}")
        values[key] = _coerce(module.NAME, key, raw, getattr(cfg, key))
    cfg = dataclasses.replace(cfg, **values)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def runner_field(default, **kw):
    """A config field that is not a paper setting (checkpoint interval, plotting): never listed as a
    difference from the paper, and free to change on --resume."""
    return dataclasses.field(default=default, metadata={"runner": True}, **kw)


def subset_field(default, **kw):
    """A config field naming which jobs to run (e.g. the estimators): --resume may change it, since
    the jobs themselves do not depend on it."""
    return dataclasses.field(default=default, metadata={"subset": True}, **kw)


def _resume_key(config: dict, cfg) -> dict:
    free = {f.name for f in dataclasses.fields(cfg) if f.metadata.get("runner") or f.metadata.get("subset")}
    return {k: v for k, v in config.items() if k not in free}


def _resume_changes(old: dict, new: dict, cfg) -> list[str]:
    """'key: old -> new' for every job-defining setting (and the seed) that differs between a run
    folder's config.json and this invocation; a key the folder lacks was added by a later fastmi."""
    a, b = _resume_key(_jsonable(old.get("config", {})), cfg), _resume_key(_jsonable(new["config"]), cfg)
    out = [f"{k}: {a[k]!r} -> {b.get(k)!r}" if k in a else f"{k}: absent (an older fastmi) -> {b[k]!r}"
           for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]
    if old.get("runner", {}).get("seed") != new["runner"]["seed"]:
        out.append(f"seed: {old.get('runner', {}).get('seed')!r} -> {new['runner']['seed']!r}")
    return out


_MISSING = object()


def whole_split_paper_value(name: str, value, dataset: Optional[str] = None) -> str:
    """How the paper's setting reads in a table's list of differences, for configs whose n_train /
    n_test of 0 mean the whole split (the paper's) and whose ``dataset`` field stands for ``dataset``."""
    if name == "dataset" and dataset:
        return dataset
    if name in ("n_train", "n_test") and value == 0:
        return "the whole split"
    return repr(value)


def differences(cfg) -> list[str]:
    """'key=value (paper: default)' for every paper setting that differs from the paper's defaults."""
    paper = type(cfg)()

    def same(f):
        a, b = getattr(cfg, f.name), getattr(paper, f.name)
        return sorted(a) == sorted(b) if f.metadata.get("subset") else a == b

    show = getattr(cfg, "paper_value", lambda name, value: repr(value))
    return [f"{f.name}={getattr(cfg, f.name)!r} (paper: {show(f.name, getattr(paper, f.name))})"
            for f in dataclasses.fields(cfg) if not f.metadata.get("runner") and not same(f)]


def differences_text(cfg, extra: Optional[list] = None) -> str:
    diffs = differences(cfg) + list(extra or [])
    if not diffs:
        return "Settings: the paper's."
    return "Settings that differ from the paper:\n" + "\n".join(f"  - {d}" for d in diffs)


# --- run folder ---------------------------------------------------------------------------------
def write_metrics(path: Path, jobs: dict) -> None:
    """metrics.csv: the rows of every job, with ``job`` as the first column."""
    columns, seen = ["job"], {"job"}
    for res in jobs.values():
        for row in res.rows:
            for k in row:
                if k not in seen:
                    seen.add(k)
                    columns.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for job, res in jobs.items():
            for row in res.rows:
                w.writerow({"job": job, **row})


def run_experiment(module, cfg, ctx: RunContext) -> dict:
    """Prepare ``ctx.run_dir``, run the experiment, write config/results/table, print the table."""
    run_dir = ctx.run_dir
    config = {"experiment": module.NAME, "config": dataclasses.asdict(cfg),
              "runner": {"seed": ctx.seed, "quick": ctx.quick, "device": ctx.device, "backend": ctx.backend,
                         "data_dir": ctx.data_dir}}
    config_path = run_dir / "config.json"
    if ctx.resume and config_path.exists():
        old = json.loads(config_path.read_text())
        changed = _resume_changes(old, config, cfg)
        if changed:
            raise ValueError(f"--resume: {run_dir} was started with other settings ({'; '.join(changed)}); rerun "
                             "without --resume to start over, or use --out for a new folder")
    elif run_dir.exists():
        shutil.rmtree(run_dir / "jobs", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    t0 = time.perf_counter()
    results = module.run(cfg, ctx)
    table = results.pop("table", "")
    results = {"experiment": module.NAME, **results,
               "seconds": {"total_this_session": time.perf_counter() - t0, "jobs": dict(ctx.seconds)}}
    (run_dir / "results.json").write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    if table:
        (run_dir / "table.txt").write_text(table + "\n")
        print(table)
    print(f"\nrun folder: {run_dir}")
    return results


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    return _plain(v)


# --- command line -------------------------------------------------------------------------------
def parser(prog: str = "fastmi run") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="run one of fastmi's paper experiments")
    p.add_argument("experiment", nargs="?", help="experiment name (fastmi run --list)")
    p.add_argument("--list", action="store_true", help="list the experiments, one line each")
    p.add_argument("--quick", action="store_true", help="the quick preset (minutes on 2 CPU cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config setting (repeatable); lists as a,b,c or JSON")
    p.add_argument("--dataset", default=None, help="shortcut for --set dataset=NAME (remine_slb / remine_clb)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--backend", default="auto", help="fastmi loss backend: auto, reference, cpu, triton, cuda")
    p.add_argument("--data-dir", default=None, help="folder with the datasets (never downloaded without --download)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR / STL-10 into --data-dir")
    p.add_argument("--out", default="runs", help="parent folder of the run folder (default runs/)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in the same run folder")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the experiments' small ops do not scale, and OpenMP "
                        "threads spin badly on a shared CPU; 0 keeps torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


def run_dir_for(out, name: str, quick: bool, seed: int) -> Path:
    return Path(out) / f"{name}{'-quick' if quick else ''}-seed{seed}"


def main(argv=None, module=None) -> int:
    """``fastmi run`` (``module`` given: ``python -m fastmi.experiments.<name>``, no name argument)."""
    from . import EXPERIMENTS, get_experiment

    argv = list(argv or [])
    p = parser(f"python -m fastmi.experiments.{module.NAME}" if module else "fastmi run")
    if module is not None:
        argv = [module.NAME] + argv
    args = p.parse_args(argv)
    if args.list:
        for name in EXPERIMENTS:
            print(f"{name:<18} {get_experiment(name).SUMMARY}")
        return 0
    if not args.experiment:
        p.error("give an experiment name (see fastmi run --list)")
    try:
        module = module or get_experiment(args.experiment)
        sets = list(args.set) + ([f"dataset={args.dataset}"] if args.dataset else [])
        cfg = make_config(module, args.quick, sets)
        if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
            raise ValueError(f"--device must be cpu or cuda[:N], got {args.device!r}")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here")
        if args.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {args.backend!r}")
        if args.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {args.threads}")
    except ValueError as e:
        p.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = RunContext(name=module.NAME, run_dir=run_dir_for(args.out, module.NAME, args.quick, args.seed),
                     seed=args.seed, device=args.device, backend=args.backend, data_dir=args.data_dir,
                     download=args.download, resume=args.resume, quick=args.quick, progress=not args.no_progress)
    from ..data import DatasetNotFoundError

    try:
        run_experiment(module, cfg, ctx)
    except DatasetNotFoundError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    except (ValueError, TypeError) as e:
        # settings that only fail once the run sees its data (--resume mismatch, a batch larger than
        # the dataset, a backend the machine lacks) read as a usage error; FASTMI_DEBUG=1 re-raises
        if os.environ.get("FASTMI_DEBUG"):
            raise
        p.exit(2, f"{p.prog}: error: {e}\n(FASTMI_DEBUG=1 shows the traceback)\n")
    return 0
