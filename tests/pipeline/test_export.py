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


def run_films_of(run_dir):
    """Every film of the run's split, as raw model inputs (float32)."""
    from core.imaging.loader import load_image
    from core.runs.artifacts import read_split_csv
    from core.runs.registry import load_run

    root = json.loads((run_dir / "data_report.json").read_text())["root"]
    size = int(load_run(run_dir).config["image_size"])
    return np.stack([load_image(f"{root}/{row['path']}", size)
                     for row in read_split_csv(run_dir / "split.csv")]).astype(np.float32)


@needs_pretrained
def test_the_float32_export_agrees_with_keras_and_the_command_keeps_its_parity_figures(tiny_run, tmp_path):
    """float32 is exact; the export command checks itself on the run's own films and writes the figures
    (the float16 export of the tiny run: tests/system/test_export.py)."""
    from core.serving.export import parity_report

    checked = tmp_path / "f32.json"
    exported = _export(tiny_run, tmp_path / "f32.tflite", "float32", "--parity-json", checked)
    exact = parity_report(tiny_run, exported, run_films_of(tiny_run))
    assert exact["n"] == 48
    assert exact["top1_agreement"] == 1.0
    assert exact["max_abs_difference"] < 1e-4
    written = json.loads(checked.read_text())
    assert written["n"] == 48 and written["meets_bar"] is True
    assert {key: written[key] for key in ("top1_agreement", "n_decided", "size_bytes")} == {
        key: exact[key] for key in ("top1_agreement", "n_decided", "size_bytes")}
    assert written["max_abs_difference"] == pytest.approx(exact["max_abs_difference"], abs=1e-6)


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
