"""Training for real: on real films with the patient-aware split, and with the mirrored strategy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CLASS_NAMES, PROJECT_ROOT, SHARED_DATA, tiny_config


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir(), reason="../shared/data/samples is absent")
def test_end_to_end_on_real_films_with_patient_aware_split(tmp_path):
    from core.runs.artifacts import read_split_csv
    from core.serving.predict import Predictor
    from core.training.run import train_run

    run_dir = train_run(SHARED_DATA / "samples", tiny_config(image_size=96, epochs=1),
                        models_dir=tmp_path, log=lambda line: None)
    rows = read_split_csv(run_dir / "split.csv")
    assert len(rows) == 40
    subsets_of_patient = {}
    for row in rows:
        subsets_of_patient.setdefault(row["patient_id"], set()).add(row["subset"])
    assert all(len(s) == 1 for s in subsets_of_patient.values())
    film = next((SHARED_DATA / "samples" / "Pneumothorax").glob("*.png"))
    result = Predictor(run_dir).predict(film, with_cam=True, display=True)
    assert result.error is None and result.label in CLASS_NAMES
    assert result.gray.ndim == 2 and np.isfinite(result.cam).all()


def test_mirrored_strategy_trains_on_two_logical_cpu_devices(tiny_dataset, tmp_path):
    """The `distribute: mirrored` path a multi-GPU host takes, run here on two logical CPU devices."""
    script = f"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {str(PROJECT_ROOT)!r})
sys.path.insert(0, {str(PROJECT_ROOT / "tests")!r})
from conftest import tiny_config
from core.training.run import train_run
lines = []
run = train_run({str(tiny_dataset)!r}, tiny_config(distribute="mirrored", epochs=1),
                models_dir={str(tmp_path / "models")!r}, log=lines.append)
print(json.dumps({{"run": str(run), "log": lines}}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert any("mirrored): 2 replicas" in line for line in output["log"])
    from core.runs.registry import load_run

    run = load_run(output["run"])
    assert run.config["distribute"] == "mirrored"
    assert run.metrics["n"] > 0 and (Path(output["run"]) / "model.keras").is_file()
