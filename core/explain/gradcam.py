"""Grad-CAM explanations: where in the film the model looked, as heatmaps over the film.

Two implementations share one definition of the output (a CAM per image, upsampled to the model input
size and divided by its own maximum, so its values are in [0, 1] and an all-zero CAM stays all zero):

- `GradCam` (and the `grad_cam` shortcut) is the fast path used by the pages. It compiles one
  `tf.function` that runs the model once and returns both the class probabilities and the CAMs, so a
  prediction with its explanation costs one forward pass plus a small backward pass through the head.
- `grad_cam_vis` uses tf-keras-vis (Grad-CAM or Grad-CAM++). It is slower (eager, and it rebuilds a
  model on every call) and serves as the reference the fast path is tested against.

Drawing a CAM over a film is core.explain.overlay; how much of it lies on the film's border is
core.explain.regions.

The model takes raw pixels (see core.model), so every function here takes raw films too:
(n, image_size, image_size, 1) arrays of 0..255, uint8 or float, as made by core.imaging.loader.load_image.

Example::

    explainer = GradCam(model)                       # once per model (compiles on the first call)
    probabilities, cams = explainer(films)           # (n, k) and (n, S, S)
    picture = core.explain.overlay.overlay(film.gray, cams[0])   # uint8 RGB at the film's own size
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref

import numpy as np

from core.model import CAM_LAYER_NAME, POOLED_FEATURES_LAYER_NAME
from core.validation import check_int

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")
"""Methods of `grad_cam_vis`: tf-keras-vis's Gradcam, GradcamPlusPlus, Scorecam and Layercam."""

# GradCam objects per model and layer name, and tf-keras-vis objects per model and method. The keys are
# weak, so a model that is no longer used elsewhere (for example replaced in Streamlit's resource cache)
# is freed together with its explainers. The values must therefore never hold the model itself.
_GRAD_CAM_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_VIS_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------------
# Fast Grad-CAM
# --------------------------------------------------------------------------------------------------


class GradCam:
    """Fast Grad-CAM: one compiled tf.function that returns probabilities and CAMs in ONE forward pass.

    Grad-CAM (Selvaraju et al., 2017), step by step, for each image:

    1. Run the model once, keeping the feature maps A of `layer_name` (h x w x c; `out_relu` is 7 x 7 x 1280
       for a 224 film) and the class scores.
    2. Take the gradient of the chosen class's score with respect to A.
    3. Average that gradient over the h x w positions: one weight per channel, that is how much the class
       score rises when the channel lights up.
    4. Sum the channels of A weighted by those weights and keep the positive part (ReLU): the regions
       whose activation pushes the score up.
    5. Upsample to the input size (bilinear, tf.image.resize) and divide by the image's maximum, so values
       are in [0, 1]. An image whose map is all zero keeps an all-zero map instead of NaN.

    The class score is the pre-softmax score (the logit) when the model ends in a softmax Dense layer, as
    models from core.model.build_model do: the logit of a class depends only on evidence for that class,
    whereas the gradient of a softmax probability also carries the other classes' evidence with a minus
    sign and vanishes when the model is confident. This is also what tf-keras-vis's `ReplaceToLinear`
    does. For any other final layer, the gradient of the output itself (the selected probability) is used.

    Args:
        model: a Keras model taking raw films (n, S, S, 1), such as one from core.model.build_model. The
            explainer shares the model's layers and variables, so later training of the model is seen.
        layer_name: the layer whose feature maps are weighted. Any layer with a 4-D output
            (batch, height, width, channels) works; the default is core.model.CAM_LAYER_NAME, the last block's
            post-activation output, where Grad-CAM is the class-weighted sum of the maps (the CAM).
        extra_output_name: optionally, a layer whose output the same forward pass also returns (see
            `with_extra_output`), such as the pooled features core.serving.gate needs. None (default) adds nothing.

    Raises:
        ValueError: `layer_name` is not a layer of the model, or its output is not a 4-D feature map. The
            message lists the model's convolution layers. `extra_output_name` is not a layer of the model.
    """

    def __init__(self, model, layer_name: str = CAM_LAYER_NAME, extra_output_name: str | None = None):
        import keras
        import tensorflow as tf

        layer = _feature_layer(model, layer_name)
        self.layer_name = layer_name
        self.image_shape = tuple(model.inputs[0].shape[1:])
        if len(self.image_shape) != 3:
            raise ValueError(
                f"Got a model whose input shape is {model.inputs[0].shape}; expected (None, height, width, "
                "channels), such as the (None, 224, 224, 1) of core.model.build_model."
            )
        output_layer = model.layers[-1]
        activation = getattr(output_layer, "activation", None)
        self.uses_logits = (
            isinstance(output_layer, keras.layers.Dense)
            and getattr(activation, "__name__", "") == "softmax"
        )
        if self.uses_logits:
            # The Dense layer's input; its logits are computed below with the layer's own variables.
            score_source = output_layer.input
        else:
            score_source = model.outputs[0]
        # One model, built once: the feature maps, what the scores are made from, and the extra output if
        # asked for. It shares the layers (and so the weights) of `model` but holds no reference to `model`.
        outputs = [layer.output, score_source]
        if extra_output_name is not None:
            try:
                outputs.append(model.get_layer(extra_output_name).output)
            except ValueError:
                raise ValueError(
                    f"Got extra_output_name={extra_output_name!r}, which is not a layer of the model."
                ) from None
        self.extra_output_name = extra_output_name
        self._feature_model = keras.Model(model.inputs, outputs)
        self._output_layer = output_layer if self.uses_logits else None
        self.num_classes = int(model.outputs[0].shape[-1])
        self._warned_range = False

        height, width, channels = self.image_shape
        signature = [
            tf.TensorSpec((None, height, width, channels), tf.float32, name="images"),
            tf.TensorSpec((None,), tf.int32, name="class_indices"),
        ]
        self._compute = tf.function(self._probabilities_and_cams, input_signature=signature,
                                    reduce_retracing=True)

    def _probabilities_and_cams(self, images, class_indices):
        """Graph body: (n, S, S, C) float32 films and (n,) class indices (-1 = predicted class)."""
        import tensorflow as tf

        # Watching the films (not the variables) records every operation downstream of them, so the
        # gradient reaches the feature maps whichever layers are frozen. Only the ops between the
        # feature maps and the score are differentiated; the rest is pruned from the compiled graph.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            feature_maps, score_source, *extra = self._feature_model(images, training=False)
            if self._output_layer is not None:
                logits = tf.matmul(tf.cast(score_source, tf.float32), self._output_layer.kernel)
                if self._output_layer.use_bias:
                    logits = logits + self._output_layer.bias
                scores = logits
                probabilities = tf.nn.softmax(logits, axis=-1)
            else:
                scores = score_source
                probabilities = score_source
            predicted = tf.argmax(scores, axis=-1, output_type=tf.int32)
            chosen = tf.where(class_indices < 0, predicted, class_indices)
            # Each image's score depends only on its own feature maps (inference mode), so the gradient
            # of the batch sum gives every image its own gradient in one backward pass.
            chosen_scores = tf.gather(scores, chosen, axis=1, batch_dims=1)
            total_score = tf.reduce_sum(chosen_scores)
        gradients = tape.gradient(total_score, feature_maps)
        # float32 maths even when the model runs in mixed precision.
        gradients, feature_maps = tf.cast(gradients, tf.float32), tf.cast(feature_maps, tf.float32)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(feature_maps * channel_weights, axis=-1))
        cams = tf.image.resize(cams[..., tf.newaxis], tf.shape(images)[1:3], method="bilinear")[..., 0]
        maxima = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
        cams = tf.clip_by_value(tf.math.divide_no_nan(cams, maxima), 0.0, 1.0)
        return (tf.cast(probabilities, tf.float32), cams, *extra)

    def __call__(self, images, class_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and Grad-CAMs of a batch of films in one forward pass.

        Args:
            images: (n, S, S, 1) raw films, uint8 or float in 0..255 (core.imaging.loader.load_image output,
                stacked); a single (S, S, 1) film is treated as a batch of one.
            class_index: the class to explain for every image, or None (default) to explain each image's
                own predicted class.

        Returns:
            (probabilities, cams): probabilities (n, k) float32, the same as model(images); cams
            (n, S, S) float32 in [0, 1], each divided by its own maximum (all zero when nothing in the
            image raises the class score).

        Raises:
            ValueError: wrong image shape, or class_index outside 0..k-1.
        """
        probabilities, cams, *_ = self._run(images, class_index)
        return probabilities, cams

    def with_extra_output(self, images, class_index: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, Grad-CAMs and the `extra_output_name` layer's output, all from ONE forward pass.

        Same arguments as calling the explainer. Returns (probabilities (n, k), cams (n, S, S), extra (n, ...)),
        for example the pooled features that core.serving.gate scores, so a prediction with its explanation and its
        gate check runs the model once.

        Raises:
            ValueError: the explainer was built without `extra_output_name`, or as for calling it.
        """
        if self.extra_output_name is None:
            raise ValueError("Got no extra_output_name when this GradCam was built; pass one, for example "
                             f"GradCam(model, extra_output_name={POOLED_FEATURES_LAYER_NAME!r}).")
        probabilities, cams, extra = self._run(images, class_index)
        return probabilities, cams, extra

    def _run(self, images, class_index) -> list[np.ndarray]:
        images = np.asarray(images)
        batch = _as_batch(images, self.image_shape)
        if not self._warned_range and np.issubdtype(images.dtype, np.floating):
            # Checking costs microseconds, so every float batch is checked; the warning is given once.
            self._warned_range = _warn_if_prescaled(batch)
        class_indices = _class_indices(class_index, len(batch), self.num_classes)
        return [np.asarray(output) for output in self._compute(batch, class_indices)]


def grad_cam(model, images, class_index: int | None = None,
             layer_name: str = CAM_LAYER_NAME) -> np.ndarray:
    """Grad-CAMs of a batch of films with a `GradCam` cached per model and layer (compiled once).

    Args:
        model: a Keras model taking raw films, such as one from core.model.build_model.
        images: (n, S, S, 1) raw films in 0..255 (or one (S, S, 1) film).
        class_index: class to explain for every image; None explains each image's predicted class.
        layer_name: layer whose feature maps are weighted (default: core.model.CAM_LAYER_NAME).

    Returns:
        (n, S, S) float32 CAMs in [0, 1]. Use `GradCam(model)(images)` to get the probabilities too.
    """
    return cached_grad_cam(model, layer_name)(images, class_index)[1]


def cached_grad_cam(model, layer_name: str = CAM_LAYER_NAME) -> GradCam:
    """The `GradCam` of `model` at `layer_name` that `grad_cam` uses, built (and compiled) once per model and
    layer; its calls also give the probabilities, so a caller that needs both compiles one function."""
    with _CACHE_LOCK:
        per_layer = _GRAD_CAM_CACHE.setdefault(model, {})
        if layer_name not in per_layer:
            per_layer[layer_name] = GradCam(model, layer_name)
        return per_layer[layer_name]


# --------------------------------------------------------------------------------------------------
# Reference implementation: tf-keras-vis
# --------------------------------------------------------------------------------------------------


def grad_cam_vis(model, images, class_index: int | None = None, method: str = "gradcam",
                 layer_name: str = CAM_LAYER_NAME, max_channels: int | None = None) -> np.ndarray:
    """Grad-CAM, Grad-CAM++, Score-CAM or LayerCAM computed by tf-keras-vis, normalised like `GradCam`.

    tf-keras-vis works on a clone of the model whose softmax is replaced by a linear activation
    (`ReplaceToLinear`), so the scores are logits as in `GradCam`. The clone is made once per model and
    method; its weights are copied from the model on every call, so a model trained further is still
    explained with its current weights. tf-keras-vis's coarse map is then upsampled and divided by its
    maximum exactly as in `GradCam` (tf-keras-vis itself would stretch min..max with scipy's zoom), so the
    two methods differ only in how they weight the channels.

    Slower than `GradCam` (eager, and it rebuilds a model on every call): meant for comparison and tests.

    Args:
        model: a Keras model taking raw films, such as one from core.model.build_model.
        images: (n, S, S, 1) raw films in 0..255 (or one (S, S, 1) film).
        class_index: class to explain for every image; None explains each image's predicted class.
        method: one of CAM_METHODS.
        layer_name: the layer whose feature maps are weighted, used as given (no search for a convolution).
        max_channels: Score-CAM only: keep this many channels per batch (Faster Score-CAM); None keeps all.

    Returns:
        (n, S, S) float32 CAMs in [0, 1].

    Raises:
        ValueError: unknown method or layer, wrong image shape, class_index outside 0..k-1.
        ImportError: tf-keras-vis is not installed (pip install tf-keras-vis).
    """
    import tensorflow as tf

    if method not in CAM_METHODS:
        raise ValueError(f"Got method={method!r}; must be one of {CAM_METHODS}.")
    _feature_layer(model, layer_name)
    image_shape = tuple(model.inputs[0].shape[1:])
    batch = _as_batch(images, image_shape)
    num_classes = int(model.outputs[0].shape[-1])
    class_indices = _class_indices(class_index, len(batch), num_classes)
    if class_index is None:
        # One plain forward pass to find each image's predicted class (never model.predict per image).
        probabilities = np.asarray(model(batch, training=False))
        class_indices = probabilities.argmax(axis=-1).astype(np.int32)

    visualizer = _cached_visualizer(model, method)
    visualizer.model.set_weights(model.get_weights())
    from tf_keras_vis.utils.scores import CategoricalScore

    options = {"max_N": max_channels} if method == "scorecam" else {}
    with warnings.catch_warnings():
        # tf-keras-vis passes the films as a one-element list, which Keras accepts with a warning.
        warnings.filterwarnings("ignore", message="The structure of `inputs`", category=UserWarning)
        coarse = visualizer(
            CategoricalScore(class_indices.tolist()), tf.constant(batch), penultimate_layer=layer_name,
            seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False, **options,
        )
    coarse = np.nan_to_num(np.asarray(coarse, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    cams = tf.image.resize(coarse[..., np.newaxis], image_shape[:2], method="bilinear")[..., 0].numpy()
    cams = np.maximum(cams, 0.0)
    maxima = cams.max(axis=(1, 2), keepdims=True)
    cams = np.divide(cams, maxima, out=np.zeros_like(cams), where=maxima > 0)
    return np.clip(cams, 0.0, 1.0).astype(np.float32)


def _cached_visualizer(model, method: str):
    try:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
        from tf_keras_vis.layercam import Layercam
        from tf_keras_vis.scorecam import Scorecam
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    except ImportError as error:
        raise ImportError(
            f"grad_cam_vis needs tf-keras-vis ({error}). Install it with: pip install tf-keras-vis, "
            "or use GradCam / grad_cam, which need only TensorFlow."
        ) from None
    with _CACHE_LOCK:
        per_method = _VIS_CACHE.setdefault(model, {})
        if method not in per_method:
            visualizer_class = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam,
                                "layercam": Layercam}[method]
            # clone=True: ReplaceToLinear must change a copy, never the softmax of the served model.
            visualizer = visualizer_class(model, model_modifier=ReplaceToLinear(), clone=True)
            # Score-CAM scores its masked films with the clone's predict(), which would print a progress bar.
            visualizer.model.predict = functools.partial(visualizer.model.predict, verbose=0)
            per_method[method] = visualizer
        return per_method[method]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _feature_layer(model, layer_name: str):
    """The layer named `layer_name`, checked to give 4-D feature maps; ValueError listing conv layers."""
    conv_names = [
        layer.name for layer in model.layers
        if "conv" in type(layer).__name__.lower() and len(getattr(layer.output, "shape", ())) == 4
    ]
    shown = conv_names if len(conv_names) <= 8 else ["..."] + conv_names[-8:]
    hint = (
        f"Available convolution layers ({len(conv_names)} in all, last ones shown): {', '.join(shown)}. "
        f"Paru's CAM layer is the last block's post-activation output, {CAM_LAYER_NAME!r} (core.model."
        "CAM_LAYER_NAME), where Grad-CAM equals the class-weighted sum of the maps." if conv_names
        else "The model has no convolution layers."
    )
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(
            f"Got layer_name={layer_name!r}, which is not a layer of the model. {hint}"
        ) from None
    if len(layer.output.shape) != 4:
        raise ValueError(
            f"Got layer_name={layer_name!r}, whose output shape is {tuple(layer.output.shape)}; Grad-CAM "
            f"needs a 4-D feature map (batch, height, width, channels). {hint}"
        )
    return layer


def _as_batch(images, image_shape: tuple) -> np.ndarray:
    """Films as a contiguous float32 batch (n, S, S, C); a single (S, S, C) film becomes a batch of one."""
    batch = np.asarray(images)
    if batch.ndim == len(image_shape):
        batch = batch[np.newaxis]
    expected = tuple(None if size is None else int(size) for size in image_shape)
    matches = batch.ndim == len(expected) + 1 and all(
        size is None or size == actual for size, actual in zip(expected, batch.shape[1:])
    )
    if not matches or batch.shape[0] == 0:
        raise ValueError(
            f"Got images of shape {batch.shape}; expected (n, {', '.join(map(str, expected))}) raw films "
            "in 0..255 with n >= 1. Prepare each film with core.imaging.loader.load_image and stack them."
        )
    if not (np.issubdtype(batch.dtype, np.integer) or np.issubdtype(batch.dtype, np.floating)):
        raise ValueError(f"Got images of dtype {batch.dtype}; expected uint8 or float pixels in 0..255.")
    return np.ascontiguousarray(batch, dtype=np.float32)


def _warn_if_prescaled(batch: np.ndarray) -> bool:
    """Warn (and return True) when films look already scaled to [0, 1]; the model scales 0..255 itself."""
    # An all-black batch (maximum 0) is a dark film, not a scaled one.
    looks_prescaled = bool(batch.size) and 0.0 < float(batch.max()) <= 1.0 and float(batch.min()) >= 0.0
    if looks_prescaled:
        warnings.warn(
            f"Got films with values in [0, {float(batch.max()):.3g}], which look already scaled; the model "
            "expects raw pixels in 0..255 and scales them itself. Pass core.imaging.loader.load_image output.",
            UserWarning,
            stacklevel=3,
        )
    return looks_prescaled


def _class_indices(class_index, count: int, num_classes: int) -> np.ndarray:
    """(count,) int32 class indices; -1 everywhere when class_index is None (each image's prediction)."""
    if class_index is None:
        return np.full(count, -1, dtype=np.int32)
    class_index = check_int("class_index", class_index, minimum=0,
                            expected=f"None or an integer in 0..{num_classes - 1}")
    if class_index >= num_classes:
        raise ValueError(
            f"Got class_index={class_index}; the model has {num_classes} classes, so it must be in "
            f"0..{num_classes - 1} (or None for each image's predicted class)."
        )
    return np.full(count, class_index, dtype=np.int32)
