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
uninterrupted one. A folder holding a run's work is never deleted or overwritten unless asked
(``overwrite``); every check runs before the folder is touched; one run at a time writes a folder
(``run_lock``).
"""
from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Optional

import torch

from .._core.registry import BACKENDS
from . import claims, provenance, run_lock, settings

try:
    from tqdm.auto import tqdm
except ImportError:  # without tqdm: a line every PROGRESS_EVERY seconds
    tqdm = None

PROGRESS_EVERY = 10.0
# what `pip install` names each optional import an experiment may need
PIP_NAMES = {"matplotlib": "matplotlib", "sklearn": "scikit-learn", "foolbox": "'foolbox==3.3.4'",
             "scipy": "scipy", "torchvision": "torchvision", "PIL": "pillow"}


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
    overwrite: bool = False            # a folder holding another run's work may be replaced
    quick: bool = False
    progress: bool = True
    stop_after: Optional[int] = None   # testing hook: stop (Interrupted) after this many steps in this session
    unavailable: dict = dataclasses.field(default_factory=dict)   # optional package -> what is skipped without it
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
        if self.progress:
            bar = (tqdm(total=n_steps, initial=start, desc=job, unit=unit, leave=False, dynamic_ncols=True)
                   if tqdm is not None and sys.stderr.isatty() else LineProgress(job, n_steps, start, unit))
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


class LineProgress:
    """Progress without tqdm, or into a log file: one line on stderr every PROGRESS_EVERY seconds."""

    def __init__(self, job: str, total: int, done: int, unit: str):
        self.job, self.total, self.done, self.unit = job, total, done, unit
        self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        if time.perf_counter() - self.last >= PROGRESS_EVERY:
            self.last = time.perf_counter()
            print(f"  {self.job}: {self.unit} {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


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
def make_config(module, quick: bool, sets: list[str]):
    """The module's Config with the quick preset (if asked) and ``--set key=value`` overrides applied,
    validated; ``settings.SettingError`` (a ValueError) names the setting at fault."""
    cfg = module.Config()
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    values = dict(getattr(module, "QUICK", {})) if quick else {}
    for item in sets or []:
        if "=" not in item:
            raise settings.SettingError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise settings.unknown_setting(module, key)
        values[key] = settings.parse(fields[key], getattr(cfg, key), raw)
    cfg = dataclasses.replace(cfg, **values)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def requirements(module, cfg) -> dict[str, str]:
    """{import name: what needs it} of the optional packages ``module`` needs with ``cfg``."""
    need = dict(getattr(module, "REQUIRES", {}))
    if hasattr(module, "requires"):
        need.update(module.requires(cfg))
    return need


def missing_requirements(module, cfg) -> Optional[str]:
    """One sentence naming the optional packages this run needs and lacks (None: all there)."""
    missing = {}
    for name, why in requirements(module, cfg).items():
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or a broken install
            missing[name] = why
    if not missing:
        return None
    what = "; ".join(f"{n} ({why})" for n, why in missing.items())
    pip = " ".join(PIP_NAMES.get(n, n) for n in missing)
    return f"{module.NAME} needs {what}: pip install {pip}"


def missing_optional(module, cfg) -> dict[str, str]:
    """{import name: what is skipped without it} of the packages ``module.optional(cfg)`` names that do
    not import here (a run goes on without them, with a warning)."""
    out = {}
    for name, why in (module.optional(cfg) if hasattr(module, "optional") else {}).items():
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or a broken install
            out[name] = why
    return out


def optional_line(module, missing: dict, refused: bool = False) -> str:
    """The one line saying what runs without the optional packages ``missing`` (or, ``refused``: why
    the run needs them)."""
    what = "; ".join(f"{n} is not installed, so {why} is skipped" for n, why in missing.items())
    pip = " ".join(PIP_NAMES.get(n, n) for n in missing)
    if refused:
        return (f"{module.NAME} needs {', '.join(missing)} ({'; '.join(missing.values())}): pip install {pip} "
                f"({getattr(module, 'OPTIONAL_OFF', 'or turn it off with --set')}; --quick skips it with a warning)")
    return f"{module.NAME}: warning: {what} (pip install {pip})"


def data_sources(module, cfg, ctx) -> list:
    """Where the run's datasets will be read from (``module.dataset_names(cfg)``: names, or (name,
    splits)); DatasetNotFoundError before anything runs when one is missing."""
    from ..data import locate

    if not hasattr(module, "dataset_names"):
        return [{"dataset": "synthetic", "how": "generated from the run's seed (no files)"}]
    out = []
    for entry in module.dataset_names(cfg):
        name, splits = (entry, ("train", "test")) if isinstance(entry, str) else entry
        out.append(locate(name, ctx.data_dir, ctx.download, splits))
    return out


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


def finish_table(lines: list, note: Optional[str], cfg) -> str:
    """A results table's text: its lines, the dataset note (if any), and the settings that differ."""
    return "\n".join([*lines, *([note] if note else []), differences_text(cfg)])


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


RUN_FILES = ("config.json", "metrics.csv", "results.json", "table.txt")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (it holds another run, is a file, ...)."""


def work_in(run_dir: Path) -> list[str]:
    """What of a run's work ``run_dir`` holds: results, finished jobs, checkpoints (empty: nothing)."""
    if not run_dir.is_dir():
        return []
    jobs = run_dir / "jobs"
    done = len(list(jobs.glob("*.done.pt"))) if jobs.is_dir() else 0
    ckpts = len(list(jobs.glob("*.ckpt.pt"))) if jobs.is_dir() else 0
    out = ["results.json"] if (run_dir / "results.json").exists() else []
    out += [f"{done} finished job{'s' * (done != 1)}"] if done else []
    out += [f"{ckpts} checkpoint{'s' * (ckpts != 1)}"] if ckpts else []
    return out


def check_run_folder(ctx: RunContext) -> None:
    """RunFolderError unless ``ctx.run_dir`` can take this run without losing anything."""
    run_dir = ctx.run_dir
    if ctx.resume and ctx.overwrite:
        raise RunFolderError("--resume continues the run in the folder, --overwrite replaces it: give one of them")
    run_lock.check_free(run_dir)
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists() or p == p.parent)
    if existing.exists() and not existing.is_dir():
        raise RunFolderError(f"--out: {existing} is a file, not a folder; give --out a folder")
    if existing.exists() and not _writable(existing):
        raise RunFolderError(f"--out: cannot write the run folder {run_dir}: {existing} is not writable")
    if ctx.resume:
        if not (run_dir / "config.json").is_file():
            raise RunFolderError(f"--resume: there is no run to continue in {run_dir} (no config.json); "
                                 "check --out, --quick and --seed (they name the folder), or start without --resume")
        return
    work = work_in(run_dir)
    if work and not ctx.overwrite:
        raise RunFolderError(f"{run_dir} holds a run ({', '.join(work)}): add --resume to continue it, --out DIR "
                             "to start this one elsewhere, or --overwrite to replace it")


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def clear_run_folder(run_dir: Path) -> None:
    """Delete what a run writes (config, metrics, results, table, figures, jobs/); other files stay."""
    shutil.rmtree(run_dir / "jobs", ignore_errors=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for png in run_dir.glob("*.png"):
        png.unlink()


def run_experiment(module, cfg, ctx: RunContext) -> dict:
    """Check everything, prepare ``ctx.run_dir``, run the experiment, write config/results/table, print
    the table. Raises (before the folder is touched) RunFolderError, a missing dataset or package; holds
    the folder's lock (``run_lock``) from before its first write to the end."""
    run_dir = ctx.run_dir
    check_run_folder(ctx)
    missing = missing_requirements(module, cfg)
    if missing:
        raise MissingRequirement(missing)
    ctx.unavailable = missing_optional(module, cfg)
    if ctx.unavailable:
        print(optional_line(module, ctx.unavailable), file=sys.stderr, flush=True)
    prov = provenance.collect(ctx.backend, ctx.device)
    config = {"experiment": module.NAME, "config": dataclasses.asdict(cfg),
              "runner": {"seed": ctx.seed, "quick": ctx.quick, "device": ctx.device, "backend": ctx.backend,
                         "data_dir": ctx.data_dir, "threads": torch.get_num_threads()},
              "data": data_sources(module, cfg, ctx), "provenance": prov}
    config_path = run_dir / "config.json"
    if ctx.resume:
        old = json.loads(config_path.read_text())
        changed = _resume_changes(old, config, cfg)
        if changed:
            raise RunFolderError(f"--resume: {run_dir} was started with other settings ({'; '.join(changed)}); "
                                 "use --out for a new folder, or --overwrite to start over there")
        config["earlier_sessions"] = old.get("earlier_sessions", []) + [
            {k: old[k] for k in ("runner", "data", "provenance") if k in old}]
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_lock.acquire(run_dir)
    try:
        if ctx.overwrite and not ctx.resume:
            clear_run_folder(run_dir)
        return _run_locked(module, cfg, ctx, config)
    finally:
        lock.release()


def _run_locked(module, cfg, ctx: RunContext, config: dict) -> dict:
    """``run_experiment`` once it holds the run folder: write config.json, run, write the results."""
    from ..data import sources as data_log

    run_dir = ctx.run_dir
    (run_dir / "config.json").write_text(json.dumps(_jsonable(config), indent=2) + "\n")
    data_log.clear_reads()
    t0 = time.perf_counter()
    results = module.run(cfg, ctx)
    table = results.pop("table", "")
    if ctx.unavailable:
        results["skipped"] = [optional_line(module, ctx.unavailable)]
    results = {"experiment": module.NAME, **results,
               "seconds": {"total_this_session": time.perf_counter() - t0, "jobs": dict(ctx.seconds)},
               "data_read": data_log.reads(), "provenance": config["provenance"]}
    (run_dir / "results.json").write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    claim_lines = claims.lines(results)
    if claim_lines:
        table = "\n".join([table, ""] + claim_lines) if table else "\n".join(claim_lines)
    if table:
        (run_dir / "table.txt").write_text(table + "\n")
        print(table)
    print(f"\nrun folder: {run_dir}")
    return results


class MissingRequirement(ImportError):
    """An optional package the experiment needs is not installed (the message says which and how)."""


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    return _plain(v)


# --- command line (fastmi/experiments/command.py) ----------------------------------------------------
def run_dir_for(out, name: str, quick: bool, seed: int) -> Path:
    return Path(out) / f"{name}{'-quick' if quick else ''}-seed{seed}"


def main(argv=None, module=None) -> int:
    """``fastmi run`` (``module`` given: ``python -m fastmi.experiments.<name>``, no name argument)."""
    from .command import main as command_main

    return command_main(argv, module)
