"""The model: the fine-tuning boundary, pixel scaling inside the model, missing weights files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config


@pytest.fixture(scope="module")
def built_model():
    """A freshly built model of the tiny recipe (random weights, 4 classes), read-only: building one takes
    seconds."""
    from core.model import build_model

    return build_model(tiny_config(weights="none"), num_classes=4)


def test_exactly_the_last_12_backbone_layers_are_trainable_and_batch_norm_stays_frozen(built_model):
    import keras

    from core.model import LAST_CONV_LAYER_NAME, backbone_layers

    model = built_model
    layers = backbone_layers(model)
    last_12 = layers[-12:]
    for layer in layers[:-12]:
        assert not layer.trainable, layer.name
    for layer in last_12:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable is (not is_bn), layer.name
    assert LAST_CONV_LAYER_NAME in [layer.name for layer in last_12]
    assert all(model.get_layer(name).trainable for name in ("head_bn", "predictions"))
    # Flat model: Grad-CAM reaches Conv_1 directly.
    assert model.get_layer(LAST_CONV_LAYER_NAME) is not None


@pytest.mark.parametrize("scaling, expected", [("unit", (0.0, 1.0)), ("symmetric", (-1.0, 1.0))])
def test_pixel_scaling_lives_inside_the_model(scaling, expected, request):
    import keras

    from core.model import build_model

    # The tiny recipe scales to [0, 1]: the module's model has that scaling, another is built for [-1, 1].
    assert tiny_config().scaling == "unit"
    model = (request.getfixturevalue("built_model") if scaling == "unit" else
             build_model(tiny_config(weights="none", scaling=scaling), num_classes=2))
    scaled = keras.Model(model.input, model.get_layer("scaling").output)
    film = np.zeros((1, 64, 64, 1), np.float32)
    film[:, :, 32:] = 255.0
    out = np.asarray(scaled(film))
    assert np.isclose(out.min(), expected[0]) and np.isclose(out.max(), expected[1])


def test_missing_local_weights_file_says_what_to_do(tmp_path):
    from core.model import build_model

    with pytest.raises(ValueError, match="does not exist. Use 'imagenet'"):
        build_model(tiny_config(weights=str(tmp_path / "nope.h5")), num_classes=2)


def test_every_layer_name_other_modules_rely_on_is_a_layer_of_the_built_model(built_model):
    """Grad-CAM, the fast engine, the gate, the export and training find their layers by these names; a
    renamed layer must fail here rather than send the app quietly back to the slower Keras engine."""
    import core.model as model_module
    from core.model import HEAD_CHAIN

    names = {value for key, value in vars(model_module).items() if key.endswith("_LAYER_NAME")}
    assert len(names) >= 10
    model = built_model
    layers = {layer.name: layer for layer in model.layers}
    assert sorted(names - set(layers)) == []
    for previous, following in zip(HEAD_CHAIN, HEAD_CHAIN[1:]):
        assert layers[following].input is layers[previous].output, (previous, following)

    from core.serving.lite import ClosedFormGradCam

    ClosedFormGradCam(model)  # The engine's own check of the chain accepts the model.
