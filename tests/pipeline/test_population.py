"""Training writes the population gate and the conformal section; the Predictor serves both, and a run
trained before them still predicts (the first gate's check, no set)."""

from __future__ import annotations

import json

from core.runs.artifacts import METRICS_FILE_NAME, POPULATION_FILE_NAME, read_split_csv
from core.serving.population import KINDS, load_population

from conftest import copy_run, dataset_of


def _test_film(run):
    row = next(r for r in read_split_csv(run / "split.csv") if r["subset"] == "test")
    return dataset_of(run) / row["path"]


def test_training_writes_population_statistics_and_the_conformal_section(tiny_run):
    statistics = load_population(tiny_run)
    assert statistics is not None and statistics["threshold"] > 0
    conformal = json.loads((tiny_run / METRICS_FILE_NAME).read_text())["conformal"]
    assert {"level", "method", "threshold", "coverage", "mean_set_size", "per_class"} <= set(conformal)
    assert conformal["level"] == 0.9 and 0.0 <= conformal["coverage"] <= 1.0
    classes = json.loads((tiny_run / "classes.json").read_text())
    assert set(conformal["per_class"]) == set(classes)


def test_a_prediction_carries_its_set_and_the_gates_kind(keras_predictor, tiny_run):
    result = keras_predictor.predict(_test_film(tiny_run))
    data = json.loads(json.dumps(result.to_json()))
    assert data["gate"]["kind"] in KINDS and isinstance(data["gate"]["passed"], bool)
    assert data["set_level"] == 0.9 and data["uncertain"] == (len(data["prediction_set"]) > 1)
    assert set(data["prediction_set"]) <= set(keras_predictor.class_names) and data["prediction_set"]
    spoiled = keras_predictor.predict(_png_upside_down(tiny_run), name="upside_down.png")
    assert spoiled.error is None and spoiled.gate.kind in KINDS
    batch = keras_predictor.predict_files([_test_film(tiny_run)])[0]
    assert batch.set_level == 0.9 and batch.prediction_set


def _png_upside_down(run) -> bytes:
    import io

    from PIL import Image

    image = Image.open(_test_film(run)).convert("L").rotate(180)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_run_from_before_sets_and_the_population_gate_still_predicts(tiny_run, tmp_path):
    from core.serving.predict import Predictor

    old = copy_run(tiny_run, tmp_path)
    (old / POPULATION_FILE_NAME).unlink()
    metrics = json.loads((old / METRICS_FILE_NAME).read_text())
    metrics.pop("conformal")
    (old / METRICS_FILE_NAME).write_text(json.dumps(metrics))
    predictor = Predictor(old, calibrated=False, engine="keras", warm=False)  # Its one film compiles what it uses.
    assert predictor.population is None and predictor.conformal is None
    result = predictor.predict(_test_film(tiny_run))
    data = result.to_json()
    assert data["prediction_set"] is None and data["set_level"] is None and data["uncertain"] is None
    assert data["gate"]["kind"] in ("ok", "not_a_chest_film", "unlike_training_films")


def test_a_damaged_population_file_is_said_not_replaced_by_the_first_gate(tiny_run, tmp_path):
    import pytest

    from core.serving.predict import Predictor

    damaged = copy_run(tiny_run, tmp_path)
    (damaged / POPULATION_FILE_NAME).write_bytes(b"cut short")
    with pytest.raises(ValueError, match=f"{POPULATION_FILE_NAME} is not a readable .npz archive.*Restore"):
        Predictor(damaged, calibrated=False, engine="keras")
