"""The run registry: every trained model lives in its own folder under `models/<run_id>/`.

A finished run folder holds:

    model.keras        the best epoch's model (lowest validation loss), loadable in Keras safe mode
    config.json        the TrainConfig it was trained with
    classes.json       ordered class names: output unit i of the model is classes[i]
    split.csv          path, label, subset, patient_id, sha256 for every usable film
    history.csv        one row per epoch (loss, accuracy, val_loss, val_accuracy, learning_rate, phase)
    metrics.json       test-set metrics (schema in core.evaluation.metrics.classification_report) + training summary
    predictions.csv    file, label, predicted, one probability column per class, subset (val and test)
    data_report.json   counts per class and subset, skipped files with reasons, duplicates
    model_card.md      what the model is, what it was trained on, how good it is, what it is not for
    status.json        {"state": "finished", ...}

A run is written in a hidden staging folder (`.<run_id>.partial`) and renamed into place only when it has
finished, so a run that did not finish can never be listed or loaded as a model, and an existing run is
never overwritten.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.settings import PROJECT_ROOT, default_models_dir

RUN_FILES = ("model.keras", "config.json", "classes.json", "status.json")


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
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path: str | os.PathLike, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return default


def new_run_id(data_dir: str | os.PathLike, preset_name: str) -> str:
    """`20261128-031500-nih-cxr4-paper`: sortable by time, readable at a glance."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(data_dir).resolve().name)
    return f"{stamp}-{dataset or 'data'}-{preset_name}"


def staging_dir_for(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.partial"


@dataclass
class Run:
    """A finished run folder. `classes` orders the model's outputs."""

    path: Path
    config: dict
    classes: list[str]
    status: dict

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def metrics(self) -> dict | None:
        return read_json(self.path / "metrics.json")

    @property
    def data_report(self) -> dict | None:
        return read_json(self.path / "data_report.json")

    def dataset_root(self) -> Path | None:
        """Where the run's films are on this machine: the recorded folder, else a folder of the same
        name under ../shared/data beside the project (how the shipped demo run finds its films), else None."""
        recorded = (self.data_report or {}).get("root")
        if not recorded:
            return None
        candidates = [Path(recorded), PROJECT_ROOT.parent / "shared" / "data" / Path(recorded).name]
        return next((path for path in candidates if path.is_dir()), None)

    def describe(self) -> str:
        """One line for a run selector: id, preset, backbone, test accuracy."""
        metrics = self.metrics or {}
        accuracy = metrics.get("accuracy")
        score = f", test accuracy {accuracy:.1%}" if isinstance(accuracy, (int, float)) else ""
        return (f"{self.run_id} ({self.config.get('preset', '?')}, MobileNetV2 α{self.config.get('alpha')}"
                f"{score})")


def is_finished_run(path: Path) -> bool:
    if not path.is_dir() or path.name.startswith("."):
        return False
    status = read_json(path / "status.json", {}) or {}
    return (
        status.get("state") == "finished"
        and all((path / name).is_file() for name in RUN_FILES)
    )


def load_run(run_dir: str | os.PathLike) -> Run:
    """Open a finished run folder; ValueError says what is missing otherwise."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"Run folder {path} does not exist. Train one with `python -m core train --data DIR`, or pick "
            "a folder under models/."
        )
    if not is_finished_run(path):
        missing = [name for name in RUN_FILES if not (path / name).is_file()]
        state = (read_json(path / "status.json", {}) or {}).get("state", "unknown")
        raise ValueError(
            f"{path} is not a finished run (state: {state}; missing: {missing or 'nothing'}). "
            "Choose a finished run under models/."
        )
    classes = read_json(path / "classes.json")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValueError(f"{path / 'classes.json'} must list at least two class names.")
    return Run(path.resolve(), read_json(path / "config.json", {}), classes, read_json(path / "status.json"))


def list_runs(models_dir: str | os.PathLike | None = None) -> list[Run]:
    """Finished runs under models_dir, newest first. Staging and failed runs are never listed."""
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    if not models_dir.is_dir():
        return []
    runs = [load_run(path) for path in models_dir.iterdir() if is_finished_run(path)]
    return sorted(runs, key=lambda run: (run.status.get("finished", ""), run.run_id), reverse=True)


def check_writable(folder: Path) -> None:
    """Raise ValueError with a next step when runs cannot be written under `folder`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as error:
        raise ValueError(
            f"Cannot write to {folder} ({error.strerror or error}). Make the folder writable, free disk "
            "space, or choose another output folder with --out."
        ) from None
