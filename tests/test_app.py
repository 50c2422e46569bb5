"""The Streamlit app, page by page, with streamlit.testing.v1.AppTest against a real (tiny) trained run.

A session fixture trains one tiny run (MobileNetV2 alpha 0.35, 64 px, one epoch) on generated films into a
temporary models folder; each test points PARU_MODELS_DIR at the folder it needs.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import film_with_blob, make_dataset, tiny_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
APP = str(PROJECT_ROOT / "streamlit_app.py")
PAGES = ("pages/1_Predict.py", "pages/2_Evaluation.py", "pages/3_Review.py", "pages/4_Training.py")
TIMEOUT = 90


def png_bytes(class_index: int = 0, seed: int = 123) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(film_with_blob(class_index, np.random.default_rng(seed))).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def app_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("app-data") / "films", per_class=8)


@pytest.fixture(scope="session")
def trained_models_dir(tmp_path_factory, app_dataset) -> Path:
    """A models folder holding one finished tiny run."""
    from core.training.run import train_run

    models_dir = tmp_path_factory.mktemp("app-models")
    train_run(app_dataset, tiny_config(epochs=1), models_dir=models_dir, log=lambda line: None)
    return models_dir


@pytest.fixture
def with_run(monkeypatch, trained_models_dir):
    monkeypatch.setenv("PARU_MODELS_DIR", str(trained_models_dir))
    from core.runs.registry import list_runs

    return list_runs(trained_models_dir)[0]


@pytest.fixture
def without_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PARU_MODELS_DIR", str(tmp_path / "no-models"))
    return tmp_path / "no-models"


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(page).run()
    return at


def plotly_charts(at: AppTest):
    return at.get("plotly_chart")


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


# --------------------------------------------------------------------------------------------------
# Every page, with and without a run
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", (None, *PAGES))
def test_every_page_runs_with_a_run(with_run, page):
    at = open_page(page)
    assert not at.exception, at.exception
    assert "not for clinical diagnosis" in texts(at.sidebar.caption)
    assert at.sidebar.selectbox(key="run_selector").value == str(with_run.path)


def test_home_shows_the_three_headline_figures_by_name(with_run):
    at = open_page()
    labels = [metric.label for metric in at.metric]
    assert labels[:2] == ["Overall accuracy", "Macro-F1"]
    assert "Mean one-vs-rest accuracy (the paper's 'accuracy' figure)" in labels
    assert "98.83%" in texts(at.info) and "99.42%" in texts(at.info)
    assert "not for clinical diagnosis" in texts(at.warning)


@pytest.mark.parametrize("page", (None, *PAGES))
def test_every_page_without_a_run_says_what_to_do(without_run, page):
    at = open_page(page)
    assert not at.exception, at.exception
    if page == "pages/4_Training.py":
        assert at.title[0].value.endswith("Training")
    else:
        assert "python -m core train --data DIR" in texts(at.warning)


def test_sidebar_menu_calls_the_home_page_home_and_lists_every_page(with_run):
    import tomllib

    at = open_page()
    labels = [link.proto.label for link in at.sidebar.get("page_link")]
    assert labels[:5] == ["Home", "Predict", "Evaluation", "Review", "Training"]
    assert "streamlit app" not in [label.lower() for label in labels]
    pages = [path for path in (PROJECT_ROOT / "pages").glob("*.py") if not path.name.startswith(("_", "."))]
    assert len(labels) == 1 + len(pages)
    # Streamlit's own menu (which says "streamlit app") stays hidden, or the sidebar would show two menus.
    config = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showSidebarNavigation"] is False


def test_core_ui_does_not_import_tensorflow():
    code = "import sys, core.ui, core.runs.review; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)


# --------------------------------------------------------------------------------------------------
# Predict
# --------------------------------------------------------------------------------------------------


def test_predict_shows_label_and_overlay(with_run):
    at = open_page("pages/1_Predict.py")
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    assert not at.exception, at.exception
    predicted = [metric for metric in at.metric if metric.label == "Predicted"]
    assert len(predicted) == 1 and predicted[0].value in with_run.classes
    assert len(at.image) >= 2  # The film and its Grad-CAM overlay.
    assert len(plotly_charts(at)) == 1
    assert at.download_button

    at.radio(key="cam_method").set_value("Grad-CAM++ (tf-keras-vis)").run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert len(at.image) >= 2


def test_probability_chart_has_no_mode_bar_over_its_labels(with_run):
    at = open_page("pages/1_Predict.py")
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    chart = plotly_charts(at)[0]
    assert json.loads(chart.proto.config) == {"displayModeBar": False}


def test_reruns_keep_the_loaded_model_warm(with_run, monkeypatch):
    """Streamlit clears the Keras session after every rerun unless core.ui stops it; the next prediction would
    then rebuild TensorFlow's kernels (about a second on two cores)."""
    import keras

    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *args, **kwargs: cleared.append(args))
    at = open_page("pages/1_Predict.py")
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    at.slider(key="cam_opacity").set_value(0.6).run()
    assert not at.exception, at.exception
    assert [metric.label for metric in at.metric].count("Predicted") == 1
    assert cleared == []


def test_corrupt_upload_shows_error_and_good_one_still_shows(with_run):
    at = open_page("pages/1_Predict.py")
    at.file_uploader[0].set_value([("broken.png", b"this is not a picture", "image/png"),
                                   ("good.png", png_bytes(1), "image/png")]).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "broken.png" in at.error[0].value
    assert [metric.label for metric in at.metric].count("Predicted") == 1


def test_a_colour_photo_gets_no_diagnosis_unless_revealed(with_run):
    rng = np.random.default_rng(0)
    photo = np.zeros((200, 300, 3), np.uint8)
    photo[..., 0], photo[60:140, 80:220, 2] = 210, 230
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)).save(buffer, "PNG")
    at = open_page("pages/1_Predict.py")
    at.file_uploader[0].upload("holiday.png", buffer.getvalue(), "image/png").run()
    assert not at.exception, at.exception
    assert any("No diagnosis shown" in warning.value and "colour" in warning.value for warning in at.warning)
    assert "Predicted" not in [metric.label for metric in at.metric]
    at.toggle[0].set_value(True).run()
    assert "Predicted" in [metric.label for metric in at.metric]


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def test_evaluation_shows_confusion_matrix_and_tables(with_run):
    at = open_page("pages/2_Evaluation.py")
    assert not at.exception, at.exception
    # Curves (2), confusion matrices (2), per-class bars, ROC.
    assert len(plotly_charts(at)) >= 5
    assert len(at.dataframe) >= 4  # Table 1, TP/FP/FN/TN, per-class metrics, calibration.
    assert "Confusion matrix (rows: true class)" in texts(at.subheader)
    assert at.download_button[0].label == "Download metrics.json"


def test_external_validation_warns_about_overlap(with_run, app_dataset, monkeypatch):
    monkeypatch.setenv("PARU_DATA_ROOT", str(app_dataset.parent))
    at = open_page("pages/2_Evaluation.py")
    at.text_input(key="external_folder").set_value(str(app_dataset))
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    # The run was trained on this very folder: every film is identical to one it saw.
    assert "not an independent test" in texts(at.warning)
    assert len(at.dataframe) >= 5


# --------------------------------------------------------------------------------------------------
# Review
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def review_run(monkeypatch, tmp_path, trained_models_dir):
    """A copy of the tiny run whose first test film is recorded as a Normal film read as Pneumonia."""
    from core.runs.registry import list_runs

    source = list_runs(trained_models_dir)[0]
    models_dir = tmp_path / "review-models"
    copy = models_dir / source.run_id
    shutil.copytree(source.path, copy)
    with open(copy / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    test_row = next(row for row in rows if row["subset"] == "test" and row["label"] == "Normal")
    test_row["predicted"] = "Pneumonia"
    test_row["p_Normal"], test_row["p_Pneumonia"] = "0.100000", "0.800000"
    with open(copy / "predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    return list_runs(models_dir)[0], test_row["file"]


def test_review_tags_persist(review_run):
    run, file = review_run
    at = open_page("pages/3_Review.py")
    assert not at.exception, at.exception
    assert "Normal → Pneumonia" in at.multiselect[0].value
    assert len(at.image) >= 2  # The film and its Grad-CAM.
    key = f"tag-{run.run_id}-{file}"
    at.selectbox(key=key).set_value("label error").run()
    assert not at.exception, at.exception
    assert at.selectbox(key=key).value == "label error"
    at.run()
    assert at.selectbox(key=key).value == "label error"

    from core.runs.review import load_tags

    assert load_tags(run.path)[file]["tag"] == "label error"
    # A new session (a browser reload) reads the tag back from the run folder.
    fresh = open_page("pages/3_Review.py")
    assert fresh.selectbox(key=key).value == "label error"


def test_review_tags_reject_unknown_tag(tmp_path):
    from core.runs.review import save_tag

    with pytest.raises(ValueError, match="must be one of"):
        save_tag(tmp_path, "a.png", "maybe")


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def test_training_runs_in_background_and_appears_in_selector(monkeypatch, tmp_path, app_dataset):
    from core.runs import jobs
    from core.runs.registry import list_runs

    models_dir = tmp_path / "train-models"
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("PARU_DATA_ROOT", str(app_dataset.parent))
    at = open_page("pages/4_Training.py")
    assert at.selectbox(key="train_folder_pick").value == str(app_dataset)
    at.radio(key="train_preset").set_value("paper").run()
    assert not at.error, texts(at.error)
    at.number_input(key="epochs-paper").set_value(2)
    at.selectbox(key="alpha-paper").set_value(0.35)
    at.number_input(key="batch-paper").set_value(8)
    at.number_input(key="size-paper").set_value(64)
    at.selectbox(key="weights-paper").set_value("none" if tiny_config().weights == "none" else "imagenet")
    at.form_submit_button[0].click().run()
    assert not at.exception, at.exception
    assert "Training started." in texts(at.success), texts(at.error)
    try:
        # A second start while the first runs is refused with a clear message.
        at.form_submit_button[0].click().run()
        assert "already running" in texts(at.warning)

        deadline = time.monotonic() + 150
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


def test_the_recommended_preset_offers_no_fine_tuning_it_would_refuse(monkeypatch, tmp_path, app_dataset):
    monkeypatch.setenv("PARU_MODELS_DIR", str(tmp_path / "train-models"))
    monkeypatch.setenv("PARU_DATA_ROOT", str(app_dataset.parent))
    at = open_page("pages/4_Training.py")
    at.radio(key="train_preset").set_value("recommended").run()
    assert not at.exception and not at.error, texts(at.error)
    fine_tuned = at.number_input(key="finetune-recommended")
    assert fine_tuned.value == 0 and fine_tuned.disabled
    assert "paper preset to fine-tune" in fine_tuned.help
    at.radio(key="train_preset").set_value("paper").run()
    assert at.number_input(key="finetune-paper").value == 12 and not at.number_input(key="finetune-paper").disabled


def test_folders_outside_the_data_roots_are_refused(with_run, app_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("PARU_DATA_ROOT", str(app_dataset.parent))
    at = open_page("pages/2_Evaluation.py")
    at.text_input(key="external_folder").set_value(str(app_dataset.parent / ".." / ".." )).run()
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    assert any("outside the data folders" in error.value for error in at.error)


# --------------------------------------------------------------------------------------------------
# Beyond the paper (issue #6): reliability diagrams, near-duplicates, mobile export, Grad-CAM regions,
# the model card's review section and the audit log page
# --------------------------------------------------------------------------------------------------


def chart_specs(at: AppTest) -> str:
    return "\n".join(chart.proto.spec for chart in plotly_charts(at))


def test_evaluation_draws_reliability_diagrams_for_validation_and_test(with_run):
    at = open_page("pages/2_Evaluation.py")
    assert not at.exception, at.exception
    specs = chart_specs(at)
    assert "Reliability, validation" in specs and "Reliability, test" in specs
    assert "before T (ECE" in specs and "after T (ECE" in specs
    assert "Calibration" in texts(at.subheader)


def test_external_validation_counts_resized_copies_of_training_films(with_run, app_dataset, monkeypatch, tmp_path):
    from core.runs.artifacts import read_split_csv

    train = [row for row in read_split_csv(with_run.path / "split.csv") if row["subset"] == "train"][:5]
    folder = tmp_path / "copies"
    for row in train:
        image = Image.open(app_dataset / row["path"]).convert("L").resize((72, 72), Image.Resampling.LANCZOS)
        (folder / row["label"]).mkdir(parents=True, exist_ok=True)
        image.save(folder / row["label"] / (Path(row["path"]).stem + ".jpg"), "JPEG", quality=85)
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path))
    at = open_page("pages/2_Evaluation.py")
    at.text_input(key="external_folder").set_value(str(folder))
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    warning = texts(at.warning)
    assert "0 films are identical" in warning and "5 are resized or re-encoded copies" in warning
    assert "not an independent test" in warning
    assert "Hamming distance of at most 32 of 256 bits" in texts(at.caption)
    matches = [frame.value for frame in at.dataframe if "Hamming distance" in frame.value.columns]
    assert len(matches) == 1 and len(matches[0]) == 5


def test_external_validation_says_when_the_perceptual_check_could_not_run(monkeypatch, tmp_path, trained_models_dir,
                                                                           app_dataset):
    import json

    from core.runs.registry import list_runs

    source = list_runs(trained_models_dir)[0]
    models_dir = tmp_path / "moved-models"
    copy = models_dir / source.run_id
    shutil.copytree(source.path, copy)
    # The run's films are no longer where it was trained, and it predates stored perceptual hashes.
    (copy / "perceptual_hashes.json").unlink()
    report = json.loads((copy / "data_report.json").read_text())
    report["root"] = str(tmp_path / "moved-away")
    (copy / "data_report.json").write_text(json.dumps(report))
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("PARU_DATA_ROOT", str(app_dataset.parent))
    at = open_page("pages/2_Evaluation.py")
    at.text_input(key="external_folder").set_value(str(app_dataset))
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    info = texts(at.info)
    assert "perceptual check (resized or re-encoded copies) could not be run" in info
    assert "not on this machine" in info
    assert "not an independent test" in texts(at.warning)  # The byte check still works from split.csv.


def test_evaluation_builds_a_mobile_export_once_and_offers_it(monkeypatch, tmp_path, trained_models_dir):
    from core.runs.registry import list_runs

    source = list_runs(trained_models_dir)[0]
    models_dir = tmp_path / "export-models"
    shutil.copytree(source.path, models_dir / source.run_id)
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    # An export cached under an older format (float16 before its small layers stayed float32) is not offered.
    stale = models_dir / source.run_id / "exports" / "float16.tflite"
    stale.parent.mkdir()
    stale.write_bytes(b"old export")
    at = open_page("pages/2_Evaluation.py")
    assert at.selectbox(key="export_variant").options == ["float16", "dynamic", "float32"]
    at.selectbox(key="export_variant").set_value("float16").run()
    assert not [button for button in at.download_button if button.label.endswith(".tflite")]
    at.button(key="export_go").click().run(timeout=600)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    exported = models_dir / source.run_id / "exports" / "float16-v2.tflite"
    assert exported.is_file() and exported.stat().st_size > 10_000
    assert "Download float16 .tflite" in [button.label for button in at.download_button]
    assert any(metric.label == "float16 .tflite size" for metric in at.metric)
    assert not list(exported.parent.glob(".*partial"))  # Written under a temporary name, then renamed.
    assert not list(exported.parent.glob(".*.json"))
    # Checked against the Keras model on the run's own films, and the figures shown beside the download.
    shown = texts(at.success) + texts(at.warning)
    n_films = len((source.path / "split.csv").read_text().strip().splitlines()) - 1
    assert f"Checked against the Keras model on {n_films} of the run's films: top-1 agreement" in shown
    # A later visit offers the cached file without building again.
    again = open_page("pages/2_Evaluation.py")
    assert "Download float16 .tflite" in [button.label for button in again.download_button]
    assert "export_go" not in [button.key for button in again.button]


def test_review_measures_grad_cam_regions_once(review_run):
    run, _ = review_run
    at = open_page("pages/3_Review.py")
    assert "Where the model looks (Grad-CAM mass)" in texts(at.subheader)
    at.button(key="cam_regions_go").click().run()
    assert not at.exception, at.exception
    table = next(frame.value for frame in at.dataframe if "Border band" in frame.value.columns)
    assert list(table[""]) == ["Right answers", "Wrong answers", "Uniform map (area shares)"]
    assert (run.path / "cam_regions.json").is_file()
    assert "test films explained" in texts(at.caption)
    assert "Grad-CAM mass:" in texts(at.caption)  # Each reviewed film shows its own shares.
    # A new session shows the saved analysis without a button to recompute it.
    fresh = open_page("pages/3_Review.py")
    assert "cam_regions_go" not in [button.key for button in fresh.button]
    assert any("Border band" in frame.value.columns for frame in fresh.dataframe)


def test_review_tags_update_the_model_card(review_run):
    run, file = review_run
    at = open_page("pages/3_Review.py")
    assert "Download model card" in [button.label for button in at.download_button]
    at.text_input(key=f"note-{run.run_id}-{file}").set_value("blurred film, label doubtful")
    at.selectbox(key=f"tag-{run.run_id}-{file}").set_value("label error").run()
    assert not at.exception, at.exception
    card = (run.path / "model_card.md").read_text()
    assert "## Failure modes seen in review" in card
    assert "| label error | 1 | Normal -> Pneumonia (1) |" in card
    assert "blurred film, label doubtful" in card


def _write_audit(models_dir: Path, entries: list[dict]) -> None:
    import json

    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "audit.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def test_audit_page_lists_filters_and_downloads(monkeypatch, tmp_path):
    models_dir = tmp_path / "audit-models"
    entry = {"probabilities": {}, "error": None, "file_name": "x.png", "label": "Normal", "confidence": 0.7}
    _write_audit(models_dir, [
        {**entry, "time": "2026-01-01T10:00:00+00:00", "sha256": "a" * 64, "run_id": "run-a",
         "gate": {"passed": True, "reason": None}},
        {**entry, "time": "2026-01-01T11:00:00+00:00", "sha256": "b" * 64, "run_id": "run-b", "gate": None},
        {**entry, "time": "2026-01-01T12:00:00+00:00", "sha256": "c" * 64, "run_id": "run-a",
         "gate": {"passed": False, "reason": "a colour photograph"}},
    ])
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    at = open_page("pages/5_Audit.py")
    assert not at.exception, at.exception
    assert "Images are never stored" in texts(at.info)
    table = at.dataframe[0].value
    assert list(table["sha256"]) == ["c" * 64, "b" * 64, "a" * 64]  # Newest first.
    assert {"time", "sha256", "run_id", "label", "gate_passed"} <= set(table.columns)
    assert [button.label for button in at.download_button] == ["Download JSONL", "Download CSV"]
    at.selectbox(key="audit_run").set_value("run-a").run()
    assert list(at.dataframe[0].value["sha256"]) == ["c" * 64, "a" * 64]
    assert at.dataframe[0].value["gate_reason"].iloc[0] == "a colour photograph"


def test_audit_page_shows_a_prediction_made_on_the_predict_page(with_run):
    import hashlib

    data = png_bytes(2, seed=777)
    at = open_page("pages/1_Predict.py")
    at.file_uploader[0].upload("audited.png", data, "image/png").run()
    assert not at.exception, at.exception
    at.switch_page("pages/5_Audit.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["sha256"].iloc[0] == hashlib.sha256(data).hexdigest()
    assert table["run_id"].iloc[0] == with_run.run_id


def test_audit_page_without_a_log_says_what_to_do(without_run):
    at = open_page("pages/5_Audit.py")
    assert not at.exception, at.exception
    assert "No prediction recorded yet" in texts(at.warning)
