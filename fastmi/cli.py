"""The ``fastmi`` command: ``fastmi info`` (which backends run here and why not), ``fastmi demo``,
``fastmi run <experiment>`` (paper experiments; ``fastmi run --list``)."""
from __future__ import annotations

import argparse
import sys


def _info() -> int:
    import torch

    import fastmi

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
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="fastmi", description="fused mutual-information losses")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backends are available, and why not")
    sub.add_parser("demo", help="MI of correlated Gaussians with several bounds + fused-vs-reference timings",
                   add_help=False)
    sub.add_parser("run", help="run a paper experiment (fastmi run --list)", add_help=False)
    args, rest = p.parse_known_args(argv)
    if args.command == "info":
        return _info()
    if args.command == "run":
        from .experiments import runner

        return runner.main(rest)
    from . import demo

    return demo.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
