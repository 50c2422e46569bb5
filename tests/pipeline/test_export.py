"""core.serving.export: the TFLite file takes the same raw films and agrees with the Keras model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import needs_pretrained
from core.cli import main


def _export(run_dir, out, variant, *extra):
    """`python -m core export ...`, in process."""
    assert main(["export", "--model", str(run_dir), "--tflite", str(out), "--variant", variant,
                 *map(str, extra)]) == 0
    return out


def _run_films(run_dir, size):
    from core.imaging.loader import load_image
    from core.runs.artifacts import read_split_csv

    root = json.loads((run_dir / "data_report.json").read_text())["root"]
    return np.stack([load_image(f"{root}/{row['path']}", size) for row in read_split_csv(run_dir / "split.csv")])


@needs_pretrained
def test_tflite_exports_agree_with_keras_on_the_runs_films(tiny_run, tmp_path):
    from core.serving.export import parity_report

    images = _run_films(tiny_run, 64).astype(np.float32)
    exact = parity_report(tiny_run, _export(tiny_run, tmp_path / "f32.tflite", "float32", "--no-check"), images)
    assert exact["n"] == 48
    assert exact["top1_agreement"] == 1.0
    assert exact["max_abs_difference"] < 1e-4

    checked = tmp_path / "f16.json"
    half = parity_report(tiny_run, _export(tiny_run, tmp_path / "f16.tflite", "float16", "--parity-json", checked),
                         images)
    # The export command checks itself on the run's own films and keeps the figures.
    written = json.loads(checked.read_text())
    assert written["n"] == 48
    assert written["top1_agreement"] == half["top1_agreement"]
    assert written["meets_bar"] == (half["top1_agreement"] >= 0.99 and half["max_abs_difference"] <= 0.02)
    # The tiny model is barely trained, so some films sit on a near tie between two classes that float16
    # rounding can flip; where the model is decided, the export must agree every time.
    assert half["n_decided"] >= 10
    assert half["top1_agreement_decided"] == 1.0
    assert half["mean_abs_difference"] < 0.01
    assert 0 < half["size_bytes"] < 0.6 * exact["size_bytes"]


def test_the_parity_check_says_what_to_do_when_the_runs_films_have_moved(tiny_run, tmp_path):
    from core.serving.export import run_films

    moved = tmp_path / "run"
    shutil.copytree(tiny_run, moved)
    report = json.loads((moved / "data_report.json").read_text())
    original_root = report["root"]
    report["root"] = str(tmp_path / "gone")
    (moved / "data_report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match=r"does not exist on this machine; pass the folder .*\(--data\)"):
        run_films(moved)
    assert len(run_films(moved, data_dir=original_root, limit=5)) == 5
