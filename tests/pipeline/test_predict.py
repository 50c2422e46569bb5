"""The Predictor agrees with the evaluation's stored predictions, one film at a time and in batches."""

from __future__ import annotations

import pytest

from conftest import dataset_of


def test_predictor_agrees_with_evaluation_and_batch_prediction(tiny_run, keras_predictor):
    from core.runs.artifacts import read_predictions_csv
    from core.runs.registry import load_run

    run = load_run(tiny_run)
    predictor = keras_predictor
    rows = read_predictions_csv(tiny_run / "predictions.csv", run.classes)[:6]
    paths = [dataset_of(tiny_run) / row["file"] for row in rows]
    singles = [predictor.predict(path, with_cam=True) for path in paths]
    batch = predictor.predict_files(paths)
    for row, single, batched in zip(rows, singles, batch):
        for name in run.classes:
            assert single.probabilities[name] == pytest.approx(row["probabilities"][name], abs=1e-4)
            assert batched.probabilities[name] == pytest.approx(row["probabilities"][name], abs=1e-4)
        assert single.cam.shape == (64, 64)


def _run_with_model(tmp_path, model, classes):
    from core.runs import artifacts

    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True)
    model.save(run_dir / artifacts.MODEL_FILE_NAME)
    artifacts.write_json_atomic(run_dir / artifacts.CONFIG_FILE_NAME, {"image_size": 8})
    artifacts.write_json_atomic(run_dir / artifacts.CLASSES_FILE_NAME, classes)
    artifacts.write_json_atomic(run_dir / artifacts.STATUS_FILE_NAME, {"state": "finished"})
    return run_dir


def test_classes_not_matching_the_model_and_a_model_refused_by_safe_mode_are_clear_errors(tmp_path, capsys):
    import keras

    from core import cli
    from core.serving.predict import Predictor

    inputs = keras.Input((8, 8, 1))
    three_outputs = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs)))
    run_dir = _run_with_model(tmp_path / "mismatch", three_outputs, ["Normal", "Pneumonia"])
    with pytest.raises(ValueError, match="names 2 classes but the model has 3 output units"):
        Predictor(run_dir, engine="keras")
    from conftest import make_dataset
    from core.evaluation.evaluate import evaluate_folder

    films = make_dataset(tmp_path / "films", per_class=1, class_folders=("Normal", "Pneumonia"))
    with pytest.raises(ValueError, match="names 2 classes but the model has 3 output units"):
        evaluate_folder(run_dir, films, engine="keras")

    lambda_output = keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs))
    unsafe = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(lambda_output))
    run_dir = _run_with_model(tmp_path / "unsafe", unsafe, ["Normal", "Pneumonia"])
    with pytest.raises(ValueError, match="cannot be loaded in Keras safe mode"):
        Predictor(run_dir, engine="keras")
    film = tmp_path / "film.png"
    film.write_bytes(b"")
    assert cli.main(["predict", "--model", str(run_dir), "--engine", "keras", str(film)]) == 2
    assert "cannot be loaded in Keras safe mode" in capsys.readouterr().err
