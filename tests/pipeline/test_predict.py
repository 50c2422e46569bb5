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
