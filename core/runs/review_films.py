"""Review films: downsized copies of a run's misclassified test films, and a few correct ones for contrast,
kept in the run folder's review_films/ at the paths split.csv and predictions.csv give them, so the Review
page, its Grad-CAM and its tags work on a machine without the dataset (a shipped run carries them).

`manifest.json` beside them lists each film (path, label, predicted, kind "misclassified" or "correct",
format, size in pixels and bytes), the dataset's name, its attribution and the longest side. A film is
looked up in the run's dataset folder first and in review_films/ only when the dataset is not there
(`run_film`); the run's other films are only ever read from the dataset folder.

The copies keep their dataset's terms, so only films whose terms allow copying are packed into a run that
is shared; `ATTRIBUTIONS` holds the credit line of the datasets Paru ships films of.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image

from core.data.paths import film_under_root
from core.imaging.loader import ImageLoadError, read_film
from core.runs.artifacts import (
    PREDICTIONS_FILE_NAME,
    REVIEW_FILMS_DIR_NAME,
    REVIEW_FILMS_MANIFEST_FILE_NAME,
    misclassified_test_rows,
    now_iso,
    read_data_report,
    read_json,
    read_predictions_csv,
    run_dataset_root,
    write_json_atomic,
)
from core.runs.registry import Run, is_shipped_run, load_run

DEFAULT_MAX_SIDE = 384
"""Longest side of a packed film: sharp in a page column (the app shows films 300-500 px wide), about a
tenth of the bytes of a full-size film."""
DEFAULT_CORRECT = 4
JPEG_QUALITY = 90

_NIH = ("NIH ChestX-ray14, courtesy of the NIH Clinical Center (no restriction on use); Wang et al., "
        "ChestX-ray8, IEEE CVPR 2017. Not for clinical use.")
ATTRIBUTIONS = {
    "nih-cxr4": _NIH,
    "samples": _NIH,
    "pediatric-pneumonia": ("Guangzhou Women and Children's Medical Center paediatric films; Kermany et al., "
                            "Cell 172(5), 2018, CC BY 4.0. Not for clinical use."),
}
"""Credit line per dataset name (data_report.json "root"), written into the manifest and shown beside each
film."""


def review_films_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / REVIEW_FILMS_DIR_NAME


def read_review_manifest(run_dir: str | os.PathLike) -> dict | None:
    """review_films/manifest.json of a run, or None when the run carries no review films."""
    manifest = read_json(review_films_dir(run_dir) / REVIEW_FILMS_MANIFEST_FILE_NAME)
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("films"), list) else None


def run_film(run_dir: str | os.PathLike, dataset_root: str | os.PathLike | None, relative: str) -> Path | None:
    """The film at `relative` (a path of predictions.csv): in the dataset folder when it is there, else the
    run's packed copy, else None. Both lookups are confined (core.data.paths.film_under_root)."""
    if dataset_root is not None:
        path = film_under_root(dataset_root, relative)
        if path is not None:
            return path
    packed = review_films_dir(run_dir)
    return film_under_root(packed, relative) if packed.is_dir() else None


def choose_review_rows(rows: list[dict], correct: int = DEFAULT_CORRECT) -> list[dict]:
    """Every misclassified test row (most confident first), then `correct` correctly classified test rows:
    the most confident right answer of each class in turn, so the contrast covers the classes."""
    wrong = misclassified_test_rows(rows)
    right = sorted((row for row in rows if row.get("subset") == "test" and row["label"] == row["predicted"]),
                   key=lambda row: -float(row["confidence"]))
    by_class: dict[str, list[dict]] = {}
    for row in right:
        by_class.setdefault(row["label"], []).append(row)
    picked: list[dict] = []
    while len(picked) < correct and any(by_class.values()):
        for queue in by_class.values():
            if queue and len(picked) < correct:
                picked.append(queue.pop(0))
    return [*({**row, "kind": "misclassified"} for row in wrong), *({**row, "kind": "correct"} for row in picked)]


def pack_review_films(run, data_root: str | os.PathLike | None = None, max_side: int = DEFAULT_MAX_SIDE,
                      correct: int = DEFAULT_CORRECT) -> dict:
    """Write <run>/review_films/: the misclassified test films and `correct` correct ones, downsized.

    Each film is decoded by the one loader (core.imaging.loader.read_film, longest side at most `max_side`)
    and saved at its predictions.csv path: JPEG (quality JPEG_QUALITY) when the original is a JPEG, else
    PNG, whatever its extension says (the loader reads the format from the bytes). The folder is written
    beside the run and renamed into place, replacing an earlier one.

    Args:
        run: a core.runs.registry.Run or a run folder; never a shipped run (its files stay as git has them).
        data_root: where the run's dataset is now (None: where the run records it).
        max_side: longest side of a packed film in pixels (at least 64).
        correct: how many correctly classified test films to add (0 for none).

    Returns:
        The manifest written to review_films/manifest.json: {"packed", "run_id", "dataset", "attribution",
        "max_side", "films": [{"path", "label", "predicted", "kind", "format", "width", "height", "bytes"}],
        "missing": [paths not found or not readable], "total_bytes"}.

    Raises:
        ValueError: a shipped run, the dataset is not on this machine, no test predictions, a bad argument.
    """
    run = run if isinstance(run, Run) else load_run(run)
    if is_shipped_run(run.path):
        raise ValueError(f"{run.path} is a run shipped with Paru; its files stay as git has them. Pack a copy "
                         "of it, or the run before it is shipped.")
    if int(max_side) < 64 or int(correct) < 0:
        raise ValueError(f"Got max_side={max_side}, correct={correct}; expected max_side >= 64 (e.g. "
                         f"{DEFAULT_MAX_SIDE}) and correct >= 0 (e.g. {DEFAULT_CORRECT}).")
    root = run_dataset_root(run.path, data_root)
    predictions = run.path / PREDICTIONS_FILE_NAME
    rows = read_predictions_csv(predictions, run.classes) if predictions.is_file() else []
    if not any(row.get("subset") == "test" for row in rows):
        raise ValueError(f"{predictions} lists no test films; evaluate the run first.")
    target = review_films_dir(run.path)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    films, missing = [], []
    try:
        for row in choose_review_rows(rows, int(correct)):
            written = _pack_one(root, row["file"], staging, int(max_side))
            if written is None:
                missing.append(row["file"])
            else:
                films.append({"path": row["file"], "label": row["label"], "predicted": row["predicted"],
                              "kind": row["kind"], **written})
        dataset = str((read_data_report(run.path) or {}).get("root") or root.name)
        manifest = {"packed": now_iso(), "run_id": run.run_id, "dataset": dataset,
                    "attribution": ATTRIBUTIONS.get(Path(dataset).name), "max_side": int(max_side),
                    "films": films, "missing": missing, "total_bytes": sum(film["bytes"] for film in films)}
        staging.mkdir(parents=True, exist_ok=True)
        write_json_atomic(staging / REVIEW_FILMS_MANIFEST_FILE_NAME, manifest)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _pack_one(root: Path, relative: str, staging: Path, max_side: int) -> dict | None:
    """Downsize one film into staging/<relative>; its format and size, or None when it cannot be read."""
    source = film_under_root(root, relative)
    if source is None:
        return None
    try:
        film = read_film(source, max_side=max_side)
    except ImageLoadError:
        return None
    is_jpeg = film.meta.get("format") == "JPEG"
    target = staging / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(film.gray)
    if is_jpeg:
        image.save(target, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(target, format="PNG", optimize=True)
    return {"format": "JPEG" if is_jpeg else "PNG", "width": image.width, "height": image.height,
            "bytes": target.stat().st_size}
