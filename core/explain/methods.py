"""The explanation methods a person can choose, at which layer each one reads the model, and one call for all.

    cams = explain(model, films, class_indices, method="layercam")     # (n, S, S) float32 in [0, 1]

Methods (`METHODS`, the one list the CLI choices and the pages read):

- "gradcam": Grad-CAM by core.explain.gradcam.GradCam, the fast path (one compiled forward and backward pass).
- "gradcam++": Grad-CAM++ (Chattopadhay et al., 2018) by tf-keras-vis.
- "scorecam": Faster Score-CAM (Wang et al., 2020, with the channel pre-selection of tabayashi0117) by
  tf-keras-vis: gradient-free, one forward pass per kept channel (`SCORECAM_CHANNELS`), so it is slow.
- "layercam": LayerCAM (Jiang et al., 2021) by tf-keras-vis at a middle layer of the backbone
  (`core.model.MID_FEATURE_LAYER_NAME`, 14 x 14 for a 224 film): a finer map than the 7 x 7 of the last block.

The first three read the CAM layer `core.model.CAM_LAYER_NAME`, the post-activation output of the last
convolutional block (`out_relu`). With core.model's head (global average pooling, an inference batch-norm,
one Dense layer) the gradient of a class logit there is constant over the map, so Grad-CAM at that layer is
the class-weighted sum of the feature maps (the CAM of Zhou et al., 2016): an exact split of the logit over
the film. Any method can also be asked for at another 4-D layer with `layer_name`.

Every map has the definition of core.explain.gradcam: upsampled bilinearly to the model input, positive part,
divided by its own maximum (an all-zero map stays all zero).
"""

from __future__ import annotations

import numpy as np

from core.explain.gradcam import grad_cam, grad_cam_vis
from core.model import CAM_LAYER_NAME, MID_FEATURE_LAYER_NAME

METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")
"""Explanation methods, fastest first; the first is the default."""
DEFAULT_METHOD = METHODS[0]
METHOD_LABELS = {
    "gradcam": "Grad-CAM (fast)",
    "gradcam++": "Grad-CAM++ (tf-keras-vis)",
    "scorecam": "Faster Score-CAM (tf-keras-vis, slow)",
    "layercam": "LayerCAM (tf-keras-vis, finer, mid layer)",
}
"""What the pages and reports call each method."""
METHOD_LAYERS = {
    "gradcam": CAM_LAYER_NAME,
    "gradcam++": CAM_LAYER_NAME,
    "scorecam": CAM_LAYER_NAME,
    "layercam": MID_FEATURE_LAYER_NAME,
}
"""The layer each method reads when no layer is given."""
SCORECAM_CHANNELS = 32
"""Faster Score-CAM keeps the feature maps of this many channels (largest spatial spread) per film."""


def check_method(method: str) -> str:
    """`method` if it is one of METHODS; ValueError naming the choices otherwise."""
    if method not in METHODS:
        raise ValueError(f"Got method={method!r}; must be one of {METHODS}.")
    return method


def explain(model, films, class_indices=None, method: str = DEFAULT_METHOD,
            layer_name: str | None = None) -> np.ndarray:
    """Maps of `method` for a batch of films, each for its own class.

    Args:
        model: a Keras model taking raw films (n, S, S, 1), such as one from core.model.build_model.
        films: (n, S, S, 1) raw films in 0..255.
        class_indices: (n,) the class to explain for each film, one int for all, or None (each film's
            predicted class).
        method: one of METHODS.
        layer_name: the layer the method reads; None (default) is METHOD_LAYERS[method].

    Returns:
        (n, S, S) float32 maps in [0, 1].

    Raises:
        ValueError: unknown method or layer, wrong film shape, a class index out of range.
        ImportError: a tf-keras-vis method without tf-keras-vis installed.
    """
    check_method(method)
    layer_name = layer_name or METHOD_LAYERS[method]
    films = np.asarray(films)
    if class_indices is None or np.ndim(class_indices) == 0:
        return _maps(model, films, None if class_indices is None else int(class_indices), method, layer_name)
    class_indices = np.asarray(class_indices, dtype=int)
    if class_indices.shape != (len(films),):
        raise ValueError(f"Got {class_indices.shape[0] if class_indices.ndim else 1} class indices for "
                         f"{len(films)} films; pass one per film, one for all, or None.")
    cams = np.zeros(films.shape[:3], np.float32)
    # Each method explains one class per call: the films are grouped by the class they are explained for.
    for class_index in np.unique(class_indices):
        chosen = class_indices == class_index
        cams[chosen] = _maps(model, films[chosen], int(class_index), method, layer_name)
    return cams


def _maps(model, films, class_index, method, layer_name) -> np.ndarray:
    if method == "gradcam":
        return grad_cam(model, films, class_index=class_index, layer_name=layer_name)
    if method == "scorecam":
        # Faster Score-CAM keeps the channels of each film separately, so films go one at a time: a batch
        # would keep the union of every film's channels.
        return np.concatenate([grad_cam_vis(model, film[np.newaxis], class_index=class_index, method=method,
                                            layer_name=layer_name, max_channels=SCORECAM_CHANNELS)
                               for film in films])
    return grad_cam_vis(model, films, class_index=class_index, method=method, layer_name=layer_name)
