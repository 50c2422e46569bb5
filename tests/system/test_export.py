"""The mobile exports of the shipped demo, checked on its own real films (a full-width model). The tiny run's
float16 export is checked where the Evaluation page builds it (tests/system/test_app_pages.py)."""

from __future__ import annotations

import json

import pytest

from conftest import PROJECT_ROOT, SHARED_DATA
from core.cli import main

DEMO_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4"
NIH = SHARED_DATA / "nih-cxr4"


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
