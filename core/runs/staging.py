"""Staging folders of trainings that ended without a run, and whether a training's process still runs.

A training writes its run in a hidden staging folder (`.<run_id>.partial`, core.runs.registry.staging_dir_for)
and renames it into place only when it has finished. A failed, cancelled or killed training leaves the folder
behind, with its status.json (state, error, traceback) and whatever it had written, which can be large (a
model, checkpoints, the decoded-film cache). `clean_staging`, run by the next training while it holds the
training lock, frees that space at once and removes the folder after a grace period, logging each step.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from core.runs.artifacts import STATUS_FILE_NAME, read_status

NEW_FOLDER_GRACE_SECONDS = 30.0
"""A staging folder younger than this without a status.json belongs to a training still starting."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return status != "Z"
    except OSError:
        return True


def holder_pid(holder: dict) -> int:
    pid = holder.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else 0



STAGING_GRACE_SECONDS = 7 * 24 * 3600.0
"""How long the status.json (state, error, traceback) of a training that ended without a run is kept."""


def clean_staging(models_dir: str | os.PathLike, grace_seconds: float = STAGING_GRACE_SECONDS,
                  log=print, keep: Path | None = None) -> list[str]:
    """Clean the staging folders (`.<run_id>.partial`) of trainings that ended without a run.

    A folder whose status.json says "running" with a live process, and `keep`, are left alone. Every other
    one loses all its files but status.json at once (so the space a failed training took, for example on a
    full disk, is back for the next one), and is removed whole once its status is older than
    `grace_seconds`. Returns (and logs) one line per folder cleaned.
    """
    models_dir = Path(models_dir)
    cleaned = []
    try:
        folders = [path for path in models_dir.iterdir()
                   if path.is_dir() and path.name.startswith(".") and path.name.endswith(".partial")]
    except OSError:
        return []
    for folder in sorted(folders):
        status = read_status(folder)
        pid = holder_pid(status)
        if (keep is not None and folder.resolve() == Path(keep).resolve()) \
                or (status.get("state", "running") == "running" and pid and pid_alive(pid)):
            continue
        status_file = folder / STATUS_FILE_NAME
        try:
            age = time.time() - (status_file if status_file.exists() else folder).stat().st_mtime
        except OSError:
            continue
        if not status and age < NEW_FOLDER_GRACE_SECONDS:
            continue  # Just created by a training that has not written its status yet.
        freed = _folder_bytes(folder) - (status_file.stat().st_size if status_file.exists() else 0)
        state = status.get("state", "unknown")
        if age >= grace_seconds:
            shutil.rmtree(folder, ignore_errors=True)
            line = f"Removed the staging folder {folder.name} of a {state} training ({freed / 1e6:.1f} MB)."
        elif freed > 0:
            for item in folder.iterdir():
                if item.name != STATUS_FILE_NAME:
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
            line = (f"Freed {freed / 1e6:.1f} MB in the staging folder {folder.name} of a {state} training "
                    "(its status.json is kept for a while).")
        else:
            continue
        cleaned.append(line)
        log(line)
    return cleaned


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total
