"""Training a run: every file and the metrics schema, the head-on-features recipe, the heatmap check that
ends a training, and runs that never damage each other. The tests that need no tiny run come first, so a
process that runs this file while another trains the tiny run has work meanwhile."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import CLASS_NAMES, METRIC_KEYS, PER_CLASS_KEYS, copy_run, make_dataset, tiny_config


@pytest.fixture(scope="module")
def head_on_features_run(tiny_dataset, tmp_path_factory):
    """(run folder, config, progress records) of ONE training of the recommended recipe's path (a head
    trained on the backbone's features) on the tiny dataset, ending with the heatmap check on 2 films; the
    progress records are what progress.json said when the log first announced the heatmap check."""
    from core.training.run import train_run

    models_dir, seen = tmp_path_factory.mktemp("head-on-features"), []

    def log(line):
        if line.startswith("Checking the heatmaps") and not seen:
            (staging,) = models_dir.glob(".*.partial")
            seen.append(json.loads((staging / "progress.json").read_text()))

    config = tiny_config(preset="recommended", scaling="symmetric", fine_tune_layers=0, head_on_features=True,
                         rotation_degrees=0.0, zoom=0.0, brightness=0.0, dropout=0.0, head_l2=0.1,
                         learning_rate=1e-2, lr_decay=1.0, epochs=30, early_stopping_patience=5,
                         explain_check_films=2)
    return train_run(tiny_dataset, config, models_dir=models_dir, log=log), config, seen


def test_head_on_features_keeps_the_backbone_and_keeps_the_best_epochs_head(head_on_features_run, tiny_dataset):
    """The recommended recipe's path: ImageNet backbone untouched, head = standardise + the best epoch's Dense."""
    import keras

    from core.runs.artifacts import read_split_csv
    from core.serving.gate import pooled_features
    from core.imaging.loader import load_image
    from core.model import build_model, load_model

    run_dir, config, _ = head_on_features_run
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
    probabilities = np.asarray(model(films["val"].astype(np.float32), training=False))  # Eager: nothing to compile.
    cross_entropy = -np.mean(np.log(probabilities[np.arange(len(val_labels)), val_labels]))
    penalty = 0.1 * np.sum(model.get_layer("predictions").get_weights()[0] ** 2)
    assert abs(cross_entropy + penalty - float(best["val_loss"])) < 1e-3
    assert json.loads((run_dir / "metrics.json").read_text())["training"]["best_epoch"] == int(best["epoch"])
    assert "kept as it is (not fine-tuned)" in (run_dir / "model_card.md").read_text()
    assert isinstance(model.get_layer("predictions").kernel_regularizer, keras.regularizers.L2)


def test_training_ends_with_the_heatmap_check_in_the_run_and_its_card(head_on_features_run):
    from core.runs import jobs
    from core.runs.artifacts import MODEL_CARD_FILE_NAME, read_explain_check
    from core.ui.training import progress_summary

    run_dir, _, seen = head_on_features_run
    report = read_explain_check(run_dir)
    assert report["run_id"] == run_dir.name and report["n_films"] == 2 and report["method"] == "gradcam"
    assert report["verdict"]["text"] in (run_dir / MODEL_CARD_FILE_NAME).read_text()
    assert seen[0]["phase"] == "heatmaps" and jobs.progress_fraction(seen[0]) == 1.0
    assert progress_summary(seen[0])[1].startswith("Checking the heatmaps")


def test_a_fit_traces_its_training_step_once():
    """Without a strategy Keras 3 creates the optimizer's and the metrics' variables inside the first trace
    of its train step, and TensorFlow then traces the step again: training creates them before the fit."""
    import keras

    from core.training.fit import _compile

    class Counting(keras.Sequential):
        traces = 0

        def train_step(self, data):  # Runs once per trace of the compiled step.
            Counting.traces += 1
            return super().train_step(data)

    model = Counting([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    _compile(model, 1e-3, tiny_config())
    films, targets = np.zeros((8, 3), np.float32), np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    model.fit(films, targets, batch_size=4, epochs=2, class_weight={0: 1.0, 1: 2.0}, verbose=0)
    assert Counting.traces == 1


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
    # What only a training under way has (its progress, the decoded-film cache) is not left in the finished run.
    assert not (tiny_run / "progress.json").exists()
    # Every epoch's row says how long its training batches took, validation apart (bench/train.py reads it).
    with open(tiny_run / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert history and all(0 < float(row["train_seconds"]) <= float(row["epoch_seconds"]) for row in history)


def test_a_failed_training_never_harms_the_previous_run(tiny_run, tmp_path):
    from core.runs.registry import list_runs, load_run
    from core.training.run import train_run

    previous = copy_run(tiny_run, tmp_path)  # The failed trainings' job record and lock go beside it.
    models_dir = previous.parent
    before = (previous / "model.keras").read_bytes()
    with pytest.raises(ValueError, match="never overwrites"):
        train_run(tmp_path, tiny_config(), out_dir=previous, models_dir=models_dir)
    bad = make_dataset(tmp_path / "bad", per_class=2, class_folders=("Normal", "Pneumonia"))
    with pytest.raises(ValueError, match="at least 3"):
        train_run(bad, tiny_config(), models_dir=models_dir, log=lambda line: None)
    assert (previous / "model.keras").read_bytes() == before
    assert [r.path for r in list_runs(models_dir)] == [previous]
    load_run(previous)
    last = json.loads((models_dir / ".last_job.json").read_text())
    assert last["state"] == "failed" and "at least 3" in last["error"]
    assert not (models_dir / ".train.lock").exists()
