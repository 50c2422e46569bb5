"""The run folder's schema: every file name, the readers and writers of its CSV and JSON files (the
`metrics.json` schema's TypedDicts are in core.runs.schema), and the one answer to "where are this run's
films?".

A finished run folder `models/<run_id>/` holds:

    model.keras             the best epoch's model (lowest validation loss), loadable in Keras safe mode
    config.json             the TrainConfig it was trained with
    classes.json            ordered class names: output unit i of the model is classes[i]
    split.csv               path, label, subset, patient_id, sha256 for every usable film
    history.csv             one row per epoch (epoch, phase, loss, accuracy, val_loss, val_accuracy, ...)
    metrics.json            test-set metrics and the training summary (core.runs.schema.RunMetrics)
    predictions.csv         file, label, predicted, one p_<class> column per class, subset (val and test)
    data_report.json        counts per class and subset, skipped files with reasons, duplicates, and "root":
                            the dataset folder relative to its data root (`dataset_name`), e.g. "nih-cxr4"
    gate.npz                the "is this a chest film?" gate's statistics (core.serving.gate)
    population.npz          the population gate's statistics: multi-depth feature distances and the
                            mis-preparation classifier (core.serving.population); older runs lack it
    similar_cases.npz       the training films' pooled features, paths and labels (core.serving.similar)
    perceptual_hashes.json  perceptual hashes of the training and validation films (core.evaluation.overlap)
    model_card.md           what the model is, what it saw, how good it is, what it is not for
    status.json             {"state": "finished", "started", "finished", "pid"}; a run the project ships
                            also says "demo": true (a demonstration run, not a clinical model)

and, once a person or the app has worked with the run (for a shipped run, the first two and the last in the
user data dir instead, core.runs.registry.added_file_path, so its tracked files stay as git has them):

    review_tags.json        a reviewer's tag and note per misclassified test film (core.runs.review)
    cam_regions.json        where Grad-CAM puts its mass on a bounded set of test films (core.explain.regions)
    explain_check.json      whether the heatmaps are faithful to the model (core.explain.faithfulness)
    external_validation.json  the last external validation (schema.ExternalMetrics plus "evaluated"), kept for
                            the next session (core.evaluation.evaluate.save_external_result)
    exports/                TensorFlow Lite exports built from the app, <variant>-v<format>.tflite
    review_films/           downsized copies of the misclassified (and a few correct) test films at their
                            split.csv paths, with manifest.json, so Review works without the dataset
                            (core.runs.review_films; shipped runs carry one)

A run is written in a hidden staging folder (`.<run_id>.partial`, which also holds progress.json and, when a
stop is requested, STOP) and renamed into place only when it has finished. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from core.runs.checks import damaged_file
from core.runs.schema import RunMetrics
from core.settings import SHARED_ROOT, allowed_data_roots

MODEL_FILE_NAME = "model.keras"
CONFIG_FILE_NAME = "config.json"
CLASSES_FILE_NAME = "classes.json"
SPLIT_FILE_NAME = "split.csv"
HISTORY_FILE_NAME = "history.csv"
METRICS_FILE_NAME = "metrics.json"
PREDICTIONS_FILE_NAME = "predictions.csv"
DATA_REPORT_FILE_NAME = "data_report.json"
GATE_FILE_NAME = "gate.npz"
POPULATION_FILE_NAME = "population.npz"
SIMILAR_FILE_NAME = "similar_cases.npz"
HASHES_FILE_NAME = "perceptual_hashes.json"
MODEL_CARD_FILE_NAME = "model_card.md"
STATUS_FILE_NAME = "status.json"
TAGS_FILE_NAME = "review_tags.json"
CAM_REGIONS_FILE_NAME = "cam_regions.json"
EXPLAIN_CHECK_FILE_NAME = "explain_check.json"
EXTERNAL_FILE_NAME = "external_validation.json"
EXPORTS_DIR_NAME = "exports"
REVIEW_FILMS_DIR_NAME = "review_films"
REVIEW_FILMS_MANIFEST_FILE_NAME = "manifest.json"
PROGRESS_FILE_NAME = "progress.json"
STOP_FILE_NAME = "STOP"

REQUIRED_FILE_NAMES = (MODEL_FILE_NAME, CONFIG_FILE_NAME, CLASSES_FILE_NAME, STATUS_FILE_NAME)
"""A folder is a finished run only when it holds these (and status.json says "finished")."""

SPLIT_COLUMNS = ("path", "label", "subset", "patient_id", "sha256")


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write JSON so that a reader sees the old or the new file, never half of one."""
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as tmp:
            json.dump(data, tmp, indent=2, default=_json_default)
            tmp.write("\n")
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; run files are meant to be shared.
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: str | os.PathLike, default=None):
    """The parsed file, or `default` when it is missing, not UTF-8 or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError.
        return default


def read_status(run_dir: str | os.PathLike) -> dict:
    """status.json of a run or staging folder ({} when missing or unreadable)."""
    status = read_json(Path(run_dir) / STATUS_FILE_NAME, {})
    return status if isinstance(status, dict) else {}


def read_metrics(run_dir: str | os.PathLike) -> RunMetrics | None:
    """metrics.json of a run, or None when it is missing or unreadable."""
    metrics = read_json(Path(run_dir) / METRICS_FILE_NAME)
    return metrics if isinstance(metrics, dict) else None


def read_data_report(run_dir: str | os.PathLike) -> dict | None:
    """data_report.json of a run, or None when it is missing or unreadable."""
    report = read_json(Path(run_dir) / DATA_REPORT_FILE_NAME)
    return report if isinstance(report, dict) else None


def read_explain_check(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> dict | None:
    """explain_check.json of a run (core.explain.faithfulness), or None when the run was never checked.
    `path` reads the report from elsewhere (a shipped run's check made on this machine lives in the user
    data dir: core.runs.registry.load_explain_check)."""
    report = read_json(Path(path) if path is not None else Path(run_dir) / EXPLAIN_CHECK_FILE_NAME)
    return report if isinstance(report, dict) and isinstance(report.get("verdict"), dict) else None


# --------------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------------


def write_split_csv(path: str | os.PathLike, scan, subsets) -> None:
    """split.csv: one row per usable film of a core.data.scan.DatasetScan, with its subset (SPLIT_COLUMNS)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SPLIT_COLUMNS)
        for record, subset in zip(scan.records, subsets):
            writer.writerow([record.path, record.label, subset, record.patient_id or "", record.sha256])


def read_split_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a run's split.csv as dicts (SPLIT_COLUMNS)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_history_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """history.csv: one row per epoch; columns epoch, phase, then every other key in sorted order."""
    columns = ["epoch", "phase"] + sorted({key for row in rows for key in row} - {"epoch", "phase"})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_history_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of history.csv: "epoch" an int, "phase" a string, every other non-empty value a float.

    Raises ValueError (`damaged_file`) for a file that is not UTF-8 CSV, a row with more fields than the
    header, or a value that is not a number."""
    expected = "UTF-8 CSV with an epoch, a phase and numeric metric columns, one row per epoch"
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                if None in row:
                    raise damaged_file(path, f"has extra fields on line {line}", expected)
                try:
                    rows.append({key: (int(value) if key == "epoch" else value if key == "phase" else float(value))
                                 for key, value in row.items() if value not in ("", None)})
                except ValueError:
                    raise damaged_file(path, f"has a value that is not a number on line {line}", expected) from None
    except UnicodeDecodeError:
        raise damaged_file(path, "is not UTF-8 text (a binary file?)", expected) from None
    except csv.Error as error:
        raise damaged_file(path, f"is not valid CSV ({error})", expected) from None
    return rows


def write_predictions_csv(path, files: Iterable[str], labels: Iterable[str], probabilities,
                          class_names: list[str], subsets: Iterable[str]) -> None:
    """predictions.csv: file, label, predicted, one p_<class> probability column per class, subset."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "predicted", *[f"p_{name}" for name in class_names], "subset"])
        for file, label, row, subset in zip(files, labels, probabilities, subsets):
            writer.writerow([file, label, class_names[int(np.argmax(row))],
                             *[f"{p:.6f}" for p in row], subset])


def read_predictions_csv(path: str | os.PathLike, class_names: list[str]) -> list[dict]:
    """Rows of predictions.csv with probabilities parsed into a `probabilities` dict and the predicted
    class's probability as `confidence`.

    Raises ValueError (`damaged_file`) when the file is not UTF-8 CSV, lacks a column, has a row cut short
    or with extra fields, a probability that is not a number in [0, 1], or a class the run does not know."""
    columns = ["file", "label", "predicted", *[f"p_{name}" for name in class_names], "subset"]
    expected = f"UTF-8 CSV with the columns {', '.join(columns)} on every row"
    step = "Evaluate the run again (python -m core evaluate) or choose another run."
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in columns if name not in (reader.fieldnames or [])]
            if missing:
                raise damaged_file(path, f"lacks the columns {missing}", expected, step)
            for line, row in enumerate(reader, start=2):
                if None in row or any(row.get(name) is None for name in columns):
                    raise damaged_file(path, f"has a row cut short or with extra fields on line {line}", expected,
                                       step)
                try:
                    row["probabilities"] = {name: float(row.pop(f"p_{name}")) for name in class_names}
                except ValueError:
                    raise damaged_file(path, f"has a probability that is not a number on line {line}", expected,
                                       step) from None
                if not all(0.0 <= p <= 1.0 for p in row["probabilities"].values()):
                    raise damaged_file(path, f"has a probability outside [0, 1] on line {line}", expected, step)
                if row["predicted"] not in row["probabilities"] or row["label"] not in row["probabilities"]:
                    raise damaged_file(path, f"names a class this run does not know on line {line}",
                                       f"classes among {class_names}", step)
                row["confidence"] = row["probabilities"][row["predicted"]]
                rows.append(row)
    except UnicodeDecodeError:
        raise damaged_file(path, "is not UTF-8 text", expected, step) from None
    except csv.Error as error:
        raise damaged_file(path, f"is not valid CSV ({error})", expected, step) from None
    return rows


def misclassified_test_rows(rows: list[dict]) -> list[dict]:
    """The test rows of `read_predictions_csv` whose prediction is wrong, most confident first (ties keep
    the file's order)."""
    wrong = [row for row in rows if row.get("subset") == "test" and row["label"] != row["predicted"]]
    return sorted(wrong, key=lambda row: float(row.get("confidence", 0)), reverse=True)


# --------------------------------------------------------------------------------------------------
# Where the run's films are
# --------------------------------------------------------------------------------------------------


def dataset_name(data_root: str | os.PathLike) -> str:
    """What a run records as its dataset folder (data_report.json "root"): the folder relative to the data
    root that holds it (core.settings.allowed_data_roots, then ../shared/data), e.g. "nih-cxr4", so the run
    finds its films on any machine whose data root has that folder; the absolute path only for a folder
    outside every data root, which nothing else could find again."""
    resolved = Path(data_root).expanduser().resolve()
    holders = [root for root in map(Path.resolve, _data_roots()) if resolved != root and resolved.is_relative_to(root)]
    return resolved.relative_to(holders[0]).as_posix() if holders else str(resolved)


def _data_roots() -> list[Path]:
    return [root.expanduser() for root in [*allowed_data_roots(), SHARED_ROOT / "data"]]


def dataset_root_candidates(run_dir: str | os.PathLike) -> list[Path]:
    """The folders, in order, where a run's films may be on this machine.

    A relative "root" (`dataset_name`) under each allowed data root, then under ../shared/data; an absolute
    one (older runs, or a folder outside the data roots) itself first, then a folder of the same name under
    those roots. [] when the run does not record its folder, or records a relative one that climbs out (..).
    """
    recorded = (read_data_report(run_dir) or {}).get("root")
    if not recorded or not isinstance(recorded, str):
        return []
    path = Path(recorded).expanduser()
    if not path.is_absolute() and ".." in path.parts:
        return []
    under_roots = [root / (path.name if path.is_absolute() else path) for root in _data_roots()]
    return list(dict.fromkeys([path, *under_roots] if path.is_absolute() else under_roots))


def find_dataset_root(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding a run's films (the paths of split.csv and predictions.csv are relative to it).

    `data_dir` when given (the user says where the films are now; None when it is not a folder), else the
    first existing folder of `dataset_root_candidates`, else None.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return root if root.is_dir() else None
    return next((path for path in dataset_root_candidates(run_dir) if path.is_dir()), None)


def run_dataset_root(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """`find_dataset_root` for a run that must have a split; ValueError saying what to do otherwise.

    Raises ValueError when the run has no split.csv, does not record its folder, or the folder is found
    nowhere on this machine.
    """
    run_dir = Path(run_dir)
    if not (run_dir / SPLIT_FILE_NAME).is_file():
        raise ValueError(f"{run_dir} has no {SPLIT_FILE_NAME}; choose a finished run folder (models/<run_id>).")
    root = find_dataset_root(run_dir, data_dir)
    if root is not None:
        return root
    if data_dir is None and not dataset_root_candidates(run_dir):
        raise ValueError(f"{run_dir} does not say where its dataset is; pass the dataset folder (--data).")
    missing = data_dir if data_dir is not None else (read_data_report(run_dir) or {}).get("root")
    where = "" if data_dir is not None or Path(missing).is_absolute() else " under any data root"
    raise ValueError(f"The run's dataset folder {missing} does not exist{where} on this machine; pass the folder "
                     "where the same films are now (--data).")
