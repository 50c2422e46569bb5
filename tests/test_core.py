"""Behaviour of the pipeline a user relies on: layouts, the fine-tuning boundary, runs that never
damage each other, and train -> evaluate -> predict end to end."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CLASS_NAMES, PROJECT_ROOT, SHARED_DATA, make_dataset, tiny_config

METRIC_KEYS = {"classes", "n", "accuracy", "mean_ovr_accuracy", "macro", "weighted", "per_class",
               "confusion_matrix", "ci95", "clinical_bar"}
PER_CLASS_KEYS = {"precision", "recall", "f1", "ovr_accuracy", "tp", "fp", "fn", "tn", "support", "roc_auc"}


# Dataset layouts -------------------------------------------------------------------------------------


def test_folder_names_people_download_map_to_the_paper_classes(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=3, class_folders=("NORMAL", "PNEUMONIA", "No Finding_extra"))
    # "No Finding_extra" is not an alias: it stays its own class, so aliases must be exact.
    scan = scan_dataset(tmp_path, image_size=64)
    assert scan.class_names == ["Normal", "Pneumonia", "No Finding_extra"]
    (tmp_path / "No Finding_extra").rename(tmp_path / "No Finding")
    scan = scan_dataset(tmp_path, image_size=64)
    # NORMAL and No Finding both mean Normal; the generated films differ, so nothing is ambiguous.
    assert scan.class_counts()["Normal"] == 6


def test_kaggle_presplit_layout_keeps_test_and_carves_validation_from_train(tmp_path):
    from core.data.scan import assign_subsets, scan_dataset

    make_dataset(tmp_path / "train", per_class=10, class_folders=("NORMAL", "PNEUMONIA"), seed=1)
    make_dataset(tmp_path / "test", per_class=4, class_folders=("NORMAL", "PNEUMONIA"), seed=2)
    scan = scan_dataset(tmp_path, image_size=64)
    assert scan.layout == "presplit"
    subsets = assign_subsets(scan, seed=0)
    given = np.array([record.given_subset for record in scan.records])
    assert set(subsets[given == "test"]) == {"test"}
    assert set(subsets[given == "train"]) == {"train", "val"}
    assert (subsets == "val").sum() >= 2


def test_corrupt_and_unsupported_files_are_skipped_with_a_reason_not_fatal(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=4, class_folders=("Normal", "Pneumonia"))
    (tmp_path / "Normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (tmp_path / "Normal" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Pneumonia" / "notes.txt").write_text("not a film")
    scan = scan_dataset(tmp_path, image_size=64)
    reasons = {item["path"]: item["reason"] for item in scan.skipped}
    assert set(reasons) == {"Normal/broken.png", "Normal/empty.jpg", "Pneumonia/notes.txt"}
    assert "unsupported file type '.txt'" in reasons["Pneumonia/notes.txt"]
    assert "empty" in reasons["Normal/empty.jpg"]
    assert len(scan.records) == 8 and scan.images.shape == (8, 64, 64, 1)


def test_the_same_bytes_under_two_classes_are_skipped_as_ambiguous(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=4, class_folders=("Normal", "Pneumonia"))
    source = tmp_path / "Normal" / "Nor_000.png"
    (tmp_path / "Pneumonia" / "copy.png").write_bytes(source.read_bytes())
    scan = scan_dataset(tmp_path, image_size=64)
    ambiguous = [item["path"] for item in scan.skipped if "several classes" in item["reason"]]
    assert sorted(ambiguous) == ["Normal/Nor_000.png", "Pneumonia/copy.png"]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "has no class folders"),
        (lambda root: [(root / c).mkdir(parents=True) for c in ("Normal", "Pneumonia")], "are empty"),
        (lambda root: make_dataset(root, per_class=5, class_folders=("Normal",)), "Only one class"),
        (lambda root: make_dataset(root, per_class=2, class_folders=("Normal", "Pneumonia")), "at least 3"),
    ],
    ids=["missing", "no-class-folders", "empty-class-folders", "single-class", "too-few-for-split"],
)
def test_impossible_datasets_fail_before_training_with_a_clear_message(tmp_path, build, message):
    from core.data.scan import assign_subsets, scan_dataset

    root = tmp_path / "data"
    build(root)
    with pytest.raises(ValueError, match=message):
        assign_subsets(scan_dataset(root, image_size=64))


# The model ------------------------------------------------------------------------------------------


def test_exactly_the_last_12_backbone_layers_are_trainable_and_batch_norm_stays_frozen():
    import keras

    from core.model import LAST_CONV_LAYER_NAME, backbone_layers, build_model

    model = build_model(tiny_config(weights="none"), num_classes=4)
    layers = backbone_layers(model)
    last_12 = layers[-12:]
    for layer in layers[:-12]:
        assert not layer.trainable, layer.name
    for layer in last_12:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable is (not is_bn), layer.name
    assert LAST_CONV_LAYER_NAME in [layer.name for layer in last_12]
    assert all(model.get_layer(name).trainable for name in ("head_bn", "predictions"))
    # Flat model: Grad-CAM reaches Conv_1 directly.
    assert model.get_layer(LAST_CONV_LAYER_NAME) is not None


@pytest.mark.parametrize("scaling, expected", [("unit", (0.0, 1.0)), ("symmetric", (-1.0, 1.0))])
def test_pixel_scaling_lives_inside_the_model(scaling, expected):
    import keras

    from core.model import build_model

    model = build_model(tiny_config(weights="none", scaling=scaling), num_classes=2)
    scaled = keras.Model(model.input, model.get_layer("scaling").output)
    film = np.zeros((1, 64, 64, 1), np.float32)
    film[:, :, 32:] = 255.0
    out = np.asarray(scaled(film))
    assert np.isclose(out.min(), expected[0]) and np.isclose(out.max(), expected[1])


def test_missing_local_weights_file_says_what_to_do(tmp_path):
    from core.model import build_model

    with pytest.raises(ValueError, match="does not exist. Use 'imagenet'"):
        build_model(tiny_config(weights=str(tmp_path / "nope.h5")), num_classes=2)


# Runs ----------------------------------------------------------------------------------------------


def test_finished_run_has_every_file_and_the_metrics_schema(tiny_run):
    from core.runs.registry import list_runs, load_run

    for name in ("model.keras", "config.json", "classes.json", "split.csv", "history.csv", "metrics.json",
                 "predictions.csv", "data_report.json", "model_card.md", "status.json"):
        assert (tiny_run / name).is_file(), name
    run = load_run(tiny_run)
    assert run.classes == list(CLASS_NAMES)
    metrics = run.metrics
    assert METRIC_KEYS <= set(metrics)
    assert set(metrics["per_class"]["Normal"]) == PER_CLASS_KEYS
    assert metrics["n"] == sum(metrics["per_class"][c]["support"] for c in CLASS_NAMES)
    assert 1 <= metrics["training"]["best_epoch"] <= 2
    header = (tiny_run / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header == ["file", "label", "predicted", *[f"p_{c}" for c in CLASS_NAMES], "subset"]
    assert "not for clinical" in (tiny_run / "model_card.md").read_text().lower()
    assert [r.path for r in list_runs(tiny_run.parent)] == [tiny_run]
    # Every epoch's row says how long its training batches took, validation apart (bench/train.py reads it).
    with open(tiny_run / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert history and all(0 < float(row["train_seconds"]) <= float(row["epoch_seconds"]) for row in history)


def test_head_on_features_keeps_the_backbone_and_keeps_the_best_epochs_head(tiny_dataset, tmp_path):
    """The recommended recipe's path: ImageNet backbone untouched, head = standardise + the best epoch's Dense."""
    import keras

    from core.data.scan import read_split_csv
    from core.serving.gate import pooled_features
    from core.imaging.loader import load_image
    from core.model import build_model, load_model
    from core.training.run import train_run

    config = tiny_config(preset="recommended", scaling="symmetric", fine_tune_layers=0, head_on_features=True,
                         rotation_degrees=0.0, zoom=0.0, brightness=0.0, dropout=0.0, head_l2=0.1,
                         learning_rate=1e-2, lr_decay=1.0, epochs=30, early_stopping_patience=5)
    run_dir = train_run(tiny_dataset, config, models_dir=tmp_path, log=lambda line: None)
    model, fresh = load_model(run_dir / "model.keras"), build_model(config, num_classes=4)
    for name in ("Conv1", "block_8_expand", "Conv_1", "Conv_1_bn"):
        for trained, initial in zip(model.get_layer(name).get_weights(), fresh.get_layer(name).get_weights()):
            np.testing.assert_array_equal(trained, initial, err_msg=name)

    rows = read_split_csv(run_dir / "split.csv")
    films = {subset: np.stack([load_image(tiny_dataset / row["path"], 64) for row in rows
                               if row["subset"] == subset]) for subset in ("train", "val")}
    val_labels = np.array([CLASS_NAMES.index(row["label"]) for row in rows if row["subset"] == "val"])
    # The head's BatchNormalization standardises by the training films' features and their mirror images.
    train_features = pooled_features(model, np.concatenate([films["train"], films["train"][:, :, ::-1]]))
    _, _, mean, variance = model.get_layer("head_bn").get_weights()
    np.testing.assert_allclose(mean, train_features.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(variance, train_features.var(axis=0), rtol=1e-3, atol=1e-5)

    # The saved head is the best epoch's: its validation loss (cross-entropy plus the L2 term) is the
    # lowest in history.csv, and training ran past that epoch.
    with open(run_dir / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert {row["phase"] for row in history} == {"head"}
    best = min(history, key=lambda row: float(row["val_loss"]))
    assert len(history) > int(best["epoch"]) > 1
    probabilities = np.asarray(model.predict(films["val"], verbose=0))
    cross_entropy = -np.mean(np.log(probabilities[np.arange(len(val_labels)), val_labels]))
    penalty = 0.1 * np.sum(model.get_layer("predictions").get_weights()[0] ** 2)
    assert abs(cross_entropy + penalty - float(best["val_loss"])) < 1e-3
    assert json.loads((run_dir / "metrics.json").read_text())["training"]["best_epoch"] == int(best["epoch"])
    assert "kept as it is (not fine-tuned)" in (run_dir / "model_card.md").read_text()
    assert isinstance(model.get_layer("predictions").kernel_regularizer, keras.regularizers.L2)


@pytest.mark.parametrize("changes, message", [
    (dict(fine_tune_layers=12), "set fine_tune_layers=0 and warmup_epochs=0"),
    (dict(rotation_degrees=10.0), "only horizontal_flip augmentation applies"),
])
def test_head_on_features_refuses_settings_it_would_ignore(changes, message):
    from core.config import preset

    assert preset("recommended").head_on_features
    with pytest.raises(ValueError, match=message):
        preset("recommended", **changes)


def test_a_failed_training_never_harms_the_previous_run(tiny_run, tmp_path):
    from core.runs.registry import list_runs, load_run
    from core.training.run import train_run

    models_dir = tiny_run.parent
    before = (tiny_run / "model.keras").read_bytes()
    with pytest.raises(ValueError, match="never overwrites"):
        train_run(tmp_path, tiny_config(), out_dir=tiny_run, models_dir=models_dir)
    bad = make_dataset(tmp_path / "bad", per_class=2, class_folders=("Normal", "Pneumonia"))
    with pytest.raises(ValueError, match="at least 3"):
        train_run(bad, tiny_config(), models_dir=models_dir, log=lambda line: None)
    assert (tiny_run / "model.keras").read_bytes() == before
    assert [r.path for r in list_runs(models_dir)] == [tiny_run]
    load_run(tiny_run)
    last = json.loads((models_dir / ".last_job.json").read_text())
    assert last["state"] == "failed" and "at least 3" in last["error"]
    assert not (models_dir / ".train.lock").exists()


def test_stale_lock_is_taken_over_but_a_live_one_blocks(tmp_path):
    from core.runs.jobs import TrainingBusyError, acquire_lock, release_lock

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".train.lock").write_text(json.dumps({"pid": sleeper.pid, "run_id": "other"}))
        with pytest.raises(TrainingBusyError, match="other is already running"):
            acquire_lock(tmp_path, {"run_id": "mine"})
    finally:
        sleeper.kill()
        sleeper.wait()
    acquire_lock(tmp_path, {"run_id": "mine"})  # The holder is dead now: stale, taken over.
    assert json.loads((tmp_path / ".train.lock").read_text())["run_id"] == "mine"
    release_lock(tmp_path)
    assert not (tmp_path / ".train.lock").exists()


def test_sigkill_mid_training_leaves_earlier_runs_intact_and_does_not_block_the_next(tiny_run, tmp_path):
    from core.runs.jobs import acquire_lock, job_status, release_lock
    from core.runs.registry import list_runs, load_run

    models_dir = tmp_path / "models"
    models_dir.mkdir()
    previous = models_dir / tiny_run.name
    import shutil

    shutil.copytree(tiny_run, previous)
    config_path = tmp_path / "config.json"
    tiny_config(epochs=200, early_stopping_patience=0).save(config_path)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "train", "--data", str(_dataset_of(tiny_run)), "--config", str(config_path), "--models-dir", str(models_dir)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            progress = job_status(models_dir).progress or {}
            if progress.get("epoch", 0) >= 1 and progress.get("batch", 0) >= 1:
                break
            assert process.poll() is None, "training ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("training never reported progress")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert [r.path.name for r in list_runs(models_dir)] == [previous.name]
    load_run(previous)
    assert job_status(models_dir).running is False
    acquire_lock(models_dir, {"run_id": "next"})  # The dead job's lock does not block the next one.
    release_lock(models_dir)


def _dataset_of(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "data_report.json").read_text())["root"])


# Evaluate and predict -----------------------------------------------------------------------------


def test_evaluate_external_folder_has_the_metrics_schema_and_flags_overlap(tiny_run, tmp_path):
    from core.evaluation.evaluate import evaluate_folder

    dataset = _dataset_of(tiny_run)
    out = tmp_path / "external.json"
    result = subprocess.run(
        [sys.executable, "-m", "core", "evaluate", "--model", str(tiny_run), "--data", str(dataset),
         "--json", str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n"] == 48
    # The run trained on this very folder: every training/validation film is an identical file.
    assert metrics["overlap"]["identical_files"] >= 30
    assert "WARNING" in result.stdout
    assert evaluate_folder(tiny_run, dataset)["accuracy"] == metrics["accuracy"]


def test_cli_predict_json_reports_each_file_and_exits_2_on_bad_input(tiny_run, tmp_path):
    good = next((_dataset_of(tiny_run) / "Normal").glob("*.png"))
    bad = tmp_path / "bad.png"
    bad.write_text("this is a text file")
    cam_dir = tmp_path / "cams"
    result = subprocess.run(
        [sys.executable, "-m", "core", "predict", "--model", str(tiny_run), str(good), str(bad),
         str(tmp_path / "missing.png"), "--json", "--cam-dir", str(cam_dir)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(good), str(bad), str(tmp_path / "missing.png")]
    assert lines[0]["label"] in CLASS_NAMES
    assert set(lines[0]["probabilities"]) == set(CLASS_NAMES)
    assert abs(sum(lines[0]["probabilities"].values()) - 1) < 1e-4
    assert lines[0]["confidence"] == max(lines[0]["probabilities"].values())
    assert set(lines[0]["gate"]) >= {"passed", "reason"}
    assert "error" in lines[1] and "error" in lines[2]
    assert len(list(cam_dir.glob("*.png"))) == 1


def test_cli_predict_takes_a_folder_and_answers_every_film_in_it(tiny_run, tmp_path):
    import shutil

    dataset = tmp_path / "films"
    shutil.copytree(_dataset_of(tiny_run), dataset)
    (dataset / "Normal" / "notes.txt").write_text("not a film")  # Not a film type: not listed at all.
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--model", str(tiny_run), "--json", str(dataset)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    films = sorted(str(path) for path in dataset.rglob("*.png"))
    assert sorted(line["file"] for line in lines) == films
    assert all(line["label"] in CLASS_NAMES and "passed" in line["gate"] for line in lines)


def test_cli_split_lays_out_the_runs_exact_split_as_folders_that_read_back_the_same(tiny_run, tmp_path):
    from core.data.scan import assign_subsets, read_split_csv, scan_dataset

    out = tmp_path / "laid-out"
    result = subprocess.run([sys.executable, "-m", "core", "split", "--model", str(tiny_run), "--out", str(out)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(str(out))
    expected = {row["sha256"]: row["subset"] for row in read_split_csv(tiny_run / "split.csv")}
    scan = scan_dataset(out, decode=False)
    assert scan.layout != "class_folders" and not scan.skipped
    read_back = dict(zip((record.sha256 for record in scan.records), assign_subsets(scan)))
    assert read_back == expected

    # The dataset moved and lost a film: the rest is laid out (copies here), the missing film is named.
    moved = tmp_path / "moved"
    subprocess.run(["cp", "-r", str(_dataset_of(tiny_run)), str(moved)], check=True)
    lost = read_split_csv(tiny_run / "split.csv")[0]["path"]
    (moved / lost).unlink()
    result = subprocess.run([sys.executable, "-m", "core", "split", "--model", str(tiny_run), "--out",
                             str(tmp_path / "copied"), "--copy", "--data", str(moved)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "1 films of the split are missing" in result.stderr and lost in result.stderr
    copied = [path for path in (tmp_path / "copied").rglob("*.png")]
    assert len(copied) == len(expected) - 1 and not any(path.is_symlink() for path in copied)


def test_predictor_agrees_with_evaluation_and_batch_prediction(tiny_run):
    from core.evaluation.evaluate import read_predictions_csv
    from core.serving.predict import Predictor
    from core.runs.registry import load_run

    run = load_run(tiny_run)
    predictor = Predictor(run, calibrated=False)
    rows = read_predictions_csv(tiny_run / "predictions.csv", run.classes)[:6]
    paths = [_dataset_of(tiny_run) / row["file"] for row in rows]
    singles = [predictor.predict(path, with_cam=True) for path in paths]
    batch = predictor.predict_files(paths)
    for row, single, batched in zip(rows, singles, batch):
        for name in run.classes:
            assert single.probabilities[name] == pytest.approx(row["probabilities"][name], abs=1e-4)
            assert batched.probabilities[name] == pytest.approx(row["probabilities"][name], abs=1e-4)
        assert single.cam.shape == (64, 64)


# Real films -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir(), reason="../shared/data/samples is absent")
def test_end_to_end_on_real_films_with_patient_aware_split(tmp_path):
    from core.data.scan import read_split_csv
    from core.serving.predict import Predictor
    from core.training.run import train_run

    run_dir = train_run(SHARED_DATA / "samples", tiny_config(image_size=96, epochs=1),
                        models_dir=tmp_path, log=lambda line: None)
    rows = read_split_csv(run_dir / "split.csv")
    assert len(rows) == 40
    subsets_of_patient = {}
    for row in rows:
        subsets_of_patient.setdefault(row["patient_id"], set()).add(row["subset"])
    assert all(len(s) == 1 for s in subsets_of_patient.values())
    film = next((SHARED_DATA / "samples" / "Pneumothorax").glob("*.png"))
    result = Predictor(run_dir).predict(film, with_cam=True, display=True)
    assert result.error is None and result.label in CLASS_NAMES
    assert result.gray.ndim == 2 and np.isfinite(result.cam).all()


def test_two_quick_starts_launch_one_training(tiny_run, tmp_path):
    from core.runs.jobs import TrainingBusyError, job_status, request_stop, start_training

    config_path = tmp_path / "config.json"
    tiny_config(epochs=200, early_stopping_patience=0).save(config_path)
    models_dir = tmp_path / "models"
    first = start_training(_dataset_of(tiny_run), config_path, models_dir)
    try:
        # No waiting: the lock is held for the child from the moment start_training returns.
        with pytest.raises(TrainingBusyError, match="already running"):
            start_training(_dataset_of(tiny_run), config_path, models_dir)
        assert job_status(models_dir).running
    finally:
        request_stop(models_dir)
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    assert not job_status(models_dir).running


def test_typed_folders_cannot_escape_the_data_roots(tmp_path):
    from core.data.paths import confine_to_roots

    root = tmp_path / "data"
    (root / "nih").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert confine_to_roots(root / "nih", [root]) == (root / "nih").resolve()
    for attempt in (root / ".." / "secret", root / "escape", "/etc"):
        with pytest.raises(ValueError, match="outside the data folders"):
            confine_to_roots(attempt, [root])


@pytest.mark.parametrize("error_number, words", [(28, "No space left on device"), (30, "Read-only file system")])
def test_full_disk_or_read_only_models_folder_gives_a_clear_message(tiny_dataset, tmp_path, monkeypatch,
                                                                     error_number, words):
    import tempfile

    from core.training.run import train_run

    def refuse(*args, **kwargs):
        raise OSError(error_number, words)

    # Root ignores permission bits, so the operating system's refusal is simulated where Paru probes.
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(ValueError, match=f"Cannot write to .*{words}.*free disk space"):
        train_run(tiny_dataset, tiny_config(), models_dir=tmp_path / "models", log=lambda line: None)


def test_mirrored_strategy_trains_on_two_logical_cpu_devices(tiny_dataset, tmp_path):
    """The `distribute: mirrored` path a multi-GPU host takes, run here on two logical CPU devices."""
    script = f"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {str(PROJECT_ROOT)!r})
sys.path.insert(0, {str(PROJECT_ROOT / "tests")!r})
from conftest import tiny_config
from core.training.run import train_run
lines = []
run = train_run({str(tiny_dataset)!r}, tiny_config(distribute="mirrored", epochs=1),
                models_dir={str(tmp_path / "models")!r}, log=lines.append)
print(json.dumps({{"run": str(run), "log": lines}}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert any("mirrored): 2 replicas" in line for line in output["log"])
    from core.runs.registry import load_run

    run = load_run(output["run"])
    assert run.config["distribute"] == "mirrored"
    assert run.metrics["n"] > 0 and (Path(output["run"]) / "model.keras").is_file()
