"""The Training page: the folder check, the recipe form, and a background job (a fake child with the real
lock, progress and outcome files; tests/system runs a real training through the page)."""

from __future__ import annotations

import time

from app.conftest import open_page, start_tiny_training, texts
from conftest import make_dataset
from core.runs import jobs
from core.runs.registry import list_runs
from core.ui import navigation
from core.ui.training import duration_text, progress_summary

TRAINING = navigation.TRAINING.script


# The tests that need no run come first: they run while the session's tiny run is still being trained.


def test_the_folder_check_refuses_an_impossible_split_before_start(monkeypatch, tmp_path):
    monkeypatch.setenv("PARU_MODELS_DIR", str(tmp_path / "train-models"))
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "data"))
    dataset = make_dataset(tmp_path / "data" / "two-pneumonia", per_class=6, class_folders=("Normal", "Pneumonia"))
    for film in sorted((dataset / "Pneumonia").iterdir())[2:]:
        film.unlink()
    at = open_page(TRAINING)
    assert not at.exception, at.exception
    assert any("cannot be split for training" in error.value and "needs at least 3 groups" in error.value
               for error in at.error), texts(at.error)
    assert at.form_submit_button[0].disabled


def test_progress_summary_says_where_the_job_is():
    assert progress_summary(None) == (0.0, "Starting…")
    assert progress_summary({"phase": "checking", "files_done": 5, "files_total": 20}) == (0.25,
                                                                                           "Checking films: 5/20")
    fraction, text = progress_summary({"phase": "features"})
    assert fraction == 0.0 and text.startswith("Computing the backbone's features")
    # The feature phase shows its progress, and no time left until this run has measured enough.
    fraction, text = progress_summary({"phase": "features", "features_done": 128, "features_total": 512,
                                       "eta_seconds": None})
    assert fraction == 0.25 and text.endswith(": 128/512 films, estimating the time left…")
    assert progress_summary({"phase": "recommended", "epoch": 1, "epochs": 40, "batch": 1, "batches": 20,
                             "eta_seconds": None})[1].endswith("batch 1/20, estimating the time left…")
    assert progress_summary({"phase": "paper", "epoch": 1, "epochs": 5, "batch": 4, "batches": 9,
                             "eta_seconds": 30, "eta_is_lower_bound": True})[1].endswith(
        "at least 30 s left (validation not timed yet)")
    assert progress_summary({"phase": "done"}) == (1.0, "Done")
    assert progress_summary({"phase": "evaluating"})[0] == 1.0
    fraction, text = progress_summary({"phase": "paper", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10,
                                       "eta_seconds": 42})
    assert fraction == 0.375 and text == "Phase paper: epoch 2/4, batch 5/10, about 42 s left"
    assert duration_text(185) == "3 min 5 s"


def test_progress_fraction_stays_in_range():
    assert jobs.progress_fraction({"phase": "paper", "epoch": 9, "epochs": 2, "batch": 9, "batches": 2}) == 1.0
    assert jobs.progress_fraction({"phase": "paper", "epoch": 0, "epochs": 2, "batch": 0, "batches": 2}) == 0.0
    assert jobs.progress_fraction({"phase": "checking", "files_done": 3, "files_total": 0}) == 0.0


def test_training_runs_in_background_and_appears_in_selector(monkeypatch, tmp_path, data_root, fake_training):
    models_dir = tmp_path / "train-models"
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    at = open_page(TRAINING)
    assert at.selectbox(key="train_folder_pick").value == str(data_root)
    assert "usable films" in texts(at.markdown)
    start_tiny_training(at)
    config = sorted((models_dir / ".jobs").glob("config-*.json"))
    assert len(config) == 1 and '"image_size": 64' in config[0].read_text()

    # While it runs, Start is disabled and the page says what runs.
    deadline = time.monotonic() + 30
    while "fake-1-data" not in str((jobs.job_status(models_dir).lock or {}).get("run_id")) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    at.run()
    assert at.form_submit_button[0].disabled
    assert "fake-1-data** is running on" in texts(at.info)
    # A reload mid-training shows the running job's dataset and recipe, not the defaults, and no Start.
    reloaded = open_page(TRAINING)
    assert reloaded.text_input(key="train_folder_typed").value == str(data_root)
    assert reloaded.radio(key="train_preset").value == "paper"
    assert reloaded.number_input(key="size-paper").value == 64 and reloaded.number_input(key="epochs-paper").value == 2
    assert reloaded.form_submit_button[0].disabled
    assert "the paper recipe (2 epochs, alpha 0.35, batch 8, 64 px" in texts(reloaded.info)
    # The running job's progress, read from its progress.json.
    def progress_text() -> str:
        return " ".join(element.proto.text for element in at.get("progress"))

    deadline = time.monotonic() + 30
    while "epoch" not in progress_text() and time.monotonic() < deadline:
        time.sleep(0.2)
        at.run()
    assert "fake-1-data — Phase paper: epoch 1/2, batch 3/4, about 1 min 15 s left" in progress_text()
    assert "Cancel training" in [button.label for button in at.button]

    fake_training(models_dir)
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
    finished = texts(at.success)
    assert "Last training finished" in finished
    # Its test figures with their intervals, and links to use and read it.
    assert "Overall accuracy" in finished and "Macro-F1" in finished and "(95% CI" in finished
    assert {"Use this model", "Open evaluation"} <= {button.label for button in at.button}
    assert not at.form_submit_button[0].disabled
    at.button(key="open_trained_evaluation").click().run()
    assert not at.exception, at.exception
    assert "📊 Evaluation" in texts(at.title)


def test_the_recommended_preset_offers_no_fine_tuning_it_would_refuse(monkeypatch, tmp_path, data_root):
    monkeypatch.setenv("PARU_MODELS_DIR", str(tmp_path / "train-models"))
    at = open_page(TRAINING)
    at.radio(key="train_preset").set_value("recommended").run()
    assert not at.exception and not at.error, texts(at.error)
    fine_tuned = at.number_input(key="finetune-recommended")
    assert fine_tuned.value == 0 and fine_tuned.disabled
    assert "paper preset to fine-tune" in fine_tuned.help
    at.radio(key="train_preset").set_value("paper").run()
    assert at.number_input(key="finetune-paper").value == 12 and not at.number_input(key="finetune-paper").disabled


def test_a_typed_folder_outside_the_data_roots_is_refused(monkeypatch, tmp_path, data_root):
    monkeypatch.setenv("PARU_MODELS_DIR", str(tmp_path / "train-models"))
    at = open_page(TRAINING)
    at.text_input(key="train_folder_typed").set_value("/etc").run()
    assert not at.exception, at.exception
    assert any("outside the data folders" in error.value for error in at.error)
    assert at.form_submit_button[0].disabled


def test_a_weights_file_under_the_data_root_or_keras_home_is_offered(monkeypatch, tmp_path, data_root):
    monkeypatch.setenv("PARU_MODELS_DIR", str(tmp_path / "train-models"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    (tmp_path / "keras" / "models").mkdir(parents=True)
    in_keras_home = tmp_path / "keras" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    in_keras_home.write_bytes(b"")
    under_root = data_root.parent / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    under_root.parent.mkdir(exist_ok=True)
    under_root.write_bytes(b"")
    try:
        at = open_page(TRAINING)
        at.radio(key="train_preset").set_value("paper").run()
        options = at.selectbox(key="weights-paper").options
        assert options[:2] == ["imagenet", "none"]
        assert in_keras_home.name in options and under_root.name in options
    finally:
        under_root.unlink()
        under_root.parent.rmdir()
