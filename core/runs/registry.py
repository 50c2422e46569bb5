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

from core.model import load_model
from core.runs.artifacts import (
    CLASSES_FILE_NAME,
    CONFIG_FILE_NAME,
    EXPLAIN_CHECK_FILE_NAME,
    METRICS_FILE_NAME,
    MODEL_FILE_NAME,
    REQUIRED_FILE_NAMES,
    STATUS_FILE_NAME,
    find_dataset_root,
    read_data_report,
    read_explain_check,
    read_metrics,
    read_status,
)
from core.runs.checks import check_metrics, damaged_file, read_json_strict
from core.settings import PROJECT_ROOT, default_models_dir, user_data_dir


SHIPPED_RUNS_DIR = PROJECT_ROOT / "models"
SHIPPED_RUN_PREFIX = "demo-"
"""The runs the project ships sit in its own models/ folder and are named demo-<dataset>-<preset>; a trained
run is named by its time (`new_run_id`), so it never takes this prefix by itself."""


def is_shipped_run(run_dir: str | os.PathLike) -> bool:
    """True for a run the project ships (tracked in git): a demo-* folder in the project's own models/
    folder, or any run folder this process may not write to. Paru never writes into such a run; what a
    user adds to it lives under core.settings.user_data_dir() (see added_file_path).

    Decided by location and name alone: no git command is run, and a copy of a shipped run elsewhere (in a
    test's temporary folder, or in $PARU_MODELS_DIR) is the user's own."""
    path = Path(run_dir).expanduser().resolve()
    if path.parent == SHIPPED_RUNS_DIR.resolve() and path.name.startswith(SHIPPED_RUN_PREFIX):
        return True
    return path.is_dir() and not os.access(path, os.W_OK)


def added_file_path(run_dir: str | os.PathLike, file_name: str, kind: str) -> Path:
    """Where Paru keeps a file it adds to a trained run (review tags, the Grad-CAM region analysis, the last
    external validation): <run>/<file_name> for the user's own runs, and <user data dir>/<kind>/<run id> with
    file_name's suffix for a shipped run (is_shipped_run), whose tracked files stay as they are in git."""
    run_dir = Path(run_dir)
    if is_shipped_run(run_dir):
        return user_data_dir() / kind / f"{run_dir.name}{Path(file_name).suffix}"
    return run_dir / file_name


def explain_check_path(run_dir: str | os.PathLike) -> Path:
    """Where core.explain.faithfulness.check_run writes a run's heatmap check by default: the run folder, or
    the user data dir for a shipped run (added_file_path), whose shipped explain_check.json stays as git has it."""
    return added_file_path(run_dir, EXPLAIN_CHECK_FILE_NAME, "explain_check")


def load_explain_check(run_dir: str | os.PathLike) -> dict | None:
    """The run's heatmap check: for a shipped run checked again on this machine, that newer check; else the
    run folder's own (read_explain_check)."""
    path = explain_check_path(run_dir)
    return read_explain_check(run_dir, path if path.is_file() else None)


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


@dataclass
class DamagedRun:
    """A run folder that cannot be opened, with the reason (what is wrong and what to do)."""

    path: Path
    reason: str

    @property
    def run_id(self) -> str:
        return self.path.name


def load_run(run_dir: str | os.PathLike) -> Run:
    """Open a finished run folder.

    Raises ValueError saying which file is wrong and what to do when the folder is not a finished run, or
    when status.json or config.json is not a JSON object, classes.json is not a list of at least two distinct
    class names, or metrics.json (when present) does not follow the schema (`check_metrics`).
    """
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"Run folder {path} does not exist. Train one with `python -m core train --data DIR`, or pick "
            "a folder under models/."
        )
    status = read_json_strict(path / STATUS_FILE_NAME, dict, 'a JSON object such as {"state": "finished"}')
    missing = [name for name in REQUIRED_FILE_NAMES if not (path / name).is_file()]
    if status.get("state") != "finished" or missing:
        raise ValueError(
            f"{path} is not a finished run (state: {status.get('state', 'unknown')}; missing: "
            f"{missing or 'nothing'}). Choose a finished run under models/."
        )
    config = read_json_strict(path / CONFIG_FILE_NAME, dict, "a JSON object (the TrainConfig of the run)")
    classes = read_json_strict(path / CLASSES_FILE_NAME, list, "a JSON list of at least two class names")
    if len(classes) < 2 or not all(isinstance(name, str) and name.strip() for name in classes) \
            or len(set(classes)) != len(classes):
        raise damaged_file(path / CLASSES_FILE_NAME, f"holds {classes!r}",
                           "a JSON list of at least two distinct, non-empty class names")
    if (path / METRICS_FILE_NAME).exists():
        check_metrics(read_json_strict(path / METRICS_FILE_NAME, dict, "a JSON object (RunMetrics)"),
                      path / METRICS_FILE_NAME)
    return Run(path.resolve(), config, classes, status)


def load_run_model(run: Run):
    """The run's Keras model, loaded in safe mode; ValueError saying what to do when Keras refuses or cannot
    read the file, or when its output units do not match classes.json (`check_model_outputs`)."""
    try:
        model = load_model(run.model_path)
    except Exception as error:  # Keras raises many types for a refused or broken file.
        raise ValueError(
            f"{run.model_path} cannot be loaded in Keras safe mode ({type(error).__name__}: {str(error)[:300]}). "
            "Paru never runs code stored in a model file; retrain the run or choose another one.") from None
    check_model_outputs(run, int(model.output_shape[-1]))
    return model


def check_model_outputs(run: Run, n_outputs: int) -> None:
    """ValueError when the model's output units do not match classes.json (one class name per unit)."""
    if n_outputs != len(run.classes):
        raise damaged_file(run.path / CLASSES_FILE_NAME, f"names {len(run.classes)} classes but the model has "
                           f"{n_outputs} output units", "one class name per output unit of model.keras")


def scan_runs(models_dir: str | os.PathLike | None = None) -> tuple[list[Run], list[DamagedRun]]:
    """The finished runs under models_dir (newest first) and the damaged ones (by name).

    A visible folder holding any of the required files (REQUIRED_FILE_NAMES) is a run; one that `load_run`
    refuses is damaged, with its reason, and never hides another run. Staging folders are hidden and never
    listed.
    """
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    runs: list[Run] = []
    damaged: list[DamagedRun] = []
    try:
        folders = sorted(path for path in models_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    except OSError:
        return [], []
    for path in folders:
        if not any((path / name).exists() for name in REQUIRED_FILE_NAMES):
            continue
        try:
            runs.append(load_run(path))
        except ValueError as error:
            damaged.append(DamagedRun(path, str(error)))
    runs.sort(key=lambda run: (str(run.status.get("finished", "")), run.run_id), reverse=True)
    return runs, damaged


def list_runs(models_dir: str | os.PathLike | None = None) -> list[Run]:
    """Finished runs under models_dir, newest first. Staging, failed and damaged runs are never listed
    (`scan_runs` says which are damaged and why)."""
    return scan_runs(models_dir)[0]


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
