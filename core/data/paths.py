"""Path confinement: the only place that decides whether a path may be read as data.

`confine_to_roots` is the one check. A folder typed into the app must resolve (following symbolic links)
inside one of the allowed data roots (core.settings.allowed_data_roots), so a browser user cannot point
Paru at `..`, `/etc` or a link that leads out of them; a film path read from a run's files (relative to
the run's dataset folder) must stay inside that folder or a data root (`film_under_root`); every file of a
scanned dataset likewise (`core.data.listing`).
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
    try:
        resolved = Path(path).expanduser().resolve()
    except OSError as error:  # ENAMETOOLONG and the like: a typed name no file system holds
        raise ValueError(f"{_shortened(path)} cannot be a folder here ({error.strerror or error}); the system "
                         "allows at most 255 characters in one folder name. Check the path.") from None
    except RuntimeError:  # a symbolic-link loop (Python 3.11)
        raise ValueError(f"{path} is a loop of symbolic links; point to the dataset folder itself.") from None
    if is_inside(resolved, resolved_roots):
        return resolved
    raise ValueError(
        f"{path} is outside the data folders this app may read ({', '.join(map(str, resolved_roots))}). "
        "Move the dataset under one of them, or link it there (a symbolic link is followed, so the real "
        "folder must be under one of them too), or start the app with PARU_DATA_ROOT set to its parent. "
        f"PARU_DATA_ROOT replaces the default data folder; to keep it, list both joined by {os.pathsep!r}."
    )


def is_inside(resolved: Path, resolved_roots: Iterable[Path]) -> bool:
    """True when the resolved path is one of the resolved roots or lies under one of them."""
    return any(resolved == root or resolved.is_relative_to(root) for root in resolved_roots)


def _shortened(path) -> str:
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "…" + text[-59:]


def confined_data_folder(folder: str | os.PathLike) -> Path:
    """A folder typed in the app, resolved and confined to the allowed data roots (ValueError otherwise)."""
    return confine_to_roots(folder, allowed_data_roots())


def film_under_root(root: str | os.PathLike, relative: str) -> Path | None:
    """root / relative, resolved, when it stays inside `root` or the data roots and is a file; None otherwise.

    For film paths read from a run's files (predictions.csv, split.csv): a path such as "../../etc/passwd"
    or one through a symbolic link that leads out of the dataset folder and every data root is treated as
    missing, never read. A link into a data root is followed, so the films of a run trained on a `core
    split` layout (symbolic links to the dataset under the data root) are found.
    """
    try:
        path = confine_to_roots(Path(root) / relative, [root, *allowed_data_roots()])
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symbolic-link loop (Python 3.11).
        return None
    return path if path.is_file() else None


def dataset_folders(root: Path) -> list[str]:
    """Subfolders of the data root (not hidden), as path strings."""
    if not root.is_dir():
        return []
    return sorted(str(path) for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
