"""Prediction: load a run once, then classify films (with an optional Grad-CAM) from files or bytes."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.registry import Run, load_run


@dataclass
class Prediction:
    """The outcome for one film.

    Fields:
        file: the name shown to the user (never used as a path).
        label, confidence: the predicted class and its probability (None when the film failed).
        probabilities: {class name: probability}, in the run's class order.
        raw_probabilities: the model's softmax before temperature scaling.
        calibrated: True when `probabilities` are temperature-scaled.
        cam: Grad-CAM (S, S) float32 in [0, 1] for the predicted class, when asked for.
        gray: the film for display (2-D uint8, longest side <= 1024).
        notices: what the loader wants the user to know (for example "Multi-frame DICOM: used frame 1").
        error: a message a person can act on when the film could not be used; then nothing else is set.
        seconds: wall time from bytes to result.
    """

    file: str
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    raw_probabilities: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False
    cam: np.ndarray | None = None
    gray: np.ndarray | None = None
    notices: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        """The CLI's JSON line: {"file", "label", "confidence", "probabilities"} or {"file", "error"}."""
        if self.error:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "label": self.label, "confidence": round(self.confidence, 6),
                "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
                "calibrated": self.calibrated, "notices": list(self.notices)}


class Predictor:
    """A loaded run, ready to classify films. Build it once per process and reuse it.

    >>> predictor = Predictor("models/demo")            # doctest: +SKIP
    >>> predictor.predict(open("film.png", "rb").read(), name="film.png").label   # doctest: +SKIP
    'Normal'
    """

    DISPLAY_MAX_SIDE = 1024

    def __init__(self, run: Run | str | os.PathLike, calibrated: bool = True):
        import tensorflow as tf

        from core.explain import GradCam
        from core.model import load_model

        self.run = run if isinstance(run, Run) else load_run(run)
        self.class_names = list(self.run.classes)
        self.image_size = int(self.run.config.get("image_size", 224))
        self.model = load_model(self.run.model_path)
        metrics = self.run.metrics or {}
        self.temperature = float((metrics.get("calibration") or {}).get("temperature") or 1.0)
        self.calibrated = calibrated and abs(self.temperature - 1.0) > 1e-6
        self._grad_cam = GradCam(self.model)
        self._forward = tf.function(
            lambda images: self.model(images, training=False),
            input_signature=[tf.TensorSpec((None, self.image_size, self.image_size, 1), tf.float32)],
            reduce_retracing=True,
        )
        self.warm_up()

    def warm_up(self) -> None:
        """Trace the compiled paths once so that the first real film is fast."""
        blank = np.zeros((1, self.image_size, self.image_size, 1), np.float32)
        self._forward(blank)
        self._grad_cam(blank)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Raw softmax probabilities (n, k) for model-ready films (n, S, S, 1)."""
        return np.asarray(self._forward(np.asarray(images, np.float32)))

    def _calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        if not self.calibrated:
            return probabilities
        from core.metrics import apply_temperature

        return apply_temperature(probabilities, self.temperature)

    def predict(self, source, name: str | None = None, with_cam: bool = False,
                display: bool = False) -> Prediction:
        """Classify one film from a path, bytes or a file-like upload. Never raises for bad input."""
        from core.imaging import ImageLoadError, load_image, read_film

        started = time.perf_counter()
        label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "upload")
        try:
            data = _read_bytes(source)
            image = load_image(data, self.image_size)
            film = read_film(data, name=label, max_side=self.DISPLAY_MAX_SIDE) if display else None
        except ImageLoadError as error:
            return Prediction(label, error=str(error), seconds=time.perf_counter() - started)
        except OSError as error:
            return Prediction(label, error=f"{label} could not be read ({error.strerror or error}).",
                              seconds=time.perf_counter() - started)
        batch = image[np.newaxis].astype(np.float32)
        if with_cam:
            raw, cams = self._grad_cam(batch)
            cam = cams[0]
        else:
            raw, cam = self.probabilities(batch), None
        probabilities = self._calibrate(raw)[0]
        top = int(np.argmax(probabilities))
        return Prediction(
            file=label, label=self.class_names[top], confidence=float(probabilities[top]),
            probabilities={c: float(p) for c, p in zip(self.class_names, probabilities)},
            raw_probabilities={c: float(p) for c, p in zip(self.class_names, raw[0])},
            calibrated=self.calibrated, cam=cam, gray=film.gray if film else None,
            notices=film.notices if film else (), seconds=time.perf_counter() - started,
        )

    def predict_files(self, paths: list[str | os.PathLike], batch_size: int = 64) -> list[Prediction]:
        """Classify many files in batches, decoding in parallel; failed files get an error each."""
        from core.data import decode_in_chunks

        paths = [Path(p) for p in paths]
        results: dict[Path, Prediction] = {}
        for chunk, images, errors in decode_in_chunks(paths, self.image_size, chunk_size=batch_size):
            for path, reason in errors.items():
                results[path] = Prediction(str(path), error=reason)
            if len(images):
                probabilities = self._calibrate(self.probabilities(images))
                for path, row in zip(chunk, probabilities):
                    top = int(np.argmax(row))
                    results[path] = Prediction(
                        str(path), self.class_names[top], float(row[top]),
                        {c: float(p) for c, p in zip(self.class_names, row)}, calibrated=self.calibrated)
        return [results[p] for p in paths]


def _read_bytes(source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "getvalue"):
        return source.getvalue()
    if hasattr(source, "read"):
        return source.read()
    return Path(source).read_bytes()
