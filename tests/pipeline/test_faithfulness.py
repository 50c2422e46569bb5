"""core.explain.faithfulness and core.explain.methods on the square model, whose right answer is known: the
class-1 evidence is the bright square, so a faithful class-1 map deletes the square first.

Also the identity that makes `out_relu` the CAM layer: with core.model's head, Grad-CAM there IS the
class-weighted sum of the feature maps (the CAM of Zhou et al.), to float precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import copy_run, needs_pretrained
from square_fixture import IMAGE_SIZE, square_films

from core.explain.faithfulness import (
    check_films,
    check_run,
    perturbation_check,
    probability_function,
    randomisation_steps,
    randomised_copies,
)
from core.explain.gradcam import GradCam, cached_grad_cam
from core.explain.methods import METHOD_LAYERS, METHODS, explain
from core.model import CAM_LAYER_NAME, HEAD_BN_LAYER_NAME, LAST_CONV_LAYER_NAME, PREDICTIONS_LAYER_NAME
from core.runs.artifacts import EXPLAIN_CHECK_FILE_NAME, MODEL_CARD_FILE_NAME, read_explain_check
from core.serving.lite import ClosedFormGradCam


@pytest.fixture(scope="module")
def square_test_films():
    """12 films holding the square (class 1) and the class to follow: 1 for all."""
    films, labels, _ = square_films(24, seed=2)
    return films[labels == 1], np.ones(int((labels == 1).sum()), int)


@pytest.fixture(scope="module")
def probability_of(square_model):
    return probability_function(square_model)


def class_weighted_sum(model, films, class_index):
    """CAM: the feature maps at the CAM layer summed with the class's head weights (the Dense kernel column
    times head_bn's scale), positive part, upsampled as Grad-CAM is and divided by the maximum."""
    import keras
    import tensorflow as tf

    maps = np.asarray(keras.Model(model.inputs, model.get_layer(CAM_LAYER_NAME).output)(films), np.float64)
    bn = model.get_layer(HEAD_BN_LAYER_NAME)
    scale = np.asarray(bn.gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
    weights = np.asarray(model.get_layer(PREDICTIONS_LAYER_NAME).kernel)[:, class_index] * scale
    cams = np.maximum(np.einsum("nhwk,k->nhw", maps, weights), 0.0).astype(np.float32)
    cams = tf.image.resize(cams[..., None], films.shape[1:3], method="bilinear")[..., 0].numpy()
    peaks = cams.max(axis=(1, 2), keepdims=True)
    return np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)


@needs_pretrained
@pytest.mark.parametrize("class_index", [0, 1])
def test_grad_cam_at_the_cam_layer_is_the_class_weighted_sum_of_the_maps(square_model, class_index):
    import keras

    films = square_films(8, seed=3)[0]
    # The cached pass at the CAM layer is the one the maps and probabilities of the checks below use.
    _, grad_cams = cached_grad_cam(square_model, CAM_LAYER_NAME)(films, class_index=class_index)
    expected = class_weighted_sum(square_model, films, class_index)
    np.testing.assert_allclose(grad_cams, expected, atol=1e-5)
    # The TensorFlow Lite engine's closed form, from the last convolution's maps, is the same CAM.
    conv_maps = np.asarray(keras.Model(square_model.inputs, square_model.get_layer(LAST_CONV_LAYER_NAME).output)(films))
    closed_form = ClosedFormGradCam(square_model)
    np.testing.assert_allclose(np.stack([closed_form(maps, class_index) for maps in conv_maps]), expected, atol=1e-5)
    if class_index == 1:  # a trained model: the films with the square have evidence for class 1
        assert np.allclose(grad_cams[1::2].max(axis=(1, 2)), 1.0)


@needs_pretrained
def test_the_closed_form_at_the_last_convolution_is_grad_cam_there_too(square_model):
    import keras

    films = square_films(4, seed=3)[0]
    _, grad_cams = GradCam(square_model, layer_name=LAST_CONV_LAYER_NAME)(films, class_index=1)
    conv_maps = np.asarray(keras.Model(square_model.inputs, square_model.get_layer(LAST_CONV_LAYER_NAME).output)(films))
    closed_form = ClosedFormGradCam(square_model, layer_name=LAST_CONV_LAYER_NAME)
    np.testing.assert_allclose(np.stack([closed_form(maps, 1) for maps in conv_maps]), grad_cams, atol=1e-5)
    with pytest.raises(ValueError, match="closed form exists for"):
        ClosedFormGradCam(square_model, layer_name="block_13_expand_relu")


@needs_pretrained
def test_the_square_models_map_deletes_far_faster_than_random(square_model, square_test_films, probability_of):
    films, classes = square_test_films
    assert (probability_of(films).argmax(axis=1) == 1).mean() >= 0.8
    cams = explain(square_model, films, classes)
    report = perturbation_check(probability_of, films, cams, classes, random_orders=1)
    deletion, insertion = report["deletion"], report["insertion"]
    assert deletion["ratio"] < 0.6, deletion
    assert deletion["difference_ci95"][0] > 0 and deletion["films_better"] >= 0.8
    assert insertion["map_auc"] > insertion["random_auc"]


@needs_pretrained
def test_a_randomised_copys_map_is_no_better_than_random(square_model, square_test_films, probability_of):
    films, classes = square_test_films
    before = [weights.copy() for weights in square_model.get_weights()]
    *_, (step, _, copy) = randomised_copies(square_model)
    assert step.startswith("block_")
    cams = explain(copy, films, classes)
    deletion = perturbation_check(probability_of, films, cams, classes, random_orders=2)["deletion"]
    assert deletion["ratio"] > 0.8, deletion
    # The model itself keeps its weights.
    assert all(np.array_equal(a, b) for a, b in zip(before, square_model.get_weights()))


def test_randomisation_goes_from_the_head_down(square_model):
    steps = randomisation_steps(square_model, blocks=2)
    assert [name for name, _ in steps[:2]] == ["head", "last convolution"]
    assert steps[2][0] == "block_16" and steps[3][0] == "block_15" and len(steps) == 4
    assert PREDICTIONS_LAYER_NAME in steps[0][1] and all(name.startswith("block_16_") for name in steps[2][1])


@needs_pretrained
def test_check_films_reports_every_check_and_a_verdict(square_model, square_test_films):
    films, _ = square_test_films
    report = check_films(square_model, films[:6], random_orders=1, blocks=1)
    assert report["method"] == "gradcam" and report["layer"] == CAM_LAYER_NAME and report["n_films"] == 6
    assert report["replacement"] == "film mean" and report["grid"] == 7
    assert report["deletion"]["map_auc"] < report["deletion"]["random_auc"]
    assert [step["step"] for step in report["randomisation"]] == ["head", "last convolution", "block_16"]
    assert report["randomisation"][-1]["spearman"] < 0.5
    assert report["class_sensitivity"]["spearman"] < 0.8
    assert report["verdict"]["faithful"], report["verdict"]
    assert set(report["seconds"]) == {"maps", "deletion_insertion", "randomisation", "class_sensitivity", "total"}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_maps_in_range_at_its_layer(square_model, square_test_films, method):
    films, classes = square_test_films
    cams = explain(square_model, films[:2], classes[:2], method=method)
    assert cams.shape == (2, IMAGE_SIZE, IMAGE_SIZE) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    assert square_model.get_layer(METHOD_LAYERS[method]).output.shape[1] > 1


def test_unknown_method_and_mismatched_classes_raise(square_model, square_test_films):
    films, _ = square_test_films
    with pytest.raises(ValueError, match="must be one of"):
        explain(square_model, films[:1], None, method="occlusion")
    with pytest.raises(ValueError, match="one per film"):
        explain(square_model, films[:2], [0, 1, 1])


def test_check_run_writes_the_report_to_the_run_folder(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    report = check_run(run, films=3, random_orders=1, blocks=1)
    assert read_explain_check(run) == report
    card = (run / MODEL_CARD_FILE_NAME).read_text()
    assert "## Are the heatmaps faithful?" in card and report["verdict"]["text"] in card
    assert (run / EXPLAIN_CHECK_FILE_NAME).is_file() and report["n_films"] == len(report["films"]) <= 3
    assert report["run_id"] == run.name and report["verdict"]["text"]


def test_a_stop_during_the_heatmap_check_leaves_no_report(tiny_run, tiny_dataset, tmp_path):
    from conftest import CLASS_NAMES, tiny_config

    from core.model import load_model
    from core.training.run import TrainingCancelled, _check_heatmaps

    staging = copy_run(tiny_run, tmp_path)
    (staging / EXPLAIN_CHECK_FILE_NAME).unlink(missing_ok=True)
    state, model = {}, load_model(staging / "model.keras")
    with pytest.raises(TrainingCancelled):
        _check_heatmaps(staging, staging.name, tiny_dataset, model, list(CLASS_NAMES),
                        tiny_config(explain_check_films=2), state, lambda line: None, lambda: True)
    assert state["phase"] == "heatmaps" and not (staging / EXPLAIN_CHECK_FILE_NAME).exists()
