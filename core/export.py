"""Mobile export: a run's model as a TensorFlow Lite file, with a parity check against Keras.

Variants: "float16" (weights stored as float16, about half the size; on the demo run's real films the
largest probability difference to Keras was 0.020), "dynamic" (dynamic-range int8 weights, about a quarter
of the size, visibly less faithful) and "float32" (no quantisation, the full size; identical to Keras within
1e-5, the reference when parity matters more than size). The exported model takes the same raw
films as the Keras model, (1, S, S, 1) float32 pixels in [0, 255], and returns softmax probabilities.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

VARIANTS = ("float16", "dynamic", "float32")


def export_tflite(run_dir: str | os.PathLike, out_path: str | os.PathLike, variant: str = "float16") -> Path:
    """Convert a run's model.keras to a .tflite file; returns the written path."""
    import tensorflow as tf

    from core.model import load_model
    from core.registry import load_run

    if variant not in VARIANTS:
        raise ValueError(f"Got variant={variant!r}; must be one of {VARIANTS}.")
    run = load_run(run_dir)
    converter = tf.lite.TFLiteConverter.from_keras_model(load_model(run.model_path))
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(converter.convert())
    return out_path


class TFLiteClassifier:
    """Run an exported .tflite model on raw films (n, S, S, 1) one at a time, as a phone would."""

    def __init__(self, path: str | os.PathLike):
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            # tf.lite.Interpreter announces its move to the ai-edge-litert package; it still works here.
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        outputs = []
        for image in np.asarray(images, np.float32):
            self.interpreter.set_tensor(self.input_index, image[np.newaxis])
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self.output_index)[0].copy())
        return np.stack(outputs)


def parity_report(run_dir: str | os.PathLike, tflite_path: str | os.PathLike, images: np.ndarray) -> dict:
    """Compare a .tflite export with the Keras model on films: agreement, largest difference, size, speed."""
    from core.evaluate import predict_probabilities
    from core.model import load_model
    from core.registry import load_run

    keras_probabilities = predict_probabilities(load_model(load_run(run_dir).model_path), images)
    classifier = TFLiteClassifier(tflite_path)
    classifier(images[:1])
    started = time.perf_counter()
    lite_probabilities = classifier(images)
    latency_ms = (time.perf_counter() - started) * 1000 / len(images)
    agree = keras_probabilities.argmax(1) == lite_probabilities.argmax(1)
    # Films whose top two Keras probabilities are close can flip on rounding alone; agreement on the
    # films the model is decided about (margin above 0.05) is the stricter parity statement.
    top_two = np.sort(keras_probabilities, axis=1)[:, -2:]
    decided = (top_two[:, 1] - top_two[:, 0]) > 0.05
    return {
        "n": int(len(images)),
        "top1_agreement": float(np.mean(agree)),
        "n_decided": int(decided.sum()),
        "top1_agreement_decided": float(np.mean(agree[decided])) if decided.any() else None,
        "max_abs_difference": float(np.max(np.abs(keras_probabilities - lite_probabilities))),
        "mean_abs_difference": float(np.mean(np.abs(keras_probabilities - lite_probabilities))),
        "size_bytes": Path(tflite_path).stat().st_size,
        "latency_ms_per_film": latency_ms,
    }
