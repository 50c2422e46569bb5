"""The pages' real background work, end to end: a training child started from the Training page, and the
mobile export built by the Evaluation page's child process (tests/app fakes both)."""

from __future__ import annotations

import shutil
import time

import pytest

from app.conftest import open_page, start_tiny_training, texts
from conftest import WEIGHTS_035
from core.cli import main
from core.serving.export import parity_report, read_export_parity, run_films
from core.ui import navigation

pytestmark = pytest.mark.slow


def test_training_runs_in_background_and_appears_in_selector(monkeypatch, tmp_path, tiny_dataset):
    """The smallest real training the check needs: the tiny run's recipe for one epoch, and no heatmap check
    at its end (the form does not offer that setting; tests/pipeline/test_faithfulness.py covers the check a
    training ends with)."""
    from core.runs import jobs
    from core.runs.registry import list_runs

    write_job_config = jobs.write_job_config
    monkeypatch.setattr(jobs, "write_job_config", lambda models_dir, preset_name, overrides: write_job_config(
        models_dir, preset_name, {**overrides, "explain_check_films": 0}))
    dataset = tiny_dataset  # The tiny run's films; the run itself is not needed.
    models_dir = tmp_path / "train-models"
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("PARU_DATA_ROOT", str(dataset.parent))
    at = open_page(navigation.TRAINING.script)
    assert at.selectbox(key="train_folder_pick").value == str(dataset)
    start_tiny_training(at, epochs=1)
    try:
        # While the first runs, the page offers no second start (the lock would refuse it anyway).
        deadline = time.monotonic() + 60
        while not jobs.job_status(models_dir).running and time.monotonic() < deadline:
            time.sleep(0.2)
        at.run()
        assert at.form_submit_button[0].disabled
        deadline = time.monotonic() + 300  # A bound, not a target: a shared machine can be that slow.
        while jobs.job_status(models_dir).running and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        jobs.request_stop(models_dir)
    status = jobs.job_status(models_dir)
    assert not status.running
    assert status.last["state"] == "finished", status.log_tail
    runs = list_runs(models_dir)
    assert len(runs) == 1
    at.run()
    assert not at.exception, at.exception
    selector = at.sidebar.selectbox(key="run_selector")
    assert any(option.startswith(runs[0].run_id) for option in selector.options)
    assert selector.value == str(runs[0].path)  # The only run, so also the default choice.
    assert "Last training finished" in texts(at.success)


def test_evaluation_builds_a_real_mobile_export_once(monkeypatch, tmp_path, tiny_run):
    """The page's child process (`python -m core export --parity-json`) writes the float16 export and its
    figures once; they are those of a parity check in this process, and the export keeps the tiny run's
    decided answers at under six tenths the size of its float32 export."""
    models_dir = tmp_path / "export-models"
    shutil.copytree(tiny_run, models_dir / tiny_run.name)
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    at = open_page(navigation.EVALUATION.script)
    at.selectbox(key="export_variant").set_value("float16").run()
    at.button(key="export_go").click().run(timeout=600)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    exported = models_dir / tiny_run.name / "exports" / "float16-v2.tflite"
    assert exported.is_file() and exported.stat().st_size > 10_000
    assert "Download float16 .tflite" in [button.label for button in at.download_button]
    assert not list(exported.parent.glob(".*partial"))  # Written under a temporary name, then renamed.
    assert not list(exported.parent.glob(".*.json"))
    # Checked against the Keras model on the run's own films, and the figures shown beside the download.
    shown = texts(at.success) + texts(at.warning)
    n_films = len((tiny_run / "split.csv").read_text().strip().splitlines()) - 1
    assert f"Checked against the Keras model on {n_films} of the run's films: top-1 agreement" in shown
    again = open_page(navigation.EVALUATION.script)
    assert "Download float16 .tflite" in [button.label for button in again.download_button]
    assert "export_go" not in [button.key for button in again.button]

    written = read_export_parity(models_dir / tiny_run.name, "float16")
    report = parity_report(tiny_run, exported, run_films(tiny_run))
    assert written["n"] == report["n"] == n_films == 48
    assert written["top1_agreement"] == report["top1_agreement"]
    assert written["meets_bar"] == (report["top1_agreement"] >= 0.99 and report["max_abs_difference"] <= 0.02)
    exact = tmp_path / "f32.tflite"
    assert main(["export", "--model", str(tiny_run), "--tflite", str(exact), "--variant", "float32",
                 "--no-check"]) == 0
    assert 0 < report["size_bytes"] < 0.6 * exact.stat().st_size
    if WEIGHTS_035 is not None:  # From random weights a few seconds of training decide no film.
        # The tiny model is barely trained, so some films sit on a near tie between two classes that float16
        # rounding can flip; where the model is decided, the export must agree every time.
        assert report["n_decided"] >= 10
        assert report["top1_agreement_decided"] == 1.0
        assert report["mean_abs_difference"] < 0.01
