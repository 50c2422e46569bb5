"""Batch inference: a Keras model's outputs for many raw films at once.

The one place films are pushed through a Keras model in batches: `predict_probabilities` (`model.predict`)
for the evaluations and the export parity check, and `forward_in_batches` (every output, from one graph
traced once) for the model's outputs after training (core.training.outputs). Single films go through
core.serving.predict.
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


def forward_in_batches(model, batch_size: int = PREDICT_BATCH_SIZE):
    """films -> [each output of `model`, numpy] in inference mode, `batch_size` films at a time, as Keras's
    predict computes them, but from one graph traced once for any number of films: predict traces its step
    again for a new batch shape (the last, partial batch of each call) and anew for every new model."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)
    step = tf.function(lambda films: model(films, training=False), input_signature=[spec], autograph=False)

    def run(films) -> list[np.ndarray]:
        films = np.asarray(films, np.float32)
        parts = [step(films[start:start + batch_size]) for start in range(0, len(films), batch_size)]
        parts = [part if isinstance(part, (list, tuple)) else [part] for part in parts]
        return [np.concatenate([np.asarray(part[i]) for part in parts]) for i in range(len(parts[0]))]

    return run


def rows_in_chunks(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray, rows: np.ndarray,
                   chunk: int = 1024) -> np.ndarray:
    """function(images[rows]) computed a chunk of rows at a time and concatenated, so that an on-disk
    film cache (core.training.cache) is never copied into memory whole."""
    rows = np.asarray(rows)
    parts = [function(images[rows[start:start + chunk]]) for start in range(0, len(rows), chunk)]
    return np.concatenate(parts) if parts else function(images[rows])
