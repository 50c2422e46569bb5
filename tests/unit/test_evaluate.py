"""core.evaluation.evaluate: a run's evaluation files, on a stand-in model (no TensorFlow)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from core.config import TrainConfig
from core.evaluation.evaluate import write_run_evaluation
from core.runs.artifacts import METRICS_FILE_NAME

CLASSES = ["Normal", "Pneumonia"]


@dataclass
class _Record:
    path: str
    label: str
    sha256: str


class _Scan:
    """What write_run_evaluation reads of a core.data.scan result: films, labels and their records."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.labels = np.arange(n) % 2
        self.images = rng.integers(0, 255, size=(n, 32, 32, 1)).astype(np.uint8)
        self.records = [_Record(f"{CLASSES[label]}/film{i}.png", CLASSES[label], f"{i:064x}")
                        for i, label in enumerate(self.labels)]


class _Model:
    """Probabilities that favour the true class of each film (read from the film's first pixel)."""

    output_shape = (None, 2)

    def __init__(self, scan: _Scan, rng: np.random.Generator):
        self.by_pixel = {}
        for image, label in zip(scan.images, scan.labels):
            p = float(np.clip(rng.normal(0.75, 0.2), 0.02, 0.98))
            self.by_pixel[image.tobytes()] = [p, 1 - p] if label == 0 else [1 - p, p]

    def predict(self, images, batch_size=32, verbose=0):
        return np.array([self.by_pixel[image.astype(np.uint8).tobytes()] for image in images], np.float32)


def test_the_conformal_section_is_computed_at_the_configured_set_level(tmp_path):
    rng = np.random.default_rng(0)
    scan = _Scan(60, rng)
    subsets = np.array(["train"] * 20 + ["val"] * 20 + ["test"] * 20)
    metrics = write_run_evaluation(tmp_path, _Model(scan, rng), scan, subsets, CLASSES,
                                   TrainConfig(set_level=0.8), training={})
    stored = json.loads((tmp_path / METRICS_FILE_NAME).read_text())
    assert metrics["conformal"]["level"] == stored["conformal"]["level"] == 0.8
    assert stored["conformal"]["n_calibration"] == 20 and stored["conformal"]["n"] == 20
