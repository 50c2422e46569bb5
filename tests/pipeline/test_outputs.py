"""core.training.outputs: one forward pass a film gives what each consumer's own model would compute."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config


@pytest.fixture(scope="module")
def model():
    from core.model import build_model

    return build_model(tiny_config(), num_classes=4)


def test_one_pass_gives_each_consumers_outputs_and_computes_each_film_once(model):
    from core.serving.batch import predict_probabilities
    from core.serving.gate import pooled_features
    from core.serving.population import depth_feature_model, depth_features
    from core.training.outputs import ModelOutputs

    films = np.random.default_rng(0).integers(0, 256, size=(10, 64, 64, 1)).astype(np.uint8)
    outputs = ModelOutputs(model, films, chunk=4)
    outputs.compute(np.arange(6))
    rows = np.array([5, 0, 3])
    np.testing.assert_allclose(outputs.pooled(rows), pooled_features(model, films[rows]), rtol=1e-4, atol=1e-5)
    depth_model = depth_feature_model(model)  # One for both comparisons below: each new one traces again.
    np.testing.assert_allclose(outputs.depth(rows), depth_features(depth_model, films[rows])[1],
                               rtol=1e-4, atol=1e-5)
    # Rows 6..9 are computed when first asked for, without features; none of 0..5 again.
    everything = outputs.probabilities(np.arange(10))
    np.testing.assert_allclose(everything, predict_probabilities(model, films), rtol=1e-4, atol=1e-6)
    assert outputs.films_computed == 10
    # Films that are not rows of the table (mis-prepared copies) go through the same engine, and are not kept.
    copies = films[:3, ::-1]
    np.testing.assert_allclose(outputs.depth_of_films(copies), depth_features(depth_model, copies)[1],
                               rtol=1e-4, atol=1e-5)
    assert outputs.films_computed == 10


def test_an_even_sample_keeps_the_ends_and_all_rows_when_fewer():
    from core.training.outputs import even_sample

    rows = np.arange(100, 200)
    assert list(even_sample(rows[:7], 10)) == list(rows[:7])
    sample = even_sample(rows, 10)
    assert len(sample) == len(set(sample)) == 10 and sample[0] == 100 and sample[-1] == 199


def test_the_lite_engine_gives_the_same_outputs_within_its_tolerance(model):
    from core.training.outputs import LITE_TOLERANCE, ModelOutputs

    films = np.random.default_rng(1).integers(0, 256, size=(6, 64, 64, 1)).astype(np.uint8)
    keras_outputs, lite_outputs = ModelOutputs(model, films), ModelOutputs(model, films, engine="lite")
    assert lite_outputs.engine == "TensorFlow Lite"
    rows = np.arange(6)
    for read in ("probabilities", "pooled", "depth"):
        np.testing.assert_allclose(getattr(lite_outputs, read)(rows), getattr(keras_outputs, read)(rows),
                                   rtol=LITE_TOLERANCE, atol=LITE_TOLERANCE, err_msg=read)
