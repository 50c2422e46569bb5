"""Batch inference: a Keras model's softmax probabilities for many raw films at once.

The one place films are pushed through `model.predict` in batches, for the training-time evaluation, the
evaluation of external folders and the export parity check. Single films go through core.serving.predict.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

PREDICT_BATCH_SIZE = 64


def predict_probabilities(model, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Softmax probabilities (n, k) for raw-pixel films (n, S, S, 1), in inference mode."""
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)


def rows_in_chunks(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray, rows: np.ndarray,
                   chunk: int = 1024) -> np.ndarray:
    """function(images[rows]) computed a chunk of rows at a time and concatenated, so that an on-disk
    film cache (core.training.cache) is never copied into memory whole."""
    rows = np.asarray(rows)
    parts = [function(images[rows[start:start + chunk]]) for start in range(0, len(rows), chunk)]
    return np.concatenate(parts) if parts else function(images[rows])
