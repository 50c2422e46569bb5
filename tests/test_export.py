"""Mobile export: the TFLite file takes the same raw films and agrees with the Keras model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from conftest import PROJECT_ROOT


def test_tflite_export_agrees_with_keras_on_the_runs_films(tiny_run, tmp_path):
    from core.data import read_split_csv
    from core.export import parity_report
    from core.imaging import load_image

    out = tmp_path / "paru.tflite"
    result = subprocess.run([sys.executable, "-m", "core", "export", "--model", str(tiny_run), "--tflite", str(out)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    root = json.loads((tiny_run / "data_report.json").read_text())["root"]
    images = np.stack([load_image(f"{root}/{row['path']}", 64) for row in read_split_csv(tiny_run / "split.csv")])
    report = parity_report(tiny_run, out, images.astype(np.float32))
    assert report["n"] == 48
    # The tiny model is barely trained, so some films sit on a near tie between two classes; where it is
    # decided, the export must agree every time, and no probability may move by more than 0.03.
    assert report["n_decided"] >= 10
    assert report["top1_agreement_decided"] == 1.0
    assert report["max_abs_difference"] <= 0.03
    assert 0 < report["size_bytes"] < (tiny_run / "model.keras").stat().st_size
