"""Where Grad-CAM puts its mass: for a bounded set of a run's test films, how much of each film's Grad-CAM
lies in the central lung fields and how much on the border and corners, where labels, side markers and
devices sit. The analysis is cached in <run>/cam_regions.json and summarised in the run's model card; for a
shipped run, whose tracked files stay as they are in git, it is cached in the user data dir instead
(core.runs.registry.added_file_path) and the card is left as shipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.data.scan import decode_in_chunks
from core.explain.gradcam import cached_grad_cam
from core.explain.overlay import clean_cam
from core.model import load_model
from core.runs.artifacts import (
    CAM_REGIONS_FILE_NAME,
    PREDICTIONS_FILE_NAME,
    misclassified_test_rows,
    now_iso,
    read_json,
    read_predictions_csv,
    write_json_atomic,
)
from core.runs.card import refresh_model_card_quietly
from core.runs.registry import Run, added_file_path, load_run
from core.runs.review_films import run_film

CAM_MAX_FILMS = 60
"""At most this many test films are explained: all of them when the test set is this small, else the
misclassified ones (up to half) and as many correct ones drawn at random."""
CAM_BORDER_FRACTION = 0.15
CAM_FLAG_SHARE = 0.70
"""A film is flagged when more than this share of its CAM mass lies in the border band (which covers 51%
of the image with CAM_BORDER_FRACTION 0.15, so a uniform map gives 0.51)."""


def cam_regions(cam: np.ndarray, border_fraction: float = CAM_BORDER_FRACTION) -> dict:
    """Share of a CAM's mass in the central box, in the border band and in the four corners.

    Definition: for a CAM of height H and width W, the border band is every pixel within
    round(border_fraction * H) rows of the top or bottom edge or within round(border_fraction * W)
    columns of the left or right edge (at least one row and column each). The central box is the rest:
    the lung field of a well-framed film. The corners are the four corner boxes where the top/bottom rows
    and the left/right columns of the band cross; they are part of the band. Each share is the region's
    sum of CAM values divided by the CAM's total sum, so

        central + border == 1 and 0 <= corners <= border

    (all three are 0 for an all-zero CAM). For reference, a uniform CAM with border_fraction 0.15 gives
    central 0.49, border 0.51 and corners 0.09, the regions' shares of the area. A border or corner share
    far above those values means the model attends to the edges of the film, where labels, markers and
    collimation edges are, rather than to the lungs.

    Args:
        cam: 2-D CAM (height, width) with non-negative values (negative and non-finite values count as 0).
        border_fraction: the band's width as a fraction of each side, in (0, 0.5). Default 0.15.

    Returns:
        {"central": float, "border": float, "corners": float}.

    Raises:
        ValueError: `cam` is not 2-D, is smaller than 3 x 3, or border_fraction is outside (0, 0.5).

    Example::

        regions = cam_regions(cams[0])
        if regions["border"] > 0.7: ...   # warn: the model may be reading labels at the edges
    """
    if not 0.0 < float(border_fraction) < 0.5:
        raise ValueError(f"Got border_fraction={border_fraction}; it must be in (0, 0.5), for example 0.15.")
    cam = np.maximum(clean_cam(cam, clip_top=False), 0.0).astype(np.float64)
    height, width = cam.shape
    # At least one row and column of band, but never so wide that the central box is empty.
    band_rows = min(max(1, int(round(border_fraction * height))), (height - 1) // 2)
    band_columns = min(max(1, int(round(border_fraction * width))), (width - 1) // 2)
    if band_rows < 1 or band_columns < 1:
        raise ValueError(f"Got a CAM of shape {cam.shape}; cam_regions needs at least 3 x 3 pixels.")
    total = float(cam.sum())
    if total <= 0.0:
        return {"central": 0.0, "border": 0.0, "corners": 0.0}
    central = float(cam[band_rows:height - band_rows, band_columns:width - band_columns].sum())
    top, bottom = cam[:band_rows], cam[height - band_rows:]
    corners = float(
        top[:, :band_columns].sum() + top[:, width - band_columns:].sum()
        + bottom[:, :band_columns].sum() + bottom[:, width - band_columns:].sum()
    )
    return {
        "central": central / total,
        "border": (total - central) / total,
        "corners": corners / total,
    }


def select_cam_films(rows: list[dict], max_films: int = CAM_MAX_FILMS, seed: int = 0) -> list[dict]:
    """The test rows of predictions.csv to explain, bounded for speed.

    All test films when there are at most `max_films`; otherwise the misclassified ones (most confident
    first, at most max_films // 2) plus an equal number of correctly classified ones drawn at random with
    `seed`. Returned in predictions.csv order.
    """
    if max_films < 2:
        raise ValueError(f"Got max_films={max_films}; expected at least 2 (one wrong and one right film).")
    test = [row for row in rows if row.get("subset") == "test"]
    if len(test) <= max_films:
        return test
    wrong = misclassified_test_rows(test)[:max_films // 2]
    right = [row for row in test if row["label"] == row["predicted"]]
    # As many right answers as wrong ones, so the two means weigh the same; all right ones when none is wrong.
    count = min(len(right), len(wrong) if wrong else max_films)
    picked = np.random.default_rng(seed).choice(len(right), size=count, replace=False) if count else []
    chosen = {id(row) for row in wrong} | {id(right[i]) for i in picked}
    return [row for row in test if id(row) in chosen]


def summarise_cam_regions(films: list[dict], flag_share: float = CAM_FLAG_SHARE) -> dict:
    """Mean CAM shares for right and wrong answers, and the films whose mass is mostly on the border.

    Args:
        films: dicts with "file", "label", "predicted", "central", "border", "corners" (shares from
            cam_regions) and optionally "confidence".
        flag_share: a film is flagged when its border share is above this. Default CAM_FLAG_SHARE.

    Returns:
        {"correct": {"n", "mean_central", "mean_border", "mean_corners"}, "wrong": {...} (means are None
        for an empty group), "flagged": [films, largest border share first], "n_flagged"}.

    Example::

        summary = summarise_cam_regions(regions["films"])
        summary["wrong"]["mean_border"] > summary["correct"]["mean_border"]   # a warning sign
    """
    def group(items):
        n = len(items)
        return {"n": n, **{f"mean_{key}": (sum(float(item[key]) for item in items) / n if n else None)
                            for key in ("central", "border", "corners")}}

    flagged = sorted((film for film in films if float(film["border"]) > flag_share),
                     key=lambda film: -float(film["border"]))
    return {
        "correct": group([film for film in films if film["label"] == film["predicted"]]),
        "wrong": group([film for film in films if film["label"] != film["predicted"]]),
        "flagged": flagged,
        "n_flagged": len(flagged),
    }


def cam_regions_path(run_dir: str | os.PathLike) -> Path:
    """Where compute_cam_regions caches a run's analysis: <run>/cam_regions.json, or the user data dir for a
    shipped run (core.runs.registry.added_file_path)."""
    return added_file_path(run_dir, CAM_REGIONS_FILE_NAME, "cam_regions")


def load_cam_regions(run_dir: str | os.PathLike) -> dict | None:
    """The cached analysis (cam_regions_path; for a shipped run not analysed here, the one it was shipped
    with), or None when it was never computed."""
    path = cam_regions_path(run_dir)
    data = read_json(path if path.is_file() else Path(run_dir) / CAM_REGIONS_FILE_NAME)
    return data if isinstance(data, dict) and "films" in data else None


def compute_cam_regions(run, dataset_root: str | os.PathLike | None, *, max_films: int = CAM_MAX_FILMS,
                        model=None, batch_size: int = 16, progress=None) -> dict:
    """Explain a bounded set of the run's test films with Grad-CAM and measure where each map's mass lies.

    Films come from `select_cam_films` over predictions.csv and are read from `dataset_root`, else from the
    run's review films (core.runs.review_films.run_film); each CAM is
    that of the class the model predicts, split by `cam_regions` into central / border /
    corners shares. The result is written to cam_regions_path(run) (and the model card of a run that is not
    shipped refreshed), so the work is done once per run.

    Args:
        run: a core.runs.registry.Run (or run folder).
        dataset_root: the folder holding the films named in predictions.csv (None: review films only).
        max_films: bound on the number of films explained (see select_cam_films).
        model: the run's loaded Keras model, to reuse one already in memory (and its compiled Grad-CAM);
            loaded when None.
        batch_size: films per Grad-CAM batch.
        progress: called as progress(done, total).

    Returns:
        {"computed", "run_id", "n", "border_fraction", "flag_share", "uniform": shares of a uniform map,
        "films": [{"file", "label", "predicted", "confidence", "central", "border", "corners"}],
        "missing": [files not found], "summary": summarise_cam_regions(films)}.

    Raises:
        ValueError: the run has no test predictions, or none of the chosen films could be read.
    """
    run = run if isinstance(run, Run) else load_run(run)
    predictions = run.path / PREDICTIONS_FILE_NAME
    rows = read_predictions_csv(predictions, run.classes) if predictions.is_file() else []
    chosen = select_cam_films(rows, max_films)
    if not chosen:
        raise ValueError(f"{predictions} lists no test films; re-evaluate the run first.")
    root = Path(dataset_root).resolve() if dataset_root is not None else None
    by_path, missing = {}, []
    for row in chosen:
        path = run_film(run.path, root, row["file"])
        if path is not None:
            by_path[path] = row
        else:
            missing.append(row["file"])
    if model is None:
        model = load_model(run.model_path)
    explainer = cached_grad_cam(model)  # Compiled once per model: a model in memory may have it already.
    image_size = int(run.config.get("image_size", 224))
    films, done = [], 0
    for paths, images, errors, _ in decode_in_chunks(list(by_path), image_size, chunk_size=batch_size):
        missing.extend(by_path[path]["file"] for path in errors)
        if len(images):
            _, cams = explainer(images)
            for path, cam in zip(paths, cams):
                row = by_path[path]
                films.append({"file": row["file"], "label": row["label"], "predicted": row["predicted"],
                              "confidence": float(row["confidence"]),
                              **cam_regions(cam, border_fraction=CAM_BORDER_FRACTION)})
        done += len(paths) + len(errors)
        if progress is not None:
            progress(done, len(by_path))
    if not films:
        where = root if root is not None else "the dataset folder or the run's review films"
        raise ValueError(f"None of the {len(chosen)} chosen test films could be read under {where}; "
                         "choose the folder the run was trained on.")
    result = {
        "computed": now_iso(), "run_id": run.run_id, "n": len(films), "border_fraction": CAM_BORDER_FRACTION,
        "flag_share": CAM_FLAG_SHARE,
        "uniform": cam_regions(np.ones((image_size, image_size), np.float32), border_fraction=CAM_BORDER_FRACTION),
        "films": films, "missing": missing, "summary": summarise_cam_regions(films),
    }
    path = cam_regions_path(run.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    if path.parent == run.path:
        refresh_model_card_quietly(run.path)
    return result
