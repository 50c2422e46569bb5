"""Lay a split out as folders: out_dir/{train,val,test}/<class>/<file>, as the paper organised its data.

The result is a pre-split dataset that `core.data.scan.scan_dataset` reads back with the same subsets.
Files are symbolic links (no extra disk) or copies; existing files are left untouched, so a layout can be
completed after an interruption.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from core.data.scan import DatasetScan
from core.runs.artifacts import SPLIT_FILE_NAME, read_split_csv, run_dataset_root

MODES = ("link", "copy")
"""How films are placed: "link" (symbolic links) or "copy"."""


def materialise_split(
    scan: DatasetScan, subsets: np.ndarray, out_dir: str | os.PathLike, mode: str = "link"
) -> Path:
    """Lay the split out as out_dir/{train,val,test}/<class>/<file>, as the paper did.

    `mode` is "link" (symbolic links, no extra disk) or "copy". Existing files are left untouched.
    """
    _check_mode(mode)
    out_dir = Path(out_dir)
    for record, subset in zip(scan.records, subsets):
        _place(scan.root / record.path, out_dir, subset, record.label, record.path, mode)
    return out_dir


def materialise_run_split(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    mode: str = "link",
    data_dir: str | os.PathLike | None = None,
) -> dict:
    """Lay out the exact split a run was trained with (its split.csv) as out_dir/{train,val,test}/<class>/.

    The films are taken from the run's dataset folder (data_report.json), or from `data_dir` when the
    dataset has moved. The result is a pre-split dataset that `scan_dataset` reads back with the same
    subsets. Films missing from the dataset folder are listed, not fatal; existing files are left untouched.

    Returns:
        {"out_dir", "counts": {subset: {class: n}}, "missing": [relative paths]}.

    Raises:
        ValueError: the run has no split.csv, or no dataset folder is known or it does not exist.
    """
    _check_mode(mode)
    root = run_dataset_root(run_dir, data_dir)
    return materialise_rows(read_split_csv(Path(run_dir) / SPLIT_FILE_NAME), root, out_dir, mode)


def materialise_rows(
    rows: list[dict], root: str | os.PathLike, out_dir: str | os.PathLike, mode: str = "link"
) -> dict:
    """Lay out split rows ({"path", "label", "subset"}; paths relative to `root`) as out_dir/<subset>/<label>/.

    Returns:
        {"out_dir", "counts": {subset: {class: n}}, "missing": [relative paths not found under root]}.
    """
    _check_mode(mode)
    root, out_dir = Path(root), Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    missing = []
    for row in rows:
        source = root / row["path"]
        if not source.is_file():
            missing.append(row["path"])
            continue
        _place(source, out_dir, row["subset"], row["label"], row["path"], mode)
        by_class = counts.setdefault(row["subset"], {})
        by_class[row["label"]] = by_class.get(row["label"], 0) + 1
    return {"out_dir": str(out_dir), "counts": counts, "missing": missing}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"Got mode={mode!r}; must be {' or '.join(map(repr, MODES))}.")


def _place(source: Path, out_dir: Path, subset: str, label: str, rel_path: str, mode: str) -> None:
    """Link or copy one film to out_dir/<subset>/<label>/<rel_path with "/" as "__"> (flat, no clashes)."""
    target = out_dir / subset / label / rel_path.replace("/", "__")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        return
    if mode == "link":
        target.symlink_to(source.resolve())
    else:
        shutil.copy2(source, target)
