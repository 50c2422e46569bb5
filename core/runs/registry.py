"""The run registry: every trained model lives in its own folder under `models/<run_id>/`.

The folder's files are described in core.runs.artifacts. A run is written in a hidden staging folder
(`.<run_id>.partial`) and renamed into place only when it has finished, so a run that did not finish can
never be listed or loaded as a model, and an existing run is never overwritten.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.runs.artifacts import (
    CLASSES_FILE_NAME,
    CONFIG_FILE_NAME,
    MODEL_FILE_NAME,
    REQUIRED_FILE_NAMES,
    find_dataset_root,
    read_data_report,
    read_json,
    read_metrics,
    read_status,
)
from core.settings import default_models_dir


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
        return self.path / MODEL_FILE_NAME

    @property
    def metrics(self) -> dict | None:
        return read_metrics(self.path)

    @property
    def data_report(self) -> dict | None:
        return read_data_report(self.path)

    def dataset_root(self) -> Path | None:
        """Where the run's films are on this machine (core.runs.artifacts.find_dataset_root), else None."""
        return find_dataset_root(self.path)

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
    return (
        read_status(path).get("state") == "finished"
        and all((path / name).is_file() for name in REQUIRED_FILE_NAMES)
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
        missing = [name for name in REQUIRED_FILE_NAMES if not (path / name).is_file()]
        state = read_status(path).get("state", "unknown")
        raise ValueError(
            f"{path} is not a finished run (state: {state}; missing: {missing or 'nothing'}). "
            "Choose a finished run under models/."
        )
    classes = read_json(path / CLASSES_FILE_NAME)
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValueError(f"{path / CLASSES_FILE_NAME} must list at least two class names.")
    return Run(path.resolve(), read_json(path / CONFIG_FILE_NAME, {}), classes, read_status(path))


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
