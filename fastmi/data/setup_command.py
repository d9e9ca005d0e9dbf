"""``fastmi data``: what each experiment needs, what is present, and getting what can be got.

    fastmi data --list                  each experiment's datasets (paper settings / --quick) and whether present
    fastmi data fashion-mnist           Debian's package dataset-fashion-mnist (apt-get), else torchvision
    fastmi data mnist cifar10 stl10     torchvision's download into --data-dir (default ./data)
    fastmi data vim_mnist               the datasets of that experiment's --quick run

A dataset that cannot be got here (no apt, no network, torchvision not importable) is one line saying
which files to put where; the exit status is then 1. A mistake on the command line is one line and 2.
Nothing is installed or downloaded by ``--list``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import DatasetNotFoundError

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "stl10")
APT_PACKAGE = "dataset-fashion-mnist"
EXIT_MISSING, EXIT_USAGE = 1, 2
_IDX = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)"
BY_HAND = {
    "fashion-mnist": f"put Fashion-MNIST's {_IDX} from https://github.com/zalandoresearch/fashion-mnist in "
                     "{dir}/fashion-mnist/",
    "mnist": f"put MNIST's {_IDX} in {{dir}}/mnist/",
    "cifar10": "unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) so that "
               "{dir}/cifar-10-batches-py/ holds data_batch_1..5 and test_batch",
    "cifar100": "unpack cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) so that "
                "{dir}/cifar-100-python/ holds train and test",
    "stl10": "unpack stl10_binary.tar.gz (https://cs.stanford.edu/~acoates/stl10/) so that {dir}/stl10_binary/ "
             "holds train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin",
}


class CannotGet(RuntimeError):
    """This machine cannot get the dataset (the message says why, in a few words)."""


def _run(cmd: list) -> subprocess.CompletedProcess:
    """Run a command, capturing its output (the tests replace this)."""
    return subprocess.run(cmd, capture_output=True, text=True)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _torchvision():
    try:
        import torchvision
    except Exception as e:  # ImportError, or a build that does not match torch
        raise CannotGet(f"torchvision is not usable here ({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None
    return torchvision


def status(name: str, data_dir) -> tuple[bool, str]:
    """(present, where and how it was identified / why not)."""
    from .sources import locate

    try:
        found = locate(name, data_dir, False)
    except DatasetNotFoundError as e:
        return False, str(e).split(". ")[0]
    return True, f"{found['path']} ({found['how']})"


def _apt_install() -> None:
    if shutil.which("apt-get") is None:
        raise CannotGet("apt-get is not available")
    if not _is_root():
        raise CannotGet(f"apt-get needs root: run sudo apt-get install {APT_PACKAGE}")
    res = _run(["apt-get", "install", "-y", APT_PACKAGE])
    if res.returncode != 0:  # the package lists may be stale or absent: update once and retry
        _run(["apt-get", "update"])
        res = _run(["apt-get", "install", "-y", APT_PACKAGE])
    if res.returncode != 0:
        last = (res.stderr or res.stdout or "").strip().splitlines()
        raise CannotGet(f"apt-get install {APT_PACKAGE} failed ({last[-1] if last else f'exit {res.returncode}'})")


def _download(name: str, root: Path) -> None:
    tv = _torchvision()
    root.mkdir(parents=True, exist_ok=True)
    try:
        if name in ("mnist", "fashion-mnist"):
            cls = tv.datasets.MNIST if name == "mnist" else tv.datasets.FashionMNIST
            for train in (True, False):
                cls(str(root), train=train, download=True)
        else:
            from .vision import _download as vision_download

            vision_download(name, root)
    except Exception as e:  # no network, a mirror down, a full disk
        raise CannotGet(f"torchvision's download failed ({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None


def get(name: str, data_dir: Path) -> tuple[bool, str]:
    """Get ``name`` if absent; (present now, one line saying where, or what failed and what to do)."""
    ok, where = status(name, data_dir)
    if ok:
        return True, f"{name}: present: {where}"
    tried = []
    ways = ([("Debian package", _apt_install)] if name == "fashion-mnist" else []) + \
        [("torchvision download", lambda: _download(name, data_dir))]
    for label, way in ways:
        try:
            way()
        except CannotGet as e:
            tried.append(f"{label}: {e}")
            continue
        ok, where = status(name, data_dir)
        if ok:
            hint = f"; give fastmi run --data-dir {data_dir}" if label != "Debian package" else ""
            return True, f"{name}: got it ({label}): {where}{hint}"
        tried.append(f"{label}: ran, but the files are still not found ({where})")
    return False, (f"{name}: cannot get it here ({'; '.join(tried)}); "
                   f"{BY_HAND[name].format(dir=data_dir)}, then pass --data-dir {data_dir}")


@dataclasses.dataclass
class Need:
    """One dataset an experiment reads: its name ('auto' = MNIST, else Fashion-MNIST) and splits."""
    name: str
    splits: tuple = ("train", "test")


def needs(experiment: str, quick: bool) -> list:
    """The datasets ``experiment`` reads with its paper settings (or its --quick preset)."""
    from ..experiments import get_experiment, runner

    module = get_experiment(experiment)
    if not hasattr(module, "dataset_names"):
        return []
    cfg = runner.make_config(module, quick, [])
    return [Need(e) if isinstance(e, str) else Need(e[0], tuple(e[1])) for e in module.dataset_names(cfg)]


def _present_line(need: Need, data_dir) -> str:
    if need.name == "auto":
        for name in ("mnist", "fashion-mnist"):
            ok, _ = status(name, data_dir)
            if ok:
                return f"auto = {name} (present)"
        return "auto = mnist|fashion-mnist (missing)"
    ok, _ = status(need.name, data_dir)
    return f"{need.name} ({'present' if ok else 'missing'})"


def list_needs(data_dir) -> int:
    """Print, per experiment, the datasets of its paper settings and its --quick run, and per dataset
    whether it is present."""
    from ..experiments import EXPERIMENTS

    print(f"datasets looked for in --data-dir {data_dir} and the system packages' folders\n")
    print(f"{'experiment':<18}{'paper settings':<42}--quick")
    for exp in EXPERIMENTS:
        cells = []
        for quick in (False, True):
            ns = needs(exp, quick)
            cells.append(", ".join(_present_line(n, data_dir) for n in ns) if ns else "none (generated data)")
        print(f"{exp:<18}{cells[0]:<42}{cells[1]}")
    print()
    for name in DATASETS:
        ok, where = status(name, data_dir)
        print(f"{name:<14}{'present: ' + where if ok else 'missing: fastmi data ' + name}")
    return 0


def _targets(names: list) -> list:
    """Datasets to get for ``names`` (datasets, or experiments: their --quick run's), in order."""
    from ..experiments import EXPERIMENTS

    out = []
    for n in names:
        if n in DATASETS:
            out.append(n)
        elif n in EXPERIMENTS:
            out += [need.name for need in needs(n, True)]
        else:
            raise ValueError(f"unknown dataset or experiment {n!r}; datasets: {', '.join(DATASETS)}; "
                             "experiments: fastmi run --list")
    return list(dict.fromkeys(out))


def get_all(names: list, data_dir: Path) -> int:
    ok_all = True
    for name in _targets(names):
        if name == "auto":  # MNIST if it can be had, else Fashion-MNIST (as the experiments choose)
            ok, line = get("mnist", data_dir)
            if not ok:
                ok2, line2 = get("fashion-mnist", data_dir)
                line = f"{line2} (auto takes it when MNIST is absent; {line})" if ok2 else f"{line}\n{line2}"
                ok = ok2
        else:
            ok, line = get(name, data_dir)
        print(line, file=sys.stdout if ok else sys.stderr)
        ok_all &= ok
    return 0 if ok_all else EXIT_MISSING


def main(argv=None) -> int:
    from ..experiments.command import OneLineParser

    p = OneLineParser(prog="fastmi data", description="what each experiment needs, what is present, and "
                      "getting what can be got (Fashion-MNIST from Debian's package, the rest through torchvision)")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"a dataset ({', '.join(DATASETS)}) or an experiment "
                   "(the datasets of its --quick run)")
    p.add_argument("--list", action="store_true", help="each experiment's datasets and whether present (the default)")
    p.add_argument("--data-dir", default="data", help="where downloads go and datasets are looked for (default ./data)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    data_dir = Path(args.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        p.exit(EXIT_USAGE, f"fastmi data: error: --data-dir {data_dir} is a file, not a folder\n")
    if args.list or not args.names:
        if args.names:
            p.error("give either --list or dataset names")
        return list_needs(data_dir)
    try:
        return get_all(args.names, data_dir)
    except ValueError as e:
        p.exit(EXIT_USAGE, f"fastmi data: error: {e}\n")


if __name__ == "__main__":
    raise SystemExit(main())
