"""Prediction: load a run once, then classify films (with an optional Grad-CAM) from files or bytes."""

from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.scan import decode_in_chunks
from core.evaluation.calibration import apply_temperature
from core.evaluation.conformal import calibration_of, set_classes
from core.explain.gradcam import GradCam
from core.imaging.loader import ImageLoadError, load_image, read_file_bytes, read_film_and_model_input
from core.model import POOLED_FEATURES_LAYER_NAME
from core.runs.registry import Run, load_run, load_run_model
from core.serving import gate as film_gate
from core.serving import population as film_population
from core.serving.lite import cached_path, load_engine
from core.serving.similar import load_similar_index, nearest

ENGINES = ("cached", "lite", "background", "keras")
"""What may run single films (see `Predictor`)."""
ONE_SHOT_ENGINES = tuple(engine for engine in ENGINES if engine != "background")
"""The engines that make sense for a process that exits after its films (the command line): a background
conversion would only delay its exit."""


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
        gray: the film for display (2-D uint8, longest side <= the display size asked for, 1024 by default).
        notices: what the loader wants the user to know (for example "Multi-frame DICOM: used frame 1").
        error: a message a person can act on when the film could not be used; then nothing else is set.
        gate: the gate's verdict (core.serving.population.PopulationVerdict: passed, kind, reason); when it
            failed, the label must not be presented as a diagnosis.
        prediction_set: the classes of the run's split-conformal set (core.evaluation.conformal), most
            probable first, at `set_level` coverage; () and None for a run evaluated before sets existed.
        uncertain: True when the set holds more than one class (the model cannot tell them apart at its
            level); None without a set.
        seconds: wall time from bytes to result.
        engine: what ran the model ("TensorFlow Lite" or "Keras"; see core.serving.lite).
        similar: the nearest training films in the run's pooled features ({"file", "label", "distance"};
            core.serving.similar), () when the run stores none.
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
    gate: film_population.PopulationVerdict | None = None
    prediction_set: tuple[str, ...] = ()
    set_level: float | None = None
    uncertain: bool | None = None
    seconds: float = 0.0
    engine: str = ""
    similar: tuple[dict, ...] = ()

    def to_json(self) -> dict:
        """The CLI's JSON line: {"file", "label", "confidence", "probabilities", "prediction_set",
        "set_level", "uncertain", ...} or {"file", "error"}. Without a set (an older run) the last three
        are null."""
        if self.error:
            return {"file": self.file, "error": self.error}
        out = {"file": self.file, "label": self.label, "confidence": round(self.confidence, 6),
               "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
               "calibrated": self.calibrated, "notices": list(self.notices),
               "prediction_set": list(self.prediction_set) if self.set_level is not None else None,
               "set_level": self.set_level, "uncertain": self.uncertain}
        if self.gate is not None:
            out["gate"] = self.gate.to_json()
        return out


class Predictor:
    """A loaded run, ready to classify films. Build it once per process and reuse it.

    >>> predictor = Predictor("models/demo")            # doctest: +SKIP
    >>> predictor.predict(open("film.png", "rb").read(), name="film.png").label   # doctest: +SKIP
    'Normal'
    """

    DISPLAY_MAX_SIDE = 1024
    ENGINES = ENGINES

    def __init__(self, run: Run | str | os.PathLike, calibrated: bool = True, engine: str = "cached",
                 warm: bool = True):
        """Load a run.

        engine chooses what runs single films (core.serving.lite): "lite" converts the model to TensorFlow Lite
        now if no converted copy is cached (once per model and machine) and uses it; "background" uses a
        cached copy at once, otherwise starts on Keras and switches when a background conversion is ready
        (what the app does); "cached" (default) uses a cached copy only; "keras" never converts. Whatever
        the choice, a model the fast engine cannot serve stays on Keras, with the reason in `engine_note`.
        A damaged run file (the model, gate.npz, population.npz) is a ValueError naming it and what to do
        (core.runs.checks); a damaged population gate never falls back to the first gate unsaid.
        warm (default) traces the compiled paths that serve single films now (`warm_up`), so that the first
        film is fast, as an app needs; a command that runs once passes False and traces only the paths its
        films take, on the first film.
        """
        import tensorflow as tf

        self.run = run if isinstance(run, Run) else load_run(run)
        self.class_names = list(self.run.classes)
        self.image_size = int(self.run.config.get("image_size", 224))
        self.model = load_run_model(self.run)  # ValueError for a refused model or mismatched classes.json.
        metrics = self.run.metrics or {}
        self.temperature = float((metrics.get("calibration") or {}).get("temperature") or 1.0)
        self.calibrated = calibrated and abs(self.temperature - 1.0) > 1e-6
        self.gate_statistics = film_gate.load_gate(self.run.path)
        self.conformal = calibration_of(metrics)  # None for a run evaluated before prediction sets.
        self.population = film_population.load_population(self.run.path)
        self.population_note = _population_words(self.run)
        self.similar_index = load_similar_index(self.run.path)
        # With a CAM, one pass gives the probabilities, the CAM and the gate's pooled features together.
        self._grad_cam = GradCam(self.model, extra_output_name=POOLED_FEATURES_LAYER_NAME)
        # Without a CAM, ONE compiled forward pass gives the probabilities and every feature the gates read:
        # the pooled features (the first gate, similar cases) and, for a run with a population gate, the
        # pooled maps at its depths (core.serving.population), of which the pooled features are one.
        if self.population is None:
            forward_model, self._pooled_output = film_gate.feature_model(self.model), 1
        else:
            forward_model = film_population.depth_feature_model(self.model)
            self._pooled_output = 1 + film_population.POPULATION_LAYERS.index(POOLED_FEATURES_LAYER_NAME)
        self._forward = tf.function(
            lambda images: forward_model(images, training=False),
            input_signature=[tf.TensorSpec((None, self.image_size, self.image_size, 1), tf.float32)],
            reduce_retracing=True,
        )
        if engine not in self.ENGINES:
            raise ValueError(f"Got engine={engine!r}; must be one of {self.ENGINES}.")
        self._lite = None
        self._conversion: threading.Thread | None = None
        self.engine_note = "Keras (the fast engine was not asked for)." if engine == "keras" else ""
        self.lite_ready = threading.Event()
        # An engine that is ready at once (converted now, or from the cache) is started before the warm-up,
        # which then leaves out the Keras paths it replaces; a background conversion starts after it.
        at_once = engine != "keras" and (engine != "background" or cached_path(self.run.model_path).is_file())
        if at_once:
            self._start_lite(engine)
        if warm:
            self.warm_up()
        if engine == "background" and not at_once:
            self._start_lite(engine)

    @property
    def converting(self) -> bool:
        """True while a background conversion to TensorFlow Lite runs (Keras serves meanwhile)."""
        return self._conversion is not None and not self.lite_ready.is_set()

    @property
    def engine(self) -> str:
        """What runs single films now: "TensorFlow Lite" or "Keras"."""
        return self._lite.name if self._lite is not None else "Keras"

    def _start_lite(self, mode: str) -> None:
        if mode == "lite" or cached_path(self.run.model_path).is_file():
            self._build_lite()
        elif mode == "background":
            self._conversion = threading.Thread(target=self._build_lite, name="paru-lite-convert", daemon=True)
            self._conversion.start()
            # A process that exits mid-conversion waits for it: TensorFlow can abort when the interpreter
            # shuts down under a running converter.
            atexit.register(self._conversion.join, 120)
        else:
            self.engine_note = "Keras: no converted TensorFlow Lite copy of this model is cached yet."
            self.lite_ready.set()

    def _build_lite(self) -> None:
        self._lite, self.engine_note = load_engine(self.model, self.run.model_path)
        self.lite_ready.set()

    def warm_up(self) -> None:
        """Trace the compiled paths that serve single films now, so that the first real film is fast: the
        forward pass (which the gates need on every engine) and, while Keras serves single films, the
        Grad-CAM pass (the TensorFlow Lite engine computes its own)."""
        blank = np.full((1, self.image_size, self.image_size, 1), 128.0, np.float32)
        self._forward(blank)
        if self._lite is None:
            self._grad_cam.with_extra_output(blank)

    def _forward_pass(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(raw probabilities (n, k), pooled features (n, d), the population gate's depth features (n, D) or
        None for a run without it) for model-ready films (n, S, S, 1), from one forward pass."""
        outputs = [np.asarray(output) for output in self._forward(np.asarray(images, np.float32))]
        depth = np.concatenate(outputs[1:], axis=1) if self.population is not None else None
        return outputs[0], outputs[self._pooled_output], depth

    def population_features(self, images: np.ndarray) -> np.ndarray:
        """The population gate's depth features (n, D) for model-ready films (n, S, S, 1)."""
        return self._forward_pass(images)[2]

    def _gate(self, image: np.ndarray, film, features: np.ndarray,
              depth: np.ndarray | None = None) -> film_population.PopulationVerdict:
        """The gates' verdict for one film; `depth`, the film's population depth features when the forward
        pass that classified it computed them already."""
        colorfulness = float(film.meta.get("colorfulness", 0.0))
        if self.population is None:  # A run trained before the population gate: the first gate's check.
            return film_population.from_gate_result(
                film_gate.check(film.gray, colorfulness, features, self.gate_statistics))
        if depth is None:
            depth = self.population_features(image[np.newaxis])[0]
        return film_population.assess(image, film.gray, colorfulness, depth, self.population,
                                      self.population_features, self.population_note)

    def prediction_set(self, raw_probabilities: np.ndarray) -> tuple[tuple[str, ...], float | None]:
        """(classes, level) of the run's conformal set for one film's raw softmax; ((), None) without one."""
        if self.conformal is None:
            return (), None
        return tuple(set_classes(raw_probabilities, self.conformal, self.class_names)), self.conformal.level

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Raw softmax probabilities (n, k) for model-ready films (n, S, S, 1)."""
        return self.probabilities_and_features(images)[0]

    def probabilities_and_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw probabilities (n, k) and pooled backbone features (n, d) in one forward pass."""
        return self._forward_pass(images)[:2]

    def _calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        if not self.calibrated:
            return probabilities
        return apply_temperature(probabilities, self.temperature)

    def predict(self, source, name: str | None = None, with_cam: bool = False,
                display: bool = False, gate: bool = True, display_max_side: int | None = None) -> Prediction:
        """Classify one film from a path, bytes or a file-like upload. Never raises for bad input.

        with_cam adds a Grad-CAM of the predicted class; display keeps the film for showing, with its longest
        side at most `display_max_side` pixels (default DISPLAY_MAX_SIDE, 1024; a page that shows the film in
        a column passes about 512, which makes the overlay and the image sent to the browser four times
        smaller); gate checks that the film plausibly is a chest radiograph (see core.serving.gate).
        """
        started = time.perf_counter()
        label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "upload")
        try:
            data = _read_bytes(source)
            display_side = int(display_max_side or self.DISPLAY_MAX_SIDE) if display else 2 * self.image_size
            if display or gate:
                # One decode for both where the format allows (see read_film_and_model_input).
                film, image = read_film_and_model_input(data, self.image_size, name=label, max_side=display_side)
            else:
                film, image = None, load_image(data, self.image_size)
        except ImageLoadError as error:
            return Prediction(label, error=str(error), seconds=time.perf_counter() - started)
        except OSError as error:
            return Prediction(label, error=f"{label} could not be read ({error.strerror or error}).",
                              seconds=time.perf_counter() - started)
        batch = image[np.newaxis].astype(np.float32)
        lite, depth = self._lite, None
        if lite is not None:
            probabilities, pooled, cam = lite(batch, with_cam=with_cam)
            raw, features = probabilities[np.newaxis], pooled[np.newaxis]
        elif with_cam:
            raw, cams, features = self._grad_cam.with_extra_output(batch)
            cam = cams[0]
        else:
            raw, features, depth = self._forward_pass(batch)
            cam = None
        gate_result = self._gate(image, film, features[0], None if depth is None else depth[0]) if gate else None
        prediction_set, set_level = self.prediction_set(raw[0])
        probabilities = self._calibrate(raw)[0]
        top = int(np.argmax(probabilities))
        return Prediction(
            file=label, label=self.class_names[top], confidence=float(probabilities[top]),
            probabilities={c: float(p) for c, p in zip(self.class_names, probabilities)},
            raw_probabilities={c: float(p) for c, p in zip(self.class_names, raw[0])},
            calibrated=self.calibrated, cam=cam, gray=film.gray if display else None,
            notices=film.notices if film else (), gate=gate_result, prediction_set=prediction_set,
            set_level=set_level, uncertain=_is_uncertain(prediction_set, set_level),
            seconds=time.perf_counter() - started,
            engine=lite.name if lite is not None else "Keras",
            similar=tuple(nearest(self.similar_index, features[0])),
        )

    def predict_files(self, paths: list[str | os.PathLike], batch_size: int = 64) -> list[Prediction]:
        """Classify many files in batches, decoding in parallel; failed files get an error each."""
        paths = [Path(p) for p in paths]
        results: dict[Path, Prediction] = {}
        for chunk, images, errors, _ in decode_in_chunks(paths, self.image_size, chunk_size=batch_size):
            for path, reason in errors.items():
                results[path] = Prediction(str(path), error=reason)
            if len(images):
                lite = self._lite
                raw = lite.probabilities(images) if lite is not None else self.probabilities(images)
                probabilities = self._calibrate(raw)
                for path, row, raw_row in zip(chunk, probabilities, raw):
                    top = int(np.argmax(row))
                    prediction_set, set_level = self.prediction_set(raw_row)
                    results[path] = Prediction(
                        str(path), self.class_names[top], float(row[top]),
                        {c: float(p) for c, p in zip(self.class_names, row)}, calibrated=self.calibrated,
                        prediction_set=prediction_set, set_level=set_level,
                        uncertain=_is_uncertain(prediction_set, set_level))
        return [results[p] for p in paths]


def _is_uncertain(prediction_set: tuple[str, ...], set_level: float | None) -> bool | None:
    return len(prediction_set) > 1 if set_level is not None else None


def _population_words(run: Run) -> str:
    """A few words on a run's training films for the gate's reasons, e.g. "nih-cxr4 films, 162 in training"."""
    report = run.data_report or {}
    name = Path(str(report.get("root") or "")).name or "its training"
    subsets = report.get("subsets") or {}
    train = subsets.get("train") if isinstance(subsets, dict) else None
    count = sum(v for v in train.values() if isinstance(v, int)) if isinstance(train, dict) else None
    return f"{name} films, {count} in training" if isinstance(count, int) else f"{name} films"


def _read_bytes(source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "getvalue"):
        return source.getvalue()
    if hasattr(source, "read"):
        return source.read()
    return read_file_bytes(source)  # a FIFO or an over-large file is refused without being read
