"""The app tier: every page driven with streamlit.testing.v1.AppTest through streamlit_app.py (the shell),
against the session's tiny run (tests/conftest.py). Each test points PARU_MODELS_DIR at the folder it needs;
background work (training, the mobile export) is replaced by fakes with the same files and messages.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import PROJECT_ROOT, dataset_of, film_with_blob, tiny_config
from core.runs.artifacts import (CAM_REGIONS_FILE_NAME, DATA_REPORT_FILE_NAME, MODEL_CARD_FILE_NAME,
                                 PREDICTIONS_FILE_NAME, REVIEW_FILMS_DIR_NAME, TAGS_FILE_NAME)

APP = str(PROJECT_ROOT / "streamlit_app.py")
TIMEOUT = 90
FAKE_TRAINING = Path(__file__).with_name("fake_training.py")


def _scan_installed_components_once() -> None:
    """The first run of every new AppTest reads the metadata of every installed distribution, looking for
    Streamlit components (streamlit.components.v2.manifest_scanner: about 0.3 s of CPU, more than most page
    runs here). The installed packages cannot change during a test session, so the scan is made once and its
    answer reused; nothing changes when a later Streamlit no longer has the scanner."""
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:
        return
    scan = getattr(manifest_scanner, "scan_component_manifests", None)
    if scan is not None and not hasattr(scan, "cache_info"):
        manifest_scanner.scan_component_manifests = functools.cache(scan)


_scan_installed_components_once()


def open_page(page: str | None = None) -> AppTest:
    """A new AppTest session on the Home page, switched to `page` (a pages/ script path) when given."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(page).run()
    return at


def start_tiny_training(at: AppTest, epochs: int = 2) -> None:
    """On the Training page `at`: the paper preset, its form filled with the tiny run's recipe
    (tests/conftest.py tiny_config, with `epochs` epochs), Start pressed, and the page saying it started."""
    recipe = tiny_config()
    at.radio(key="train_preset").set_value("paper").run()
    assert not at.error, texts(at.error)
    at.number_input(key="epochs-paper").set_value(epochs)
    at.selectbox(key="alpha-paper").set_value(recipe.alpha)
    at.number_input(key="batch-paper").set_value(recipe.batch_size)
    at.number_input(key="size-paper").set_value(recipe.image_size)
    at.selectbox(key="weights-paper").set_value("none" if recipe.weights == "none" else "imagenet")
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception
    assert "Training started." in texts(at.success), texts(at.error)


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def plotly_charts(at: AppTest):
    return at.get("plotly_chart")


def chart_specs(at: AppTest) -> str:
    return "\n".join(chart.proto.spec for chart in plotly_charts(at))


def png_bytes(class_index: int = 0, seed: int = 123) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(film_with_blob(class_index, np.random.default_rng(seed))).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def app_models_dir(tmp_path_factory, tiny_run) -> Path:
    """A models folder of this tier holding a copy of the tiny run: pages may write beside it (the audit
    log of Predict), never into the session's shared tiny run. Shared by the tier so that the pages' cached
    model of this run (core.ui.cached.get_predictor, keyed by the run's path) is loaded once: a test that adds
    a file to the run or a run beside it takes it away again before it ends."""
    models_dir = tmp_path_factory.mktemp("app-models")
    shutil.copytree(tiny_run, models_dir / tiny_run.name)
    return models_dir


@pytest.fixture
def with_run(monkeypatch, app_models_dir):
    """The app tier's models folder (one run), and its Run."""
    from core.runs.registry import list_runs

    monkeypatch.setenv("PARU_MODELS_DIR", str(app_models_dir))
    return list_runs(app_models_dir)[0]


@pytest.fixture
def without_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PARU_MODELS_DIR", str(tmp_path / "no-models"))
    return tmp_path / "no-models"


@pytest.fixture
def data_root(monkeypatch, tiny_run) -> Path:
    """The tiny run's dataset folder, with its parent as the only data root the app may read."""
    dataset = dataset_of(tiny_run)
    monkeypatch.setenv("PARU_DATA_ROOT", str(dataset.parent))
    return dataset


@pytest.fixture
def run_copy(monkeypatch, tmp_path, tiny_run):
    """A private copy of the tiny run, alone in its models folder (for tests that write into the run)."""
    from core.runs.registry import load_run

    models_dir = tmp_path / "copy-models"
    shutil.copytree(tiny_run, models_dir / tiny_run.name)
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    return load_run(models_dir / tiny_run.name)


@pytest.fixture(scope="session")
def review_models_dir(tmp_path_factory, tiny_run) -> Path:
    """A models folder with one copy of the tiny run whose first Normal test film is recorded as a Normal
    film read as Pneumonia. Shared by the Review tests, so the page's cached model and Grad-CAMs serve them
    all; `review_run` puts back the files a test may change."""
    models_dir = tmp_path_factory.mktemp("review-models")
    copy = models_dir / tiny_run.name
    shutil.copytree(tiny_run, copy)
    path = copy / PREDICTIONS_FILE_NAME
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    test_row = next(row for row in rows if row["subset"] == "test" and row["label"] == "Normal")
    test_row["predicted"] = "Pneumonia"
    test_row["p_Normal"], test_row["p_Pneumonia"] = "0.100000", "0.800000"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (models_dir / "mislabelled.txt").write_text(test_row["file"])
    return models_dir


@pytest.fixture
def review_run(monkeypatch, review_models_dir, tiny_run):
    """(Run, file of the mislabelled film) of the review copy, with no tags, Grad-CAM regions or packed review
    films, and its model card and data report as the tiny run has them (put back so after the test too)."""
    from core.runs.registry import load_run

    copy = review_models_dir / tiny_run.name

    def put_back() -> None:
        for name in (TAGS_FILE_NAME, CAM_REGIONS_FILE_NAME):
            (copy / name).unlink(missing_ok=True)
        shutil.rmtree(copy / REVIEW_FILMS_DIR_NAME, ignore_errors=True)
        for name in (MODEL_CARD_FILE_NAME, DATA_REPORT_FILE_NAME):
            shutil.copy2(tiny_run / name, copy / name)

    put_back()
    monkeypatch.setenv("PARU_MODELS_DIR", str(review_models_dir))
    yield load_run(copy), (review_models_dir / "mislabelled.txt").read_text()
    put_back()


@pytest.fixture
def fake_training(monkeypatch, tiny_run):
    """core.runs.jobs.start_training replaced by `fake_training.py`, a child that keeps the lock, writes
    progress, and finishes (a copy of the tiny run) once the test calls the returned `release(models_dir)`."""
    from core.runs import jobs

    started = []

    def start_training(data_dir, config_path, models_dir=None, extra_env=None):
        models_dir = Path(models_dir)
        status = jobs.job_status(models_dir)
        if status.running:
            raise jobs.TrainingBusyError(
                f"Training {status.lock.get('run_id', '?')} is already running. Wait for it or cancel it first.")
        run_id = f"fake-{len(started) + 1}-{Path(data_dir).name}"
        process = subprocess.Popen([sys.executable, str(FAKE_TRAINING), str(models_dir), str(tiny_run), run_id,
                                    str(data_dir), str(config_path)],
                                   cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
        jobs.acquire_lock(models_dir, {"run_id": "starting"}, pid=process.pid)
        started.append(process)
        return process

    def release(models_dir: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = jobs.job_status(models_dir)
            staging = (status.lock or {}).get("staging_dir")
            if staging and Path(staging).is_dir():
                (Path(staging) / "release").write_text("go")
                break
            time.sleep(0.05)
        for process in started:
            process.wait(timeout=timeout)

    monkeypatch.setattr(jobs, "start_training", start_training)
    yield release
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def fake_export(monkeypatch):
    """core.serving.export.build_export replaced by a writer of a small file and its parity report, under the
    real names; returns the list of (run, variant) it was asked to build."""
    from core.serving import export

    built = []

    def build_export(run_dir, variant, timeout=export.EXPORT_TIMEOUT_SECONDS):
        target = export.export_path(run_dir, variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"TFL3" + bytes(20_000))
        export.export_parity_path(run_dir, variant).write_text(json.dumps(
            {"n": 48, "top1_agreement": 1.0, "max_abs_difference": 0.001, "latency_ms_per_film": 2.5,
             "meets_bar": True}))
        built.append((str(run_dir), variant))
        return target

    monkeypatch.setattr(export, "build_export", build_export)
    return built
