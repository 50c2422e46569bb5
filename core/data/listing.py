"""Which files of a dataset folder are candidate films, and why each other entry is left out.

Nothing is dropped unlisted: every entry of the dataset that is not used is returned in `skipped` with the
reason (a folder beside train/, val/ and test/, a film in the dataset folder itself outside any class
folder, a file of an unsupported type, a named pipe or device, a broken link, a link whose real path lies
outside the dataset folder and every data root). Hidden entries and the known non-film files
(`IGNORED_FILE_NAMES`) are the only ones passed over in silence. Files are not opened here.

Every file's real path (symbolic links followed) must lie inside the dataset folder or one of the data
roots (core.settings.allowed_data_roots), so a link planted in a dataset cannot make Paru read `/etc`,
while a `core split` layout (links into the dataset under a data root) keeps working.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.data.layout import SUBSET_ALIASES, canonical_class_name, detect_layout, is_hidden
from core.data.paths import is_inside
from core.imaging import loader
from core.settings import allowed_data_roots

IGNORED_FILE_NAMES = {"labels.csv", "thumbs.db", "desktop.ini", "readme.md", "readme.txt", "license"}
"""Lower-cased names of files that sit in dataset folders without being films; they are not listed."""


def check_dataset_root(root: str | os.PathLike) -> Path:
    """The dataset folder, resolved; ValueError with a next step when it is missing, a file or unusable."""
    root = Path(root).expanduser()
    try:
        if root.is_dir():
            return root.resolve()
        exists = root.exists()
    except OSError as error:  # ENAMETOOLONG, ELOOP...: no folder can have this name
        shown = str(root) if len(str(root)) <= 120 else str(root)[:60] + "…" + str(root)[-59:]
        raise ValueError(f"Dataset folder {shown} cannot be opened ({error.strerror or error}); a folder name "
                         "has at most 255 characters. Check the path.") from None
    if exists:
        raise ValueError(f"{root} is a file, not a folder. Choose the folder that holds the class folders.")
    raise ValueError(
        f"Dataset folder {root} does not exist. Choose a folder with one subfolder per class "
        "(for example Normal/, Pneumonia/), or with train/, val/ and test/ folders of class folders."
    )


def list_candidate_files(
    root: str | os.PathLike, roots: list[Path] | None = None
) -> tuple[str, list[tuple[Path, str, str | None]], list[dict]]:
    """Find every file of a dataset with its class and given subset, without reading it.

    Args:
        root: the dataset folder.
        roots: folders the real path of a file may lie in besides the dataset folder (default: the data
            roots, core.settings.allowed_data_roots).

    Returns:
        (layout, [(path, canonical class, given subset or None)], skipped [{"path", "reason"}]).

    Raises:
        ValueError: the folder is missing, has no class folders, or its class folders are empty.
    """
    root = check_dataset_root(root)
    confined = [root, *(Path(r).expanduser().resolve() for r in (allowed_data_roots() if roots is None else roots))]
    try:
        layout, folders = detect_layout(root)
        skipped = _stray_entries(root, layout, folders)
    except OSError as error:
        raise ValueError(f"The dataset folder {root} could not be listed ({error.strerror or error}). Check its "
                         "permissions.") from None
    candidates = []
    for subset, class_dirs in folders.items():
        for class_dir in class_dirs:
            reason = _outside_reason(class_dir, confined)
            if reason:
                skipped.append({"path": _relative(class_dir, root) + "/", "reason": f"{reason}; none of its files were used"})
                continue
            label = canonical_class_name(class_dir.name)
            try:
                paths = sorted(class_dir.rglob("*"))
            except OSError as error:
                skipped.append({"path": _relative(class_dir, root) + "/",
                                "reason": f"the folder could not be listed ({error.strerror or error})"})
                continue
            for path in paths:
                if any(is_hidden(part) for part in path.relative_to(root).parts):
                    continue
                reason = _file_reason(path, confined)
                if reason == "":
                    continue
                if reason:
                    skipped.append({"path": _relative(path, root), "reason": reason})
                    continue
                candidates.append((path, label, subset))
    if not candidates and not skipped:
        if not any(folders.values()):
            raise ValueError(
                f"{root} has no class folders. Put each class's films in a subfolder named after the "
                "class (for example Normal/ and Pneumonia/)."
            )
        raise ValueError(f"The class folders in {root} are empty. Add films (PNG, JPEG or DICOM) to them.")
    return layout, candidates, skipped


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _outside_reason(path: Path, confined: list[Path]) -> str | None:
    """Why `path` may not be read because of where it really is, or None when its real path is confined."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return "a symbolic link that cannot be followed (a loop or an over-long path)"
    if is_inside(real, confined):
        return None
    return (f"a symbolic link to {real}, outside the dataset folder and the data folders "
            f"({', '.join(map(str, confined))}); it was not read. Move the films under a data folder, or add "
            "their folder to PARU_DATA_ROOT")


def _file_reason(path: Path, confined: list[Path]) -> str | None:
    """None for a candidate film; "" for an entry passed over in silence; else why the file is skipped."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link (its target does not exist)" if path.is_symlink() else ""
    except OSError as error:
        return f"could not be examined ({error.strerror or error})"
    if stat.S_ISDIR(mode):
        return _outside_reason(path, confined) if path.is_symlink() else ""
    if path.name.lower() in IGNORED_FILE_NAMES:
        return ""
    if not stat.S_ISREG(mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return f"{kind}, not a film file; it was not opened"
    reason = _outside_reason(path, confined)
    if reason:
        return reason
    suffix = path.suffix.lower()
    if suffix and suffix not in loader.SUPPORTED_EXTENSIONS:
        return f"unsupported file type '{suffix}' (Paru reads {', '.join(sorted(loader.SUPPORTED_EXTENSIONS))})"
    return None


def _stray_entries(root: Path, layout: str, folders: dict) -> list[dict]:
    """Entries the layout leaves without a class: files in the dataset folder itself (and, pre-split, in a
    subset folder outside its class folders) and folders beside train/, val/ and test/."""
    skipped = []
    used_dirs = {path for class_dirs in folders.values() for path in class_dirs}
    places = [root]
    if layout == "presplit":
        places += [path for path in root.iterdir() if path.is_dir() and path.name.lower() in SUBSET_ALIASES]
    for place in places:
        for entry in sorted(place.iterdir()):
            if is_hidden(entry.name) or entry.name.lower() in IGNORED_FILE_NAMES or entry in used_dirs:
                continue
            where = "the dataset folder itself" if place == root else f"{place.name}/ itself"
            if entry.is_dir():
                if place == root and entry.name.lower() not in SUBSET_ALIASES:
                    skipped.append({"path": _relative(entry, root) + "/", "reason": (
                        "a folder beside the train/, val/ and test/ folders of a pre-split dataset; its films were "
                        "not used. Move it into train/ (and val/, test/) as a class folder, or remove it")})
            elif entry.suffix.lower() in loader.SUPPORTED_EXTENSIONS or not entry.suffix:
                skipped.append({"path": _relative(entry, root), "reason": (
                    f"a file in {where}, outside any class folder, so its class is unknown; it was not used. "
                    "Move it into the folder of its class")})
    return skipped
