"""The mobile export of the shipped demo, checked on its own real films (a full-width model: slow)."""

from __future__ import annotations

import json

import pytest

from conftest import PROJECT_ROOT, SHARED_DATA
from core.cli import main

DEMO_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4-paper"
NIH = SHARED_DATA / "nih-cxr4"


@pytest.mark.skipif(not NIH.is_dir(), reason="needs ../shared/data/nih-cxr4")
def test_exports_of_the_demo_are_checked_on_its_real_films(tmp_path, capsys):
    """The parity bar on the shipped demo and its own NIH films: float16 meets it, and the dynamic-range
    export, which does not, is flagged by the export command itself."""
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
