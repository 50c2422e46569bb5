"""The trained model's outputs on a run's films, computed once and shared by everything after the fit.

After training, four consumers read the model's outputs: the evaluation (probabilities of every
validation and test film), the first gate (pooled features of training and validation films), similar
cases (pooled features of training films) and the population gate (pooled feature maps at several depths,
core.serving.population.depth_feature_model). `ModelOutputs` runs one multi-output model (probabilities,
the depth features and the pooled features, all from the same forward pass) a chunk of films at a time
from the films (in memory or the on-disk cache, never copied whole) and keeps what it computed: a film is
pushed through the network once, whichever consumers ask for it, and rows not computed yet are computed
when first asked for. Features are kept only for the rows asked for with features (probabilities,
k numbers a film, for every row asked for), so the table stays small however many test films there are.

With engine="lite" the same multi-output model is converted once to TensorFlow Lite (float32, no
quantisation) and run one film at a time on XNNPACK, as core.serving.lite serves films: several times the
films a second of Keras on a CPU, for a conversion of seconds. It is used only when its outputs on the
first films match Keras's within `LITE_TOLERANCE`; a model the converter or the runtime cannot take stays on
Keras.
"""

from __future__ import annotations

import os

import numpy as np

from core.model import POOLED_FEATURES_LAYER_NAME
from core.serving.batch import PREDICT_BATCH_SIZE, forward_in_batches
from core.serving.lite import tflite_interpreter
from core.serving.population import depth_feature_model
from core.serving.tflite import convert_keras

CHUNK_FILMS = 256
"""Films read from the cache and pushed through the model at a time (about 50 MB as float32 at 224 px)."""
LITE_TOLERANCE = 1e-4
"""Largest difference (absolute, and relative to the value) from Keras's outputs on the first films for which
the converted model is used."""


def even_sample(rows: np.ndarray, most: int) -> np.ndarray:
    """At most `most` of `rows`, evenly spread over them in their order (all of them when fewer)."""
    rows = np.asarray(rows)
    if len(rows) <= most:
        return rows
    return rows[np.linspace(0, len(rows) - 1, most).round().astype(int)]


class ModelOutputs:
    """Probabilities, pooled features and depth features of a model on rows of `images`, each row computed
    once.

    `probabilities(rows)` (n, k), `pooled(rows)` (n, d) (the layer core.serving.gate.pooled_features reads)
    and `depth(rows)` (n, D) (what core.serving.population.depth_features gives) return the rows in the
    order asked; all three come from the same forward pass in inference mode, so they equal what each
    consumer's own model would compute. Ask for the rows that need features first (`compute(rows)`): a row
    computed without features is computed again if its features are asked for later.
    """

    def __init__(self, model, images, batch_size: int = PREDICT_BATCH_SIZE, chunk: int = CHUNK_FILMS,
                 engine: str = "keras"):
        import keras

        depth_model = depth_feature_model(model)
        depth_outputs = list(depth_model.outputs[1:])
        pooled = model.get_layer(POOLED_FEATURES_LAYER_NAME).output
        # The pooled features are one of the depths today; shared, they are computed and kept once.
        at = next((i for i, output in enumerate(depth_outputs) if output is pooled), None)
        outputs = depth_outputs if at is not None else depth_outputs + [pooled]
        sizes = [int(output.shape[-1]) for output in outputs]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        depth_width = int(starts[len(depth_outputs)])
        pooled_at = at if at is not None else len(depth_outputs)
        self._depth_columns = slice(0, depth_width)
        self._pooled_columns = slice(int(starts[pooled_at]), int(starts[pooled_at + 1]))
        self._model = keras.Model(model.input, [model.output] + outputs)
        self._images = images
        self._chunk = chunk
        count, classes = len(images), int(model.output.shape[-1])
        self._probabilities = np.full((count, classes), np.nan, np.float32)
        self._feature_row = np.full(count, -1, np.int64)  # Row of self._features, or -1.
        self._parts: list[np.ndarray] = []
        self._features = np.zeros((0, int(starts[-1])), np.float32)
        self.films_computed = 0
        self.engine = "Keras"
        self._run = forward_in_batches(self._model, batch_size)
        if engine == "lite" and len(images):
            self._use_lite(keras.Model(model.input, {"probabilities": model.output,
                                                     **{f"output_{i}": o for i, o in enumerate(outputs)}}))

    def _use_lite(self, graph) -> None:
        """Run the model on TensorFlow Lite from now on, if it converts and agrees with Keras."""
        names = ["probabilities"] + [f"output_{i}" for i in range(len(graph.outputs) - 1)]
        try:
            interpreter = tflite_interpreter(model_content=convert_keras(graph),
                                             num_threads=len(os.sched_getaffinity(0)))
            runner = interpreter.get_signature_runner()
            input_name = interpreter.get_signature_list()["serving_default"]["inputs"][0]

            def run(films):
                rows = [runner(**{input_name: film[np.newaxis]}) for film in films]
                return [np.concatenate([np.array(row[name]) for row in rows]) for name in names]

            films = np.asarray(self._images[:2], np.float32)
            agree = all(np.allclose(lite, keras_output, rtol=LITE_TOLERANCE, atol=LITE_TOLERANCE)
                        for keras_output, lite in zip(self._run(films), run(films)))
        except Exception:  # noqa: BLE001 - any converter or runtime failure leaves the working Keras path.
            return
        if agree:
            self._run, self.engine = run, "TensorFlow Lite"

    def compute(self, rows, features: bool = True) -> None:
        """Push the rows not computed yet (or, with `features`, computed without them) through the model."""
        rows = np.unique(np.asarray(rows, np.int64))
        missing = rows[self._feature_row[rows] < 0] if features else rows[np.isnan(self._probabilities[rows, 0])]
        for start in range(0, len(missing), self._chunk):
            part = missing[start:start + self._chunk]
            outputs = self._run(np.asarray(self._images[part], np.float32))
            self._probabilities[part] = np.asarray(outputs[0], np.float32)
            self.films_computed += len(part)
            if features:
                self._feature_row[part] = len(self._features) + sum(len(p) for p in self._parts) + np.arange(len(part))
                self._parts.append(np.concatenate([np.asarray(o, np.float32) for o in outputs[1:]], axis=1))

    def probabilities(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        self.compute(rows, features=False)
        return self._probabilities[rows].copy()

    def pooled(self, rows) -> np.ndarray:
        return self._feature_columns(rows)[:, self._pooled_columns]

    def depth(self, rows) -> np.ndarray:
        return self._feature_columns(rows)[:, self._depth_columns]

    def depth_of_films(self, films: np.ndarray) -> np.ndarray:
        """Depth features (n, D) of films that are not rows of the table (mis-prepared copies), a chunk at a
        time on the same engine; nothing is kept."""
        parts = [np.concatenate([np.asarray(o, np.float32) for o in self._run(
                 np.asarray(films[start:start + self._chunk], np.float32))[1:]], axis=1)[:, self._depth_columns]
                 for start in range(0, len(films), self._chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, self._depth_columns.stop), np.float32)

    def _feature_columns(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        self.compute(rows, features=True)
        if self._parts:
            self._features = np.concatenate([self._features] + self._parts)
            self._parts = []
        return self._features[self._feature_row[rows]]
