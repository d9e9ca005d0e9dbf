"""Where a dataset will be read from, decided before a run starts (nothing is read), and a log of
what the loaders actually read: both go into a run folder's config.json / results.json.

    locate("auto", data_dir)  -> {"dataset": "fashion-mnist", "path": "/usr/share/datasets/fashion-mnist",
                                  "how": "auto: MNIST idx files not found ...; found in a system package's folder"}
"""
from __future__ import annotations

from pathlib import Path

from .cifar_stl import CIFAR_FILES, CIFAR_FOLDERS, STL10_FOLDER
from .errors import DatasetNotFoundError
from .idx import find_idx_folder, folder_identity

_READS: list[dict] = []


def record_read(dataset: str, split: str, path) -> None:
    """Called by the loaders: ``split`` of ``dataset`` was read from ``path``."""
    entry = {"dataset": dataset, "split": split, "path": str(Path(path).resolve())}
    if entry not in _READS:
        _READS.append(entry)


def reads() -> list[dict]:
    """Every (dataset, split, path) read since the last ``clear_reads``."""
    return list(_READS)


def clear_reads() -> None:
    _READS.clear()


def _missing_files(name: str, root: Path, splits) -> list[str]:
    if name in CIFAR_FOLDERS:
        folder = root / CIFAR_FOLDERS[name]
        return [str(folder / f) for s in splits for f in CIFAR_FILES[name][s] if not (folder / f).is_file()]
    folder = root / STL10_FOLDER
    files = [f"{s}_X.bin" for s in splits] + [f"{s}_y.bin" for s in splits if s != "unlabeled"]
    return [str(folder / f) for f in files if not (folder / f).is_file()]


def locate(name: str, data_dir=None, download: bool = False, splits=("train", "test")) -> dict:
    """{dataset, path, how} of ``name`` ("auto": MNIST if found, else Fashion-MNIST); raises
    DatasetNotFoundError (saying how to get it) when the files are not there."""
    if name == "auto":
        from .vision import mnist_or_fashion

        chosen, note = mnist_or_fashion(data_dir)
        found = locate(chosen, data_dir, download, splits)
        return {**found, "how": f"auto: {note or 'MNIST idx files found'}; {found['how']}"}
    if name in ("mnist", "fashion-mnist"):
        found = find_idx_folder(name, data_dir)
        folder = found.resolve()
        given = data_dir is not None and Path(data_dir).resolve() in (folder, *folder.parents)
        how = "idx files in --data-dir" if given else "idx files in a system package's folder"
        return {"dataset": name, "path": str(folder), "how": f"{how}; identified as {name} from the "
                f"{folder_identity(found)[1]}"}
    if name not in CIFAR_FOLDERS and name != "stl10":
        raise ValueError(f"unknown dataset {name!r}")
    sub = CIFAR_FOLDERS.get(name, STL10_FOLDER)
    if data_dir is None:
        raise DatasetNotFoundError(f"{name}: give --data-dir DIR (the folder holding {sub}/), or add --download "
                                   f"to fetch it there (or first: fastmi data {name} --data-dir DIR)")
    root = Path(data_dir).resolve()
    if download:
        return {"dataset": name, "path": str(root / sub), "how": "--download: torchvision fetches it if absent"}
    missing = _missing_files(name, root, splits)
    if missing:
        raise DatasetNotFoundError(f"{name}: {len(missing)} file(s) not found, e.g. {missing[0]}. Put the dataset's "
                                   f"files in {root / sub} (as distributed by its authors or downloaded by "
                                   f"torchvision), or add --download (needs torchvision), or run: fastmi data {name} "
                                   f"--data-dir {data_dir}")
    return {"dataset": name, "path": str(root / sub), "how": "files in --data-dir"}
