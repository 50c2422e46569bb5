"""Batch inference: a Keras model's softmax probabilities for many raw films at once.

The one place films are pushed through a model in batches, for the training-time evaluation, the
evaluation of external folders and the export parity check. Single films go through core.serving.predict.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable

import numpy as np

PREDICT_BATCH_SIZE = 64

# One compiled forward pass per model. The keys are weak and the values reach the model only through a weak
# reference, so a model no longer used elsewhere is freed together with its compiled pass.
_FORWARD: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_FORWARD_LOCK = threading.Lock()


def predict_probabilities(model, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Softmax probabilities (n, k) for raw-pixel films (n, S, S, 1), in inference mode.

    `batch_size` films at a time through one compiled forward pass per model, traced once whatever the
    number of films (Keras's `predict` traces again for a last, smaller batch, and for a new count of films).
    """
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    forward = _compiled_forward(model)
    parts = [np.asarray(forward(np.asarray(images[start:start + batch_size], np.float32)))
             for start in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _compiled_forward(model):
    import tensorflow as tf

    with _FORWARD_LOCK:
        forward = _FORWARD.get(model)
        if forward is None:
            reference = weakref.ref(model)
            spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
            forward = tf.function(lambda films: reference()(films, training=False), input_signature=[spec])
            _FORWARD[model] = forward
        return forward


def rows_in_chunks(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray, rows: np.ndarray,
                   chunk: int = 1024) -> np.ndarray:
    """function(images[rows]) computed a chunk of rows at a time and concatenated, so that an on-disk
    film cache (core.training.cache) is never copied into memory whole."""
    rows = np.asarray(rows)
    parts = [function(images[rows[start:start + chunk]]) for start in range(0, len(rows), chunk)]
    return np.concatenate(parts) if parts else function(images[rows])
