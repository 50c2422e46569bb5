"""How a dataset folder is laid out, and what its folder names mean.

A dataset is a folder in one of the layouts people download:

- class folders: ``root/<class>/*.png`` (one subfolder per class; the folder name is the label);
- pre-split (Kaggle style): ``root/{train,val,test}/<class>/*``, where the subset folders may be spelled
  as in `SUBSET_ALIASES` (``training``, ``valid``, ``holdout``, ...).

Folder names are matched to the paper's classes case- and punctuation-insensitively, so ``NORMAL``,
``No Finding`` and ``normal`` all become ``Normal``. Other folder names are kept as they are. Hidden
entries (a leading ``.`` or ``__``) are never part of a dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from core import PAPER_CLASSES

SUBSET_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "holdout": "test",
}
"""Folder names (lower-cased) that mean a subset of a pre-split dataset; every value is one of
`core.data.split.SUBSETS`."""

CLASS_ALIASES = {
    "normal": "Normal", "no finding": "Normal", "nofinding": "Normal", "healthy": "Normal",
    "pneumonia": "Pneumonia",
    "cardiomegaly": "Cardiomegaly",
    "pneumothorax": "Pneumothorax",
}
"""Folder names that mean one of the paper's classes, after `_normalise_name` (lower case, single spaces)."""


def _normalise_name(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def canonical_class_name(folder_name: str) -> str:
    """The class a folder name stands for: 'NORMAL' and 'No Finding' -> 'Normal'; unknown names unchanged."""
    return CLASS_ALIASES.get(_normalise_name(folder_name), folder_name)


def order_classes(class_names: Iterable[str]) -> list[str]:
    """The paper's classes first, in the paper's order, then any others alphabetically."""
    names = set(class_names)
    known = [name for name in PAPER_CLASSES if name in names]
    return known + sorted(names - set(known))


def is_hidden(name: str) -> bool:
    """True for a file or folder name that is never part of a dataset (".git", "__MACOSX", ".DS_Store")."""
    return name.startswith(".") or name.startswith("__")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def detect_layout(root: Path) -> tuple[str, dict[str | None, list[Path]]]:
    """Return ("class_folders" | "presplit", {subset or None: [class folders]}).

    A folder is pre-split when it has a training subset folder and every subset folder it has holds
    class folders; otherwise each of its subfolders is a class.
    """
    subdirs = _class_dirs(root)
    subset_dirs = {SUBSET_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SUBSET_ALIASES}
    if subset_dirs and "train" in subset_dirs and all(_class_dirs(d) for d in subset_dirs.values()):
        return "presplit", {subset: _class_dirs(d) for subset, d in subset_dirs.items()}
    return "class_folders", {None: subdirs}
