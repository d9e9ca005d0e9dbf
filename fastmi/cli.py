"""The ``fastmi`` command: ``fastmi info`` (which backends run here and why not), ``fastmi demo``,
``fastmi run <experiment>`` (paper experiments; ``fastmi run --list``), ``fastmi data`` (the datasets
they need: ``fastmi data --list``, ``fastmi data fashion-mnist``), ``fastmi --version``.

A mistake on the command line is one line on stderr and exit status 2; Ctrl-C is one line and 130."""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .experiments.command import EXIT_INTERRUPTED, OneLineParser


def _info() -> int:
    import torch

    import fastmi
    from . import _ext

    print(f"fastmi {fastmi.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for name, (ok, why) in fastmi.info().items():
        print(f"  {name:<10} {'yes' if ok else 'no ':<4} {why}")
    families = fastmi.info_families()
    backends = ("cpu", "triton", "cuda", "reference")
    print("\nper family (yes: runs here; no: built but not usable here; -: no such kernel):")
    print(f"  {'family':<14}" + "".join(f"{b:<11}" for b in backends))
    for fam, avail in families.items():
        cells = []
        for b in backends:
            ok, why = avail[b]
            cells.append("yes" if ok else ("-" if why.endswith(f"has no {b} kernel") else "no"))
        print(f"  {fam:<14}" + "".join(f"{c:<11}" for c in cells))
    if _ext.status()["notice"]:
        print(f"  note: {_ext.status()['notice']}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = OneLineParser(prog="fastmi", description="fused mutual-information losses")
    p.add_argument("--version", action="version", version=f"fastmi {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=argparse.ArgumentParser)
    sub.add_parser("info", help="which backends are available, and why not")
    sub.add_parser("demo", help="fastmi's case in ~3 minutes: same values as plain PyTorch, speed, memory, "
                   "a batch the dense path cannot hold, MI estimates", add_help=False)
    sub.add_parser("run", help="run a paper experiment (fastmi run --list; fastmi run NAME --help)", add_help=False)
    sub.add_parser("data", help="what each experiment needs, what is present, and getting it (fastmi data --list; "
                   "fastmi data fashion-mnist)", add_help=False)
    args, rest = p.parse_known_args(argv)
    try:
        if args.command == "info":
            if rest:
                p.error(f"unrecognized arguments: {' '.join(rest)}")
            return _info()
        if args.command == "run":
            from .experiments import command

            return command.main(rest)
        if args.command == "data":
            from .data import setup_command

            return setup_command.main(rest)
        from . import demo

        return demo.main(rest)
    except KeyboardInterrupt:
        # fastmi run handles its own (with the --resume command); this is the demo or info
        print(f"\nfastmi {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (fastmi info | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
