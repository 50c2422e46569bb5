"""The mobile exports whose conversions are slow: the tiny run's float16 (two conversions) and the shipped
demo's, checked on its own real films (a full-width model)."""

from __future__ import annotations

import json

import pytest

from conftest import PROJECT_ROOT, SHARED_DATA, needs_pretrained
from core.cli import main

DEMO_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4"
NIH = SHARED_DATA / "nih-cxr4"


@needs_pretrained
def test_the_float16_export_of_the_tiny_run_keeps_its_decided_answers_at_under_six_tenths_the_size(tiny_run,
                                                                                                    tmp_path):
    from core.serving.export import parity_report, run_films

    exact = tmp_path / "f32.tflite"
    half, checked = tmp_path / "f16.tflite", tmp_path / "f16.json"
    assert main(["export", "--model", str(tiny_run), "--tflite", str(exact), "--variant", "float32",
                 "--no-check"]) == 0
    assert main(["export", "--model", str(tiny_run), "--tflite", str(half), "--variant", "float16",
                 "--parity-json", str(checked)]) == 0
    report = parity_report(tiny_run, half, run_films(tiny_run))
    # The export command checks itself on the run's own films and keeps the figures.
    written = json.loads(checked.read_text())
    assert written["n"] == report["n"] == 48
    assert written["top1_agreement"] == report["top1_agreement"]
    assert written["meets_bar"] == (report["top1_agreement"] >= 0.99 and report["max_abs_difference"] <= 0.02)
    # The tiny model is barely trained, so some films sit on a near tie between two classes that float16
    # rounding can flip; where the model is decided, the export must agree every time.
    assert report["n_decided"] >= 10
    assert report["top1_agreement_decided"] == 1.0
    assert report["mean_abs_difference"] < 0.01
    assert 0 < report["size_bytes"] < 0.6 * exact.stat().st_size


@pytest.fixture
def one_keras_pass(monkeypatch):
    """The export command's parity check decodes the run's films and runs the Keras model over them for every
    export it checks. For two exports of one run on one folder both are the same, so here the second command
    reuses what the first decoded and computed (the films and the Keras probabilities), and only the export
    itself is converted and run again."""
    from core import cli
    from core.serving import export

    films, probabilities = {}, {}
    run_films, predict_probabilities = cli.run_films, export.predict_probabilities

    def run_films_once(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in films:
            films[key] = run_films(*args, **kwargs)
        return films[key]

    def predict_probabilities_once(model, images, *args, **kwargs):
        if not any(images is decoded for decoded in films.values()):
            return predict_probabilities(model, images, *args, **kwargs)
        if id(images) not in probabilities:
            probabilities[id(images)] = predict_probabilities(model, images, *args, **kwargs)
        return probabilities[id(images)]

    monkeypatch.setattr(cli, "run_films", run_films_once)
    monkeypatch.setattr(export, "predict_probabilities", predict_probabilities_once)
    return probabilities


@pytest.mark.skipif(not NIH.is_dir(), reason="needs ../shared/data/nih-cxr4")
def test_exports_of_the_demo_are_checked_on_its_real_films(tmp_path, capsys, one_keras_pass):
    """The parity bar on the shipped demo and its own NIH films: float16 meets it, and the dynamic-range
    export, which does not, is flagged by the export command itself (both checked against one Keras pass
    over the films)."""
    data = ["--data", str(NIH)]  # The demo's recorded dataset path is this machine's.
    n_films = len(list(NIH.glob("*/*.png")))

    half = tmp_path / "demo-f16.tflite"
    assert main(["export", "--model", str(DEMO_RUN), "--tflite", str(half), "--variant", "float16", *data,
                 "--parity-json", str(tmp_path / "f16.json")]) == 0
    report = json.loads((tmp_path / "f16.json").read_text())
    assert report["n"] == n_films > 200
    assert report["top1_agreement"] >= 0.99
    assert report["max_abs_difference"] <= 0.02
    assert report["meets_bar"] is True
    assert half.stat().st_size < 0.55 * (DEMO_RUN / "model.keras").stat().st_size
    capsys.readouterr()

    assert main(["export", "--model", str(DEMO_RUN), "--tflite", str(tmp_path / "demo-int8.tflite"),
                 "--variant", "dynamic", *data, "--parity-json", str(tmp_path / "int8.json")]) == 0
    assert "WARNING: below the parity bar" in capsys.readouterr().err
    assert json.loads((tmp_path / "int8.json").read_text())["meets_bar"] is False
    assert len(one_keras_pass) == 1  # The demo's films went through the Keras model once for both checks.
