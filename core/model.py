"""MobileNetV2 for chest films, built flat so Grad-CAM can reach the last block's output (`out_relu`).

The model takes raw pixels: uint8-valued grayscale films of shape (image_size, image_size, 1). Copying the
gray channel to three channels and the pixel scaling are layers inside the model, so training, evaluation,
Grad-CAM and prediction all feed the same raw films and cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.config import TrainConfig
from core.settings import keras_home as settings_keras_home

# Every layer name other modules reach for, defined here only: Grad-CAM, the fast engine (core.serving.lite),
# the gate, the export and training import them, so renaming a layer here renames it everywhere.
FILM_LAYER_NAME = "film"
GRAY_TO_RGB_LAYER_NAME = "gray_to_rgb"
SCALING_LAYER_NAME = "scaling"
# Keras's own names for MobileNetV2's last convolution, its batch normalisation and the backbone's ReLU6.
LAST_CONV_LAYER_NAME = "Conv_1"
LAST_CONV_BN_LAYER_NAME = "Conv_1_bn"
BACKBONE_OUTPUT_LAYER_NAME = "out_relu"
# Where the CAM methods read the model (core.explain.methods): the last block's post-activation output,
# where Grad-CAM equals the class-weighted sum of the maps, and a middle layer for a finer map.
CAM_LAYER_NAME = BACKBONE_OUTPUT_LAYER_NAME
MID_FEATURE_LAYER_NAME = "block_13_expand_relu"
# The head: its pooled features are what the gate scores.
POOLED_FEATURES_LAYER_NAME = "head_pool"
HEAD_BN_LAYER_NAME = "head_bn"
HEAD_DROPOUT_LAYER_NAME = "head_dropout"
PREDICTIONS_LAYER_NAME = "predictions"

BACKBONE_PREFIX_LAYERS = (FILM_LAYER_NAME, GRAY_TO_RGB_LAYER_NAME, SCALING_LAYER_NAME)
HEAD_LAYER_NAMES = (POOLED_FEATURES_LAYER_NAME, HEAD_BN_LAYER_NAME, HEAD_DROPOUT_LAYER_NAME, PREDICTIONS_LAYER_NAME)
HEAD_CHAIN = (LAST_CONV_LAYER_NAME, LAST_CONV_BN_LAYER_NAME, BACKBONE_OUTPUT_LAYER_NAME) + HEAD_LAYER_NAMES
"""The layers from the last convolution to the softmax, in order: each takes the previous one's output."""


def offline_weights_message(alpha: float) -> str:
    """What to do when the ImageNet weights cannot be downloaded, in steps that work from the Training page
    (which offers the weight files it finds) as well as from the command line."""
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"
    return (f"Could not download the ImageNet MobileNetV2 weights (no internet?). Copy {name} into "
            f"{settings_keras_home() / 'models'} (then 'imagenet' finds it) or anywhere under the data root, and "
            "choose it under Backbone weights on the Training page (python -m core train: --weights <path of that "
            "file>); or choose 'none' to start from random weights.")


def resolve_weights(weights: str | None, alpha: float, image_size: int) -> str | None:
    """Turn the config's `weights` into what keras.applications.MobileNetV2 accepts.

    "imagenet" stays "imagenet" (Keras downloads the official file, or finds it under $KERAS_HOME/models);
    "none" becomes None (random initialisation); anything else must be an existing local weights file.
    """
    if weights is None or str(weights).lower() in ("none", "random", ""):
        return None
    if str(weights).lower() == "imagenet":
        return _local_imagenet_file(alpha, image_size) or "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(
            f"Weights file {path} does not exist. Use 'imagenet' (downloaded by Keras, or found under "
            f"$KERAS_HOME/models), 'none', or the path of a MobileNetV2 no-top .h5 file for alpha {alpha} "
            f"(for example mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5)."
        )
    return str(path)


def _local_imagenet_file(alpha: float, image_size: int) -> str | None:
    """A cached ImageNet no-top file usable for this alpha, when the exact one Keras wants is missing.

    Keras picks the file by input size (96, 128, 160, 192 or 224 rows). A no-top backbone's weights do not
    depend on the input size, so where only the 224 file is cached (as in an offline KERAS_HOME), it is
    used for the other sizes too instead of attempting a download.
    """
    keras_home = settings_keras_home() / "models"
    rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{}_{}_no_top.h5"
    if (keras_home / name.format(alpha, rows)).is_file():
        return None  # Keras finds it itself.
    fallback = keras_home / name.format(alpha, 224)
    return str(fallback) if fallback.is_file() else None


def build_model(config: TrainConfig, num_classes: int):
    """Build the classifier: film -> gray_to_rgb -> scaling -> MobileNetV2 body -> head -> softmax.

    Args:
        config: recipe (image_size, scaling, alpha, weights, dropout, fine_tune_layers are used).
        num_classes: number of output classes (at least 2).

    Returns:
        An uncompiled keras.Model whose input is (None, image_size, image_size, 1) raw pixels in [0, 255]
        and whose output is (None, num_classes) softmax probabilities. Every MobileNetV2 layer is a layer
        of this model (no nested backbone), so `model.get_layer(LAST_CONV_LAYER_NAME)` works. The backbone
        is set up for fine-tuning with `set_trainable_layers(model, config.fine_tune_layers)`.
    """
    import keras

    if num_classes < 2:
        raise ValueError(f"Got num_classes={num_classes}; a classifier needs at least 2 classes.")
    keras.utils.set_random_seed(config.seed)
    size = config.image_size
    film = keras.Input((size, size, 1), name=FILM_LAYER_NAME)
    # Three copies of the gray channel, as ImageNet weights expect RGB.
    rgb = keras.layers.Concatenate(name=GRAY_TO_RGB_LAYER_NAME)([film, film, film])
    if config.scaling == "unit":
        scaled = keras.layers.Rescaling(1 / 255.0, name=SCALING_LAYER_NAME)(rgb)
    else:
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=SCALING_LAYER_NAME)(rgb)
    weights = resolve_weights(config.weights, config.alpha, size)
    try:
        backbone = keras.applications.MobileNetV2(
            input_tensor=scaled, include_top=False, weights=weights, alpha=config.alpha,
            input_shape=(size, size, 3),
        )
    except Exception as error:
        if "URL fetch failure" not in str(error):
            raise
        raise ValueError(offline_weights_message(config.alpha)) from None
    x = keras.layers.GlobalAveragePooling2D(name=POOLED_FEATURES_LAYER_NAME)(backbone.output)
    x = keras.layers.BatchNormalization(name=HEAD_BN_LAYER_NAME)(x)
    x = keras.layers.Dropout(config.dropout, name=HEAD_DROPOUT_LAYER_NAME)(x)
    regulariser = keras.regularizers.L2(config.head_l2) if config.head_l2 else None
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=PREDICTIONS_LAYER_NAME,
                                 dtype="float32", kernel_regularizer=regulariser)(x)
    model = keras.Model(film, outputs, name=f"paru_mobilenetv2_{config.alpha}")
    set_trainable_layers(model, config.fine_tune_layers)
    return model


def backbone_layers(model) -> list:
    """The MobileNetV2 layers of a model built by build_model, in order (no input/preprocessing/head)."""
    return [
        layer for layer in model.layers
        if layer.name not in BACKBONE_PREFIX_LAYERS + HEAD_LAYER_NAMES
        and not layer.name.startswith("input")
    ]


def set_trainable_layers(model, fine_tune_layers: int) -> None:
    """Make exactly the backbone's last `fine_tune_layers` layers trainable, the rest frozen.

    BatchNormalization layers of the backbone always stay frozen: in Keras 3 a frozen BatchNormalization
    runs in inference mode, so its moving statistics are used and never updated. That keeps the
    pretrained statistics (and, with the batch-norm-folded offline weights, the folded identity) intact,
    as Keras's transfer-learning guide recommends. The head is always trainable.
    """
    import keras

    layers = backbone_layers(model)
    boundary = len(layers) - fine_tune_layers
    for index, layer in enumerate(layers):
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= boundary and not is_batch_norm
    for name in HEAD_LAYER_NAMES:
        model.get_layer(name).trainable = True


def load_model(model_path: str | os.PathLike):
    """Load a saved .keras model in Keras safe mode (no arbitrary code is deserialised)."""
    import keras

    return keras.saving.load_model(model_path, compile=False, safe_mode=True)
