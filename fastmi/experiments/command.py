"""``fastmi run``: the command line of the paper experiments.

Every user mistake is caught before anything runs or any file is touched, and reads as one line on
stderr with exit status 2: the settings (named one by one), device, backend, threads, the optional
packages the experiment needs, its datasets, and the run folder (never deleted or overwritten
without ``--overwrite``). Ctrl-C ends with one line giving the ``--resume`` command (exit 130).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

import torch

from .._core.registry import BACKENDS
from . import runner, settings

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, with every error as one line on stderr (the usage is in --help)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(prog: str = "fastmi run") -> OneLineParser:
    p = OneLineParser(prog=prog, add_help=False, description="run one of fastmi's paper experiments",
                      epilog="fastmi run EXPERIMENT --help also lists the experiment's settings.")
    p.add_argument("experiment", nargs="?", help="experiment name (fastmi run --list)")
    p.add_argument("-h", "--help", action="store_true", help="show this help (and the experiment's settings)")
    p.add_argument("--list", action="store_true", help="list the experiments, one line each")
    p.add_argument("--quick", action="store_true", help="the quick preset (minutes on 2 CPU cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable); lists as a,b,c or JSON")
    p.add_argument("--dataset", default=None, help="shortcut for --set dataset=NAME")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--backend", default="auto", help=f"fastmi loss backend: {', '.join(BACKENDS)}")
    p.add_argument("--data-dir", default=None, help="folder with the datasets (never downloaded without --download)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR / STL-10 into --data-dir")
    p.add_argument("--out", default="runs", help="parent folder of the run folder (default runs/)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in the same run folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run folder's earlier results (without it, a folder holding a run is kept)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the experiments' small ops do not scale, and OpenMP "
                        "threads spin badly on a shared CPU; 0 keeps torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _help(p: OneLineParser, module) -> str:
    text = p.format_help()
    if module is None:
        return text
    return (f"{text}\n{module.NAME}: {module.SUMMARY}\n\nSettings (--set KEY=VALUE; the defaults are the paper's; "
            f"--quick applies the --quick column):\n{settings.table(module)}\n")


def resume_command(argv: list[str]) -> str:
    """The command that continues the run ``argv`` started: the same arguments, with --resume."""
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return "fastmi run " + shlex.join(args)


def _check_device_backend(args) -> None:
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here")
    if args.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {args.backend!r}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    from .._core import registry

    try:
        registry.validate(args.backend, torch.empty(0, device=args.device), "--backend")
    except (RuntimeError, ValueError) as e:
        raise ValueError(str(e).replace("--backend: backend=", "--backend ")) from None


def prepare(args, module):
    """(module, cfg, ctx) with everything checked; raises ValueError / DatasetNotFoundError /
    runner.MissingRequirement with a one-line message. Nothing is written."""
    from . import get_experiment

    module = module or get_experiment(args.experiment)
    sets = list(args.set) + ([f"dataset={args.dataset}"] if args.dataset else [])
    try:
        cfg = runner.make_config(module, args.quick, sets)
    except settings.SettingError as e:
        raise settings.SettingError(f"{module.NAME}: {e}") from None
    _check_device_backend(args)
    ctx = runner.RunContext(name=module.NAME, run_dir=runner.run_dir_for(args.out, module.NAME, args.quick, args.seed),
                            seed=args.seed, device=args.device, backend=args.backend, data_dir=args.data_dir,
                            download=args.download, resume=args.resume, overwrite=args.overwrite, quick=args.quick,
                            progress=not args.no_progress)
    runner.check_run_folder(ctx)
    missing = runner.missing_requirements(module, cfg)
    if missing:
        raise runner.MissingRequirement(missing)
    optional = runner.missing_optional(module, cfg)
    if optional and not args.quick:   # the paper's run is for all its tables: ask; --quick goes on without
        raise runner.MissingRequirement(runner.optional_line(module, optional, refused=True))
    runner.data_sources(module, cfg, ctx)
    return module, cfg, ctx


def main(argv=None, module=None) -> int:
    """``fastmi run`` (``module`` given: ``python -m fastmi.experiments.<name>``, no name argument)."""
    from ..data import DatasetNotFoundError
    from . import EXPERIMENTS, get_experiment

    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser(f"python -m fastmi.experiments.{module.NAME}" if module else "fastmi run")
    if module is not None:
        argv = [module.NAME] + argv
    args = p.parse_args(argv)
    if args.help:
        try:
            shown = module or (get_experiment(args.experiment) if args.experiment else None)
        except ValueError as e:
            p.error(str(e))
        print(_help(p, shown), end="")
        return 0
    if args.list:
        for name in EXPERIMENTS:
            print(f"{name:<18} {get_experiment(name).SUMMARY}")
        return 0
    if not args.experiment:
        p.error("give an experiment name (fastmi run --list lists them)")
    try:
        module, cfg, ctx = prepare(args, module)
    except (ValueError, DatasetNotFoundError, runner.MissingRequirement) as e:
        p.exit(EXIT_USAGE, f"{p.prog}: error: {e}\n")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        runner.run_experiment(module, cfg, ctx)
    except KeyboardInterrupt:
        kept = runner.work_in(ctx.run_dir)
        p.exit(EXIT_INTERRUPTED, f"\n{p.prog}: interrupted; {ctx.run_dir} keeps "
               f"{', '.join(kept) if kept else 'no finished job yet'}; continue with: {resume_command(argv)}\n")
    except (ValueError, TypeError, DatasetNotFoundError) as e:
        # what only shows once the run sees its data (a batch larger than the dataset); FASTMI_DEBUG=1 re-raises
        if os.environ.get("FASTMI_DEBUG"):
            raise
        p.exit(EXIT_USAGE, f"{p.prog}: error: {e} (FASTMI_DEBUG=1 shows the traceback)\n")
    return 0
