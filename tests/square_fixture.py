"""The "bright square means class 1" task, whose right explanation is known: where the square is.

`square_films(count, seed)` makes the films; `train_square_model()` trains a MobileNetV2 (alpha 0.35, 96 x 96)
on them in seconds. The tiers' fixtures (tests/pipeline/conftest.py) hold one such model per session.
"""

from __future__ import annotations

import numpy as np

from conftest import WEIGHTS_035

IMAGE_SIZE = 96
SQUARE_SIDE = 24


def square_films(count, seed):
    """Noise films; class 1 films also hold a bright square, alternately in the left and the right half.

    Class 0 is noise only, so the square is the only evidence for class 1 and a faithful class-1 CAM must
    lie on it. (With "square left" against "square right", the empty half is equally good evidence and a
    model may well look there.)

    Returns (films (count, 96, 96, 1) uint8, labels (count,) int, square_sides (count,) with "left",
    "right" or "" for films without a square).
    """
    rng = np.random.default_rng(seed)
    films = rng.integers(0, 120, (count, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.uint8)
    labels = np.arange(count) % 2
    sides = np.array([["", "left", "", "right"][index % 4] for index in range(count)])
    half = IMAGE_SIZE // 2
    for film, side in zip(films, sides):
        if not side:
            continue
        row = rng.integers(4, IMAGE_SIZE - SQUARE_SIDE - 4)
        low = 4 if side == "left" else half + 4
        column = rng.integers(low, low + half - SQUARE_SIDE - 8)
        film[row:row + SQUARE_SIDE, column:column + SQUARE_SIDE] = 230
    return films, labels, sides


def train_square_model():
    """A MobileNetV2 briefly trained on 64 square films. An untrained model gives blank or arbitrary maps;
    this one must look at the square."""
    import keras

    from core.config import preset
    from core.model import HEAD_BN_LAYER_NAME, backbone_layers, build_model, set_trainable_layers

    pretrained = WEIGHTS_035 is not None
    weights = str(WEIGHTS_035) if pretrained else "none"
    config = preset("paper", alpha=0.35, image_size=IMAGE_SIZE, weights=weights)
    model = build_model(config, 2)
    # With ImageNet weights, the paper's fine-tuning of the last 12 layers learns the square in a few
    # seconds. From random weights, everything trains.
    if not pretrained:
        set_trainable_layers(model, len(backbone_layers(model)))
    # The head's BatchNormalization is frozen: in a few dozen steps its moving statistics would barely
    # leave their initial values, so inference would not see what training saw and the model would
    # predict one class.
    model.get_layer(HEAD_BN_LAYER_NAME).trainable = False
    films, labels, _ = square_films(64, seed=0)
    # The frozen layers below the first trainable one compute the same activations at every step (their
    # BatchNormalization runs in inference mode and the films are not augmented), so they run once and the
    # trainable top of the same model is fitted on what they give: the same training, without tracing and
    # running the frozen part at each step.
    trained, first = model, next(layer for layer in backbone_layers(model) if layer.trainable and layer.weights)
    if first is not backbone_layers(model)[0]:
        films = keras.Model(model.inputs, first.input).predict(films, batch_size=64, verbose=0)
        trained = keras.Model(first.input, model.outputs)  # The same layers: fitting it trains the model.
    # No XLA: compiling the training step would take longer than the training itself.
    trained.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                    jit_compile=False)
    trained.fit(films, labels, batch_size=16, epochs=6, verbose=0)
    return model
