"""Path confinement: the only place that decides whether a path may be read as data.

`confine_to_roots` is the one check. A folder typed into the app must resolve (following symbolic links)
inside one of the allowed data roots (core.settings.allowed_data_roots), so a browser user cannot point
Paru at `..`, `/etc` or a link that leads out of them; a film path read from a run's files (relative to
the run's dataset folder) must stay inside that folder (`film_under_root`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from core.settings import allowed_data_roots


def confine_to_roots(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path:
    """Resolve `path` (following symlinks) and insist that it lies inside one of `roots`.

    Used for folders typed into the app, so a browser user cannot point Paru at `..`, `/etc` or a symlink
    that leads out of the configured data folders.

    Raises:
        ValueError: the folder is outside every root; the message names the roots and how to add one.
    """
    resolved_roots = [Path(root).expanduser().resolve() for root in roots]
    resolved = Path(path).expanduser().resolve()
    if any(resolved == root or resolved.is_relative_to(root) for root in resolved_roots):
        return resolved
    raise ValueError(
        f"{path} is outside the data folders this app may read ({', '.join(map(str, resolved_roots))}). "
        "Move or link the dataset under one of them, or start the app with PARU_DATA_ROOT set to its parent."
    )


def confined_data_folder(folder: str | os.PathLike) -> Path:
    """A folder typed in the app, resolved and confined to the allowed data roots (ValueError otherwise)."""
    return confine_to_roots(folder, allowed_data_roots())


def film_under_root(root: str | os.PathLike, relative: str) -> Path | None:
    """root / relative, resolved, when it stays inside `root` and is a file; None otherwise.

    For film paths read from a run's files (predictions.csv, split.csv): a path such as "../../etc/passwd"
    or one through a symbolic link that leads out of the dataset folder is treated as missing, never read.
    """
    try:
        path = confine_to_roots(Path(root) / relative, [root])
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symbolic-link loop (Python 3.11).
        return None
    return path if path.is_file() else None


def dataset_folders(root: Path) -> list[str]:
    """Subfolders of the data root (not hidden), as path strings."""
    if not root.is_dir():
        return []
    return sorted(str(path) for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
