"""An "is this plausibly a chest radiograph?" gate, checked before Paru presents a diagnosis.

Two measurable tests, both cheap:

1. Image statistics of the decoded film: a colour photograph (Hasler–Süsstrunk colourfulness of the
   source, measured by `core.imaging.loader`), or a nearly uniform image, is refused.
2. Distance of the backbone's pooled features (core.model.POOLED_FEATURES_LAYER_NAME) from the training
   films' feature distribution: a Mahalanobis distance in the top principal components plus the reconstruction residual,
   both whitened by the training films. The threshold is calibrated at training time on the validation
   films (a high quantile times a margin), so nearly every real film of the training source passes.

The statistics live in the run folder as `gate.npz`, written by training; a run without one has no feature
test (the statistics test still runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.model import POOLED_FEATURES_LAYER_NAME
from core.runs.artifacts import GATE_FILE_NAME
from core.runs.checks import read_npz
from core.serving.batch import forward_in_batches

MAX_COLORFULNESS = 25.0
MIN_INTENSITY_STD = 8.0
N_COMPONENTS = 16
THRESHOLD_QUANTILE = 0.995
THRESHOLD_MARGIN = 1.25


@dataclass(frozen=True)
class GateResult:
    """passed: whether the film plausibly is a chest radiograph; reason: why not (or a short 'ok' note);
    score: feature distance divided by the threshold (above 1 fails), None without feature statistics."""

    passed: bool
    reason: str
    score: float | None = None

    def to_json(self) -> dict:
        out = {"passed": self.passed, "reason": self.reason}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        return out


def feature_model(model):
    """A keras.Model from raw films to (probabilities, pooled backbone features) in one forward pass."""
    import keras

    return keras.Model(model.input, [model.output, model.get_layer(POOLED_FEATURES_LAYER_NAME).output])


def _scores(features: np.ndarray, statistics: dict) -> np.ndarray:
    centred = features.astype(np.float64) - statistics["mean"]
    projected = centred @ statistics["components"].T
    mahalanobis = np.sum(projected ** 2 / statistics["variances"], axis=1)
    residual = np.sum(centred ** 2, axis=1) - np.sum(projected ** 2, axis=1)
    return np.sqrt(mahalanobis / len(statistics["variances"]) + np.maximum(residual, 0) / statistics["residual_scale"])


def fit_gate(train_features: np.ndarray, val_features: np.ndarray, n_components: int = N_COMPONENTS) -> dict:
    """Fit the feature statistics on training films and calibrate the threshold on validation films.

    Args:
        train_features, val_features: (n, d) pooled backbone features of real films.
    Returns:
        {"mean", "components" (k, d), "variances" (k,), "residual_scale", "threshold"} as numpy values.
    """
    train = np.asarray(train_features, np.float64)
    if len(train) < 3:
        raise ValueError(f"Got {len(train)} training films; the gate needs at least 3 to fit its statistics.")
    mean = train.mean(axis=0)
    centred = train - mean
    k = int(min(n_components, len(train) - 1, train.shape[1]))
    _, singular_values, vt = np.linalg.svd(centred, full_matrices=False)
    variances = singular_values[:k] ** 2 / (len(train) - 1) + 1e-6
    residual = np.sum(centred ** 2, axis=1) - np.sum((centred @ vt[:k].T) ** 2, axis=1)
    statistics = {"mean": mean, "components": vt[:k], "variances": variances,
                  "residual_scale": float(max(np.mean(residual), 1e-6))}
    reference = np.concatenate([_scores(train, statistics), _scores(np.asarray(val_features), statistics)])
    statistics["threshold"] = float(np.quantile(reference, THRESHOLD_QUANTILE) * THRESHOLD_MARGIN)
    return statistics


def save_gate(run_dir: str | os.PathLike, statistics: dict) -> Path:
    path = Path(run_dir) / GATE_FILE_NAME
    np.savez_compressed(path, **{k: np.asarray(v, np.float32) for k, v in statistics.items()})
    return path


def load_gate(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / GATE_FILE_NAME
    if not path.is_file():
        return None
    # ValueError naming the file when it is not an archive or lacks a statistic (core.runs.checks).
    arrays = read_npz(path, ("mean", "components", "variances", "residual_scale", "threshold"))
    statistics = {k: value.astype(np.float64) for k, value in arrays.items()}
    for key in ("residual_scale", "threshold"):
        statistics[key] = float(statistics[key])
    return statistics


def check(gray: np.ndarray, colorfulness: float, features: np.ndarray | None, statistics: dict | None) -> GateResult:
    """Decide whether one film plausibly is a chest radiograph.

    Args:
        gray: the decoded film (2-D uint8); colorfulness: from the loader's Film.meta["colorfulness"];
        features: the film's pooled backbone features (d,), or None; statistics: from load_gate, or None.
    """
    if colorfulness > MAX_COLORFULNESS:
        return GateResult(False, f"This looks like a colour picture (colourfulness {colorfulness:.0f}; "
                                 f"radiographs are gray, under {MAX_COLORFULNESS:.0f}). Upload the X-ray itself.")
    spread = float(np.std(gray))
    if spread < MIN_INTENSITY_STD:
        return GateResult(False, f"The image is nearly uniform (intensity spread {spread:.1f}); a radiograph "
                                 "shows anatomy. Check that the right file was chosen.")
    if statistics is None or features is None:
        return GateResult(True, "Image statistics look like a radiograph (this run has no feature statistics).")
    score = float(_scores(np.asarray(features)[np.newaxis], statistics)[0] / statistics["threshold"])
    if score > 1.0:
        return GateResult(False, "This image is unlike the chest films the model was trained on (feature "
                                 f"distance {score:.2f}x the threshold). It may not be a frontal chest "
                                 "radiograph; no diagnosis is shown.", score)
    return GateResult(True, f"Resembles the training films (feature distance {score:.2f}x the threshold).", score)


def pooled_features(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pooled backbone features (n, d) for raw films (n, S, S, 1)."""
    return pooled_features_function(model, batch_size)(images)


def pooled_features_function(model, batch_size: int = 64):
    """images (n, S, S, 1) -> pooled backbone features (n, d), for a caller that asks chunk by chunk: one
    feature model, whose forward pass (core.serving.batch.forward_in_batches) is traced on the first call
    and reused by the next, whatever the chunk's size (a new feature model per chunk would trace it again,
    about a second of CPU each). A compiled pass, not eager calls: an eager forward pass of 64 films at
    224 px keeps every intermediate activation alive, which multiplied the training process's memory at its
    end."""
    forward = forward_in_batches(feature_model(model), batch_size)

    def features_of(images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, 0))
        return forward(images)[1]
    return features_of
