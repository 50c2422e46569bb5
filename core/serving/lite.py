"""Fast single-film inference: the run's model compiled with TensorFlow Lite, Grad-CAM in closed form.

The Keras model is slow per single film on a CPU however it is called (eager, compiled `tf.function`,
`predict`); the same weights run much faster through TensorFlow Lite's XNNPACK kernels (bench/ measures
both). `LiteEngine` converts the run's model once (float32, no quantisation: its outputs match Keras within
1e-5) into a graph with three outputs, the last convolution's feature maps (`Conv_1`), the pooled features
the gate scores (`head_pool`) and the class probabilities, and caches the file on disk. The layer names
are core.model's.

Grad-CAM needs the gradient of the chosen class's logit with respect to the `Conv_1` maps A. Everything
after `Conv_1` in a core.model network is elementwise or linear, so that gradient has a closed form:

    x = s1 * A + t1                      Conv_1_bn (inference: a per-channel scale and shift)
    r = min(max(x, 0), 6)                out_relu
    p = mean over positions of r         head_pool
    z = (s2 * p + t2) @ W + b            head_bn, head_dropout (identity at inference), predictions logits

    dz_c / dA[i, j, k] = W[k, c] * s2[k] * s1[k] * [0 < x[i, j, k] < 6] / (h * w)

The Grad-CAM channel weights are the mean of that gradient over positions; the CAM is the positive part of
the weighted sum of the maps, upsampled bilinearly (half-pixel centres, as tf.image.resize) and divided by
its maximum: exactly what core.explain.gradcam.GradCam computes with a gradient tape, in a few NumPy products.

At the CAM layer `out_relu` (core.model.CAM_LAYER_NAME, the default) the gradient is constant over positions,

    dz_c / dr[i, j, k] = W[k, c] * s2[k] / (h * w)

so Grad-CAM there is the class-weighted sum of the activated maps r, the CAM of Zhou et al., computed from the
same `Conv_1` output (r is its batch-norm and ReLU6).

The engine checks itself when built: the head recomputed from its maps must give its own pooled features
and probabilities. A model of another shape fails that check and the caller keeps the Keras path.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from core.model import (
    BACKBONE_OUTPUT_LAYER_NAME,
    CAM_LAYER_NAME,
    HEAD_BN_LAYER_NAME,
    HEAD_CHAIN,
    LAST_CONV_BN_LAYER_NAME,
    LAST_CONV_LAYER_NAME,
    POOLED_FEATURES_LAYER_NAME,
    PREDICTIONS_LAYER_NAME,
)
from core.serving.tflite import convert_keras, model_digest
from core.settings import cache_dir

ENGINE_VERSION = 1


LITERT_RUNTIME = "ai-edge-litert"
TF_LITE_RUNTIME = "tf.lite (deprecated)"
_RUNTIME_WARNED = False


class EngineUnavailable(RuntimeError):
    """The fast engine cannot serve this model here; the message says why (the Keras path still works)."""


def cached_path(model_path: str | os.PathLike) -> Path:
    """The cache file for a model file: named by the model's SHA-256, the TensorFlow version and ours."""
    import tensorflow as tf

    return cache_dir() / "lite" / f"{model_digest(model_path)}-tf{tf.__version__}-v{ENGINE_VERSION}.tflite"


def convert(model) -> bytes:
    """The float32 TensorFlow Lite flatbuffer of `model` with outputs maps, features and probabilities.

    Raises EngineUnavailable when the model is not core.model's network (see `_check_chain`).
    """
    import keras

    _check_chain(model)
    outputs = {
        "maps": model.get_layer(LAST_CONV_LAYER_NAME).output,
        "features": model.get_layer(POOLED_FEATURES_LAYER_NAME).output,
        "probabilities": model.output,
    }
    return convert_keras(keras.Model(model.input, outputs))


def load_engine(model, model_path: str | os.PathLike) -> tuple["LiteEngine | None", str]:
    """(engine, note): the fast engine for a saved model, or None and the reason the Keras path stays.

    Never raises: a model of another shape, a missing runtime or a converter failure leaves the caller on
    Keras, which works for every model.
    """
    try:
        return LiteEngine.for_model_file(model, model_path), (
            "TensorFlow Lite (XNNPACK), float32: the same outputs as Keras within 1e-5.")
    except EngineUnavailable as error:
        return None, f"Keras: {error}"
    except Exception as error:  # noqa: BLE001 - any converter failure leaves the working Keras path.
        return None, f"Keras: the TensorFlow Lite conversion failed ({type(error).__name__}: {error})."


def tflite_runtime() -> tuple[type, str]:
    """(the Interpreter class, its name): the maintained `ai-edge-litert` package where it is installed,
    else TensorFlow's own `tf.lite.Interpreter`, which TensorFlow deprecates in its favour.

    The fallback warns once, naming the package to install; both run the same flatbuffers with the same
    XNNPACK kernels. Raises EngineUnavailable when neither exists.
    """
    global _RUNTIME_WARNED
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, LITERT_RUNTIME
    except ImportError as error:
        reason = str(error)
    import tensorflow as tf

    interpreter = getattr(getattr(tf, "lite", None), "Interpreter", None)
    if interpreter is None:
        raise EngineUnavailable(f"Neither ai-edge-litert ({reason}) nor tf.lite.Interpreter is available.")
    if not _RUNTIME_WARNED:
        _RUNTIME_WARNED = True
        warnings.warn(f"ai-edge-litert is not installed ({reason}); running TensorFlow Lite models on the "
                      "deprecated tf.lite.Interpreter. `pip install ai-edge-litert` (see requirements.txt).",
                      stacklevel=2)
    return interpreter, TF_LITE_RUNTIME


def tflite_interpreter(**arguments):
    """An Interpreter of `tflite_runtime()` built with these arguments (model_path= or model_content=, ...)."""
    interpreter, _ = tflite_runtime()
    with warnings.catch_warnings():
        # tf.lite.Interpreter announces its own deprecation on every construction; tflite_runtime said it once.
        warnings.simplefilter("ignore")
        return interpreter(**arguments)


class LiteEngine:
    """A run's model for single films: probabilities, pooled features and Grad-CAM in one fast call.

    Build it with `LiteEngine.for_model_file(model, model_path)` (converts once, then reuses the cached
    file) or `LiteEngine(model, flatbuffer)`. Calls are serialised with a lock: one interpreter serves
    one film at a time, which is what a Streamlit server with several sessions needs.

    Raises EngineUnavailable when the model is not a core.model network or the runtime is missing.
    """

    name = "TensorFlow Lite"

    def __init__(self, model, flatbuffer: bytes, num_threads: int | None = None):
        self.image_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.grad_cam = ClosedFormGradCam(model)
        if num_threads is None and hasattr(os, "sched_getaffinity"):
            num_threads = len(os.sched_getaffinity(0))  # The CPUs this process may use.
        try:
            self._interpreter = tflite_interpreter(model_content=flatbuffer, num_threads=num_threads)
        except (ValueError, RuntimeError) as error:
            raise EngineUnavailable(f"TensorFlow Lite could not load the converted model ({error}).") from None
        self._runner = self._interpreter.get_signature_runner()
        inputs = self._interpreter.get_signature_list()["serving_default"]["inputs"]
        self._input_name = inputs[0]
        self._lock = threading.Lock()
        self._self_check()

    @classmethod
    def for_model_file(cls, model, model_path: str | os.PathLike, num_threads: int | None = None) -> "LiteEngine":
        """The engine for a saved model, converting it only when no cached conversion exists."""
        path = cached_path(model_path)
        if path.is_file():
            flatbuffer = path.read_bytes()
            try:
                return cls(model, flatbuffer, num_threads)
            except EngineUnavailable:
                path.unlink(missing_ok=True)  # A damaged cache file is rebuilt below.
        flatbuffer = convert(model)
        engine = cls(model, flatbuffer, num_threads)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            partial.write_bytes(flatbuffer)
            os.replace(partial, path)
        except OSError:
            pass  # No writable cache: the engine works, the next process converts again.
        return engine

    def __call__(self, image: np.ndarray, with_cam: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One raw film (S, S, 1) or (1, S, S, 1) in 0..255 -> (probabilities (k,), features (d,), cam or None).

        The CAM, when asked for, is the Grad-CAM of the predicted class, (S, S) float32 in [0, 1].
        """
        batch = np.asarray(image, np.float32).reshape((1, *self.image_shape))
        with self._lock:
            out = self._runner(**{self._input_name: batch})
            maps, features, probabilities = (np.array(out[k][0]) for k in ("maps", "features", "probabilities"))
        cam = self.grad_cam(maps, int(np.argmax(probabilities))) if with_cam else None
        return probabilities, features, cam

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n, k) for films (n, S, S, 1), one film at a time."""
        rows = [self(image)[0] for image in np.asarray(images)]
        return np.stack(rows) if rows else np.zeros((0, self.grad_cam.head.kernel.shape[1]), np.float32)

    def _self_check(self) -> None:
        """The closed-form head must reproduce the converted model's own features and probabilities."""
        rng = np.random.default_rng(0)
        film = rng.integers(0, 256, self.image_shape).astype(np.float32)
        with self._lock:
            out = self._runner(**{self._input_name: film[np.newaxis]})
        maps, features, probabilities = (np.asarray(out[k][0], np.float64) for k in ("maps", "features", "probabilities"))
        pooled, recomputed = self.grad_cam.head.forward(maps)
        if not (np.allclose(pooled, features, atol=1e-4) and np.allclose(recomputed, probabilities, atol=1e-4)):
            raise EngineUnavailable(
                f"The model's layers after {LAST_CONV_LAYER_NAME} are not the core.model head (BatchNormalization, "
                "ReLU6, global average pooling, BatchNormalization, Dropout, softmax Dense), so the closed-form "
                "Grad-CAM does not apply; the Keras path is used."
            )


class ClosedFormGradCam:
    """Grad-CAM from one film's `Conv_1` maps, without a gradient tape (see the module docstring).

    `layer_name` is where Grad-CAM is taken: `out_relu` (CAM_LAYER_NAME, the default, as for
    core.explain.gradcam.GradCam) or `Conv_1`; ValueError for any other layer.

    >>> ClosedFormGradCam(model)(maps, class_index)        # doctest: +SKIP
    """

    LAYERS = (BACKBONE_OUTPUT_LAYER_NAME, LAST_CONV_LAYER_NAME)

    def __init__(self, model, layer_name: str = CAM_LAYER_NAME):
        if layer_name not in self.LAYERS:
            raise ValueError(f"Got layer_name={layer_name!r}; the closed form exists for {self.LAYERS} only.")
        _check_chain(model)
        self.layer_name = layer_name
        self.image_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.head = _HeadMaths(model)
        self._upsample = {}

    def __call__(self, maps: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM (S, S) in [0, 1] of class `class_index` from one film's `Conv_1` maps (h, w, c)."""
        height, width = maps.shape[:2]
        if self.layer_name == BACKBONE_OUTPUT_LAYER_NAME:
            cam = np.maximum(self.head.activated(maps) @ self.head.output_weights(class_index, height * width), 0.0)
        else:
            cam = np.maximum(maps @ self.head.channel_weights(maps, class_index), 0.0)
        rows, cols = self._upsampling(height, self.image_shape[0]), self._upsampling(width, self.image_shape[1])
        cam = rows @ cam @ cols.T
        peak = float(cam.max())
        if peak > 0:
            cam /= peak
        return np.clip(cam, 0.0, 1.0).astype(np.float32)

    def _upsampling(self, size_in: int, size_out: int) -> np.ndarray:
        key = (size_in, size_out)
        if key not in self._upsample:
            self._upsample[key] = bilinear_matrix(size_in, size_out)
        return self._upsample[key]


class _HeadMaths:
    """The layers after Conv_1 as per-channel scales and a matrix (see the module docstring)."""

    def __init__(self, model):
        scale1, shift1 = _batch_norm_affine(model.get_layer(LAST_CONV_BN_LAYER_NAME))
        scale2, shift2 = _batch_norm_affine(model.get_layer(HEAD_BN_LAYER_NAME))
        dense = model.get_layer(PREDICTIONS_LAYER_NAME)
        self.scale1, self.shift1 = scale1, shift1
        self.scale2, self.shift2 = scale2, shift2
        self.kernel = np.asarray(dense.kernel, np.float64)
        self.bias = np.asarray(dense.bias, np.float64) if dense.use_bias else np.zeros(self.kernel.shape[1])

    def activated(self, maps: np.ndarray) -> np.ndarray:
        """out_relu's maps r from Conv_1's maps A."""
        return np.clip(maps * self.scale1 + self.shift1, 0.0, 6.0)

    def forward(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pooled = self.activated(maps).mean(axis=(0, 1))
        logits = (pooled * self.scale2 + self.shift2) @ self.kernel + self.bias
        logits -= logits.max()
        exp = np.exp(logits)
        return pooled, exp / exp.sum()

    def channel_weights(self, maps: np.ndarray, class_index: int) -> np.ndarray:
        height, width = maps.shape[:2]
        pre = maps * self.scale1 + self.shift1
        active = ((pre > 0) & (pre < 6)).mean(axis=(0, 1))
        weights = self.kernel[:, class_index] * self.scale2 * self.scale1 * active / (height * width)
        return weights.astype(np.float32)

    def output_weights(self, class_index: int, positions: int) -> np.ndarray:
        """Grad-CAM's channel weights at out_relu: the class's head weights, the same at every position."""
        return (self.kernel[:, class_index] * self.scale2 / positions).astype(np.float32)


def _batch_norm_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BatchNormalization as y = scale * x + shift (per channel)."""
    mean = np.asarray(layer.moving_mean, np.float64)
    variance = np.asarray(layer.moving_variance, np.float64)
    gamma = np.asarray(layer.gamma, np.float64) if layer.scale else np.ones_like(mean)
    beta = np.asarray(layer.beta, np.float64) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of bilinear upsampling with half-pixel centres (tf.image.resize's rule)."""
    matrix = np.zeros((size_out, size_in), np.float32)
    centres = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    centres = np.clip(centres, 0.0, size_in - 1)
    lower = np.floor(centres).astype(int)
    upper = np.minimum(lower + 1, size_in - 1)
    fraction = (centres - lower).astype(np.float32)
    matrix[np.arange(size_out), lower] += 1.0 - fraction
    matrix[np.arange(size_out), upper] += fraction
    return matrix


def _check_chain(model) -> None:
    """Raise EngineUnavailable unless the layers after Conv_1 are core.model's head, in that order."""
    try:
        layers = [model.get_layer(name) for name in HEAD_CHAIN]
    except ValueError:
        raise EngineUnavailable(f"The model has no layers named {', '.join(HEAD_CHAIN)}; it was not built by "
                                "core.model, so the Keras path is used.") from None
    for previous, layer in zip(layers, layers[1:]):
        if layer.input is not previous.output:
            raise EngineUnavailable(f"Layer {layer.name} does not take {previous.name}'s output; the Keras path "
                                    "is used.")
    relu = model.get_layer(BACKBONE_OUTPUT_LAYER_NAME).get_config()
    dense = model.get_layer(PREDICTIONS_LAYER_NAME)
    if (relu.get("max_value") != 6.0 or relu.get("negative_slope") or relu.get("threshold")
            or getattr(dense.activation, "__name__", "") != "softmax"):
        raise EngineUnavailable("The head is not ReLU6 then a softmax Dense layer; the Keras path is used.")
