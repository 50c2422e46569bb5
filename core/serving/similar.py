"""Similar cases: the training films nearest to a new film in the run's own pooled backbone features.

Written once at training time (core.training.run) into the run folder's SIMILAR_FILE_NAME, read by the
Predictor, which gives each film its `nearest` training films as {"file", "label", "distance"}: file is the
film's path relative to the run's dataset folder (as in split.csv), distance the cosine distance (1 - cosine
similarity of the pooled features, 0 for the same direction, at most 2). What a person looks at beside a
result to judge it: "the model puts this film among these Cardiomegaly films".

A run trained before this file existed has no similar cases; `load_similar_index` then gives None and nothing
fails. Pure NumPy: no TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.runs.artifacts import SIMILAR_FILE_NAME

NEAREST = 3
"""How many similar training films a result shows."""
MAX_INDEX_FILMS = 5000
"""At most this many training films are kept (an even sample of them beyond it): about 13 MB of float16
features at MobileNetV2's 1280 dimensions, so a large run's folder stays small to copy."""


def _normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def save_similar_index(run_dir: str | os.PathLike, features: np.ndarray, files: list[str],
                       labels: list[str]) -> Path:
    """Write the index of training films (features (n, d), their split.csv paths and labels)."""
    features = np.asarray(features)
    if not (features.ndim == 2 and len(features) == len(files) == len(labels)):
        raise ValueError(f"Got features {features.shape} for {len(files)} files and {len(labels)} labels; "
                         "expected one (d,) row per file.")
    keep = np.arange(len(files))
    if len(keep) > MAX_INDEX_FILMS:
        keep = np.linspace(0, len(files) - 1, MAX_INDEX_FILMS).round().astype(int)
    path = Path(run_dir) / SIMILAR_FILE_NAME
    np.savez_compressed(path, features=_normalised(features[keep]).astype(np.float16),
                        files=np.array([str(files[i]) for i in keep]), labels=np.array([str(labels[i]) for i in keep]))
    return path


def load_similar_index(run_dir: str | os.PathLike) -> dict | None:
    """{"features" (n, d) float32 unit rows, "files", "labels"} of a run, or None when the run has no index
    or its file is unusable (missing keys, not an npz, rows that do not match)."""
    path = Path(run_dir) / SIMILAR_FILE_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            index = {"features": np.asarray(data["features"], dtype=np.float32),
                     "files": [str(f) for f in data["files"]], "labels": [str(label) for label in data["labels"]]}
    except (OSError, ValueError, KeyError):
        return None
    features = index["features"]
    if features.ndim != 2 or not (len(features) == len(index["files"]) == len(index["labels"]) > 0):
        return None
    return index


def nearest(index: dict | None, feature: np.ndarray, k: int = NEAREST) -> list[dict]:
    """The k training films nearest to one film's pooled features (d,), nearest first; [] without an index
    or when the dimensions differ (an index of another model)."""
    if index is None:
        return []
    feature = np.asarray(feature, dtype=np.float32).reshape(-1)
    if feature.shape[0] != index["features"].shape[1] or not np.isfinite(feature).all():
        return []
    distances = 1.0 - index["features"] @ _normalised(feature)
    order = np.argsort(distances, kind="stable")[:k]
    return [{"file": index["files"][i], "label": index["labels"][i], "distance": round(float(distances[i]), 4)}
            for i in order]
