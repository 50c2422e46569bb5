"""Fast single-film inference: the run's model compiled with TensorFlow Lite, Grad-CAM in closed form.

On these 2-core CPUs the Keras model takes about 25 ms per film on its own, however it is called (eager,
compiled `tf.function`, `predict`). The same weights run through TensorFlow Lite's XNNPACK kernels in
about 6 ms. `LiteEngine` converts the run's model once (float32, no quantisation: its outputs match Keras
to about 1e-6) into a graph with three outputs, the last convolution's feature maps (`Conv_1`), the pooled
features the gate scores (`head_pool`) and the class probabilities, and caches the file on disk.

Grad-CAM needs the gradient of the chosen class's logit with respect to the `Conv_1` maps A. Everything
after `Conv_1` in a core.model network is elementwise or linear, so that gradient has a closed form:

    x = s1 * A + t1                      Conv_1_bn (inference: a per-channel scale and shift)
    r = min(max(x, 0), 6)                out_relu
    p = mean over positions of r         head_pool
    z = (s2 * p + t2) @ W + b            head_bn, head_dropout (identity at inference), predictions logits

    dz_c / dA[i, j, k] = W[k, c] * s2[k] * s1[k] * [0 < x[i, j, k] < 6] / (h * w)

The Grad-CAM channel weights are the mean of that gradient over positions; the CAM is the positive part of
the weighted sum of the maps, upsampled bilinearly (half-pixel centres, as tf.image.resize) and divided by
its maximum: exactly what core.explain.gradcam.GradCam computes with a gradient tape, in about 1 ms of NumPy.

The engine checks itself when built: the head recomputed from its maps must give its own pooled features
and probabilities. A model of another shape fails that check and the caller keeps the Keras path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from core.settings import cache_dir

ENGINE_VERSION = 1
MAPS_LAYER = "Conv_1"
HEAD_CHAIN = ("Conv_1", "Conv_1_bn", "out_relu", "head_pool", "head_bn", "head_dropout", "predictions")


class EngineUnavailable(RuntimeError):
    """The fast engine cannot serve this model here; the message says why (the Keras path still works)."""


def cached_path(model_path: str | os.PathLike) -> Path:
    """The cache file for a model file: named by the model's SHA-256, the TensorFlow version and ours."""
    import tensorflow as tf

    status = Path(model_path).stat()
    digest = _model_digest(str(Path(model_path).resolve()), status.st_mtime_ns, status.st_size)
    return cache_dir() / "lite" / f"{digest}-tf{tf.__version__}-v{ENGINE_VERSION}.tflite"


@functools.lru_cache(maxsize=64)
def _model_digest(path: str, mtime_ns: int, size: int) -> str:
    """SHA-256 of a model file, hashed once per version of the file (its path, time and size)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


def convert(model) -> bytes:
    """The float32 TensorFlow Lite flatbuffer of `model` with outputs maps, features and probabilities.

    The graph is frozen (its variables made constants) before the converter sees it: 3.4 s for the demo
    model (width 1.0, 224 px) on these 2 cores, against 14 s through `from_keras_model`, which writes and
    reloads a SavedModel first. A frozen graph has no signature, so the "serving_default" one the engine
    calls is written into the flatbuffer. Should the frozen path fail, the SavedModel path is used instead.
    """
    import keras

    _check_chain(model)
    outputs = {
        "maps": model.get_layer(MAPS_LAYER).output,
        "features": model.get_layer("head_pool").output,
        "probabilities": model.output,
    }
    return convert_keras(keras.Model(model.input, outputs))


def convert_keras(graph, configure=None) -> bytes:
    """A single-input keras.Model as a TensorFlow Lite flatbuffer, through a frozen graph (see `convert`).

    `configure(converter)`, when given, sets the converter's options (quantisation). The signature is
    "serving_default" with the model's input name and, as `from_keras_model` names them, the dict keys
    of a dict output or "output_0" for a single output.
    """
    import tensorflow as tf

    input_name = graph.inputs[0].name.split(":")[0] or "film"
    try:
        return frozen_flatbuffer(graph, input_name, configure)
    except Exception as error:  # noqa: BLE001 - the slower path below converts every model the fast one does.
        warnings.warn(f"Converting through a frozen graph failed ({type(error).__name__}: {error}); "
                      "converting through a SavedModel instead (slower).", RuntimeWarning, stacklevel=2)
        converter = tf.lite.TFLiteConverter.from_keras_model(graph)
        if configure:
            configure(converter)
        # The converter prints the whole saved-model signature (hundreds of lines) to stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            return converter.convert()


def frozen_flatbuffer(graph, input_name: str, configure=None) -> bytes:
    """Convert a single-input keras.Model with its variables frozen to constants; see `convert_keras`."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, *graph.inputs[0].shape[1:]), tf.float32, name=input_name)
    function = tf.function(lambda film: graph(film, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    # Without a trackable object the converter takes its graph-def path (what makes this fast) and logs, on
    # every call, that the path is deprecated; TensorFlow is pinned, and convert_keras falls back if it goes.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        if configure:
            configure(converter)
        flatbuffer = converter.convert()
    finally:
        absl_logger.setLevel(level)
    # The frozen graph's outputs come in tf.nest order, which for a dict is its sorted keys.
    output_names = sorted(graph.output) if isinstance(graph.output, dict) else ["output_0"]
    return add_signature(flatbuffer, [input_name], output_names)


def add_signature(flatbuffer: bytes, input_names: list[str], output_names: list[str]) -> bytes:
    """The flatbuffer with a "serving_default" signature naming its main graph's inputs and outputs, in order."""
    flatbuffer_utils, schema = flatbuffer_modules()
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    subgraph = model.subgraphs[0]
    if len(subgraph.inputs) != len(input_names) or len(subgraph.outputs) != len(output_names):
        raise ValueError(f"The graph has {len(subgraph.inputs)} inputs and {len(subgraph.outputs)} outputs; "
                         f"got names for {len(input_names)} and {len(output_names)}.")

    def tensor_map(name, index):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs = [tensor_map(n, i) for n, i in zip(input_names, subgraph.inputs)]
    signature.outputs = [tensor_map(n, i) for n, i in zip(output_names, subgraph.outputs)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def flatbuffer_modules():
    """TensorFlow Lite's flatbuffer_utils and schema modules (to read and edit .tflite files)."""
    import importlib

    # `import tensorflow.lite.tools...` resolves to TensorFlow's public API module, which lacks `tools`.
    return (importlib.import_module("tensorflow.lite.tools.flatbuffer_utils"),
            importlib.import_module("tensorflow.lite.python.schema_py_generated"))


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


class LiteEngine:
    """A run's model for single films: probabilities, pooled features and Grad-CAM in one fast call.

    Build it with `LiteEngine.for_model_file(model, model_path)` (converts once, then reuses the cached
    file) or `LiteEngine(model, flatbuffer)`. Calls are serialised with a lock: one interpreter serves
    one film at a time, which is what a Streamlit server with several sessions needs.

    Raises EngineUnavailable when the model is not a core.model network or the runtime is missing.
    """

    name = "TensorFlow Lite"

    def __init__(self, model, flatbuffer: bytes, num_threads: int | None = None):
        import tensorflow as tf

        self.image_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.grad_cam = ClosedFormGradCam(model)
        if num_threads is None and hasattr(os, "sched_getaffinity"):
            num_threads = len(os.sched_getaffinity(0))  # The CPUs this process may use.
        with warnings.catch_warnings():
            # tf.lite.Interpreter announces its move to the ai-edge-litert package; it still works here.
            warnings.simplefilter("ignore")
            try:
                self._interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads)
            except (ValueError, RuntimeError) as error:
                raise EngineUnavailable(f"TensorFlow Lite could not load the converted model ({error}).") from None
            except AttributeError:
                raise EngineUnavailable("This TensorFlow build has no tf.lite.Interpreter.") from None
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
                "The model's layers after Conv_1 are not the core.model head (BatchNormalization, ReLU6, "
                "global average pooling, BatchNormalization, Dropout, softmax Dense), so the closed-form "
                "Grad-CAM does not apply; the Keras path is used."
            )


class ClosedFormGradCam:
    """Grad-CAM from one film's `Conv_1` maps, without a gradient tape (see the module docstring).

    >>> ClosedFormGradCam(model)(maps, class_index)        # doctest: +SKIP
    """

    def __init__(self, model):
        _check_chain(model)
        self.image_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.head = _HeadMaths(model)
        self._upsample = {}

    def __call__(self, maps: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM (S, S) in [0, 1] of class `class_index` from one film's `Conv_1` maps (h, w, c)."""
        height, width = maps.shape[:2]
        weights = self.head.channel_weights(maps, class_index)
        cam = np.maximum(maps @ weights, 0.0)
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
        scale1, shift1 = _batch_norm_affine(model.get_layer("Conv_1_bn"))
        scale2, shift2 = _batch_norm_affine(model.get_layer("head_bn"))
        dense = model.get_layer("predictions")
        self.scale1, self.shift1 = scale1, shift1
        self.scale2, self.shift2 = scale2, shift2
        self.kernel = np.asarray(dense.kernel, np.float64)
        self.bias = np.asarray(dense.bias, np.float64) if dense.use_bias else np.zeros(self.kernel.shape[1])

    def forward(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        activated = np.clip(maps * self.scale1 + self.shift1, 0.0, 6.0)
        pooled = activated.mean(axis=(0, 1))
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
    relu = layers[2].get_config()
    dense = layers[-1]
    if (relu.get("max_value") != 6.0 or relu.get("negative_slope") or relu.get("threshold")
            or getattr(dense.activation, "__name__", "") != "softmax"):
        raise EngineUnavailable("The head is not ReLU6 then a softmax Dense layer; the Keras path is used.")
