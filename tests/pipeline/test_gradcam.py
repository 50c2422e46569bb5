"""core.explain.gradcam: Grad-CAM on a tiny trained model, the tf-keras-vis reference, and CAM regions of real maps.

The session's square model (tests/square_fixture.py) tells noise films (class 0) from noise films holding a
bright square (class 1). An untrained model gives blank or arbitrary maps; this one must look at the square.
"""

import warnings

import numpy as np
import pytest

from conftest import needs_pretrained
from square_fixture import IMAGE_SIZE, square_films

from core.explain.gradcam import GradCam, grad_cam, grad_cam_vis
from core.explain.regions import cam_regions
from core.model import CAM_LAYER_NAME, POOLED_FEATURES_LAYER_NAME


@pytest.fixture(scope="module")
def trained_model(square_model):
    return square_model


@pytest.fixture(scope="module")
def test_films():
    return square_films(24, seed=1)


@pytest.fixture(scope="module")
def explainer(trained_model):
    """One GradCam for the module: each new GradCam compiles its own graph, which takes seconds."""
    return GradCam(trained_model)


@pytest.fixture(scope="module")
def explained(explainer, test_films):
    """GradCam's probabilities and CAMs for the test films (predicted classes)."""
    films, _, _ = test_films
    return explainer(films)


# --------------------------------------------------------------------------------------------------
# GradCam
# --------------------------------------------------------------------------------------------------


@needs_pretrained
def test_model_learned_the_task(explained, test_films):
    probabilities, _ = explained
    _, labels, _ = test_films
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.8


def test_cams_have_shape_dtype_and_range(explained, test_films):
    probabilities, cams = explained
    films = test_films[0]
    assert probabilities.shape == (len(films), 2) and probabilities.dtype == np.float32
    assert cams.shape == (len(films), IMAGE_SIZE, IMAGE_SIZE) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and np.isfinite(probabilities).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0


def test_cams_are_not_blank_where_there_is_evidence(explained, test_films):
    _, cams = explained
    _, labels, _ = test_films
    # Every map is divided by its own maximum, so a map that is not blank reaches 1. Films with the
    # square hold evidence for their class; a plain-noise film may have none for "no square" (Grad-CAM
    # shows only evidence *for* a class), and then its map is all zero, never NaN.
    with_square = cams[labels == 1]
    assert np.allclose(with_square.max(axis=(1, 2)), 1.0)
    assert (with_square.std(axis=(1, 2)) > 0.05).all()
    assert np.isin(cams.max(axis=(1, 2)), [0.0, 1.0]).all()


@needs_pretrained
def test_cam_mass_lies_on_the_half_with_the_square(explainer, test_films):
    films, labels, sides = test_films
    with_square = labels == 1
    cams = explainer(films[with_square], class_index=1)[1]
    half = IMAGE_SIZE // 2
    left_mass = cams[:, :, :half].sum(axis=(1, 2))
    right_mass = cams[:, :, half:].sum(axis=(1, 2))
    on_square_half = np.where(sides[with_square] == "left", left_mass > right_mass, right_mass > left_mass)
    assert on_square_half.mean() >= 0.75, f"only {on_square_half.sum()} of {len(cams)} maps on the square"


def test_probabilities_match_the_model(trained_model, explained, test_films):
    probabilities, _ = explained
    expected = np.asarray(trained_model(test_films[0], training=False))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)


def test_explicit_class_index_differs_from_the_other_class(explainer, test_films):
    films = test_films[0]
    probabilities_0, cams_0 = explainer(films, class_index=0)
    probabilities_1, cams_1 = explainer(films, class_index=1)
    np.testing.assert_allclose(probabilities_0, probabilities_1)
    assert not np.allclose(cams_0, cams_1, atol=1e-3)
    # None explains each image's predicted class, image by image.
    _, cams_predicted = explainer(films)
    predicted = probabilities_0.argmax(axis=1)
    expected = np.where(predicted[:, None, None] == 0, cams_0, cams_1)
    np.testing.assert_allclose(cams_predicted, expected, atol=1e-5)


def test_uint8_and_float_films_and_a_single_film_agree(trained_model, test_films):
    films = test_films[0][:2]
    cams_uint8 = grad_cam(trained_model, films)
    cams_float = grad_cam(trained_model, films.astype(np.float32))
    np.testing.assert_allclose(cams_uint8, cams_float, atol=1e-6)
    single = grad_cam(trained_model, films[0])
    assert single.shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(single[0], cams_uint8[0], atol=1e-5)


def test_grad_cam_caches_one_explainer_per_model(trained_model, test_films):
    from core.explain import gradcam as explain

    grad_cam(trained_model, test_films[0][:1])
    first = explain._GRAD_CAM_CACHE[trained_model][CAM_LAYER_NAME]
    grad_cam(trained_model, test_films[0][:3])
    assert explain._GRAD_CAM_CACHE[trained_model][CAM_LAYER_NAME] is first


def test_a_fully_frozen_model_still_gets_maps(trained_model, explained, test_films):
    flags = [layer.trainable for layer in trained_model.layers]
    trained_model.trainable = False
    try:
        probabilities, cams = GradCam(trained_model)(test_films[0])
    finally:
        # model.trainable = True would unfreeze every layer, so the layers' own flags are put back after.
        trained_model.trainable = True
        for layer, flag in zip(trained_model.layers, flags):
            layer.trainable = flag
    np.testing.assert_allclose(probabilities, explained[0], atol=1e-6)
    np.testing.assert_allclose(cams, explained[1], atol=1e-5)


def test_one_pass_with_the_gate_features_gives_the_same_answer(trained_model, explained, test_films):
    from core.serving.gate import feature_model

    films = test_films[0][:4]
    explainer = GradCam(trained_model, extra_output_name=POOLED_FEATURES_LAYER_NAME)
    probabilities, cams, features = explainer.with_extra_output(films)
    np.testing.assert_allclose(probabilities, explained[0][:4], atol=1e-5)
    np.testing.assert_allclose(cams, explained[1][:4], atol=1e-5)
    np.testing.assert_allclose(features, np.asarray(feature_model(trained_model)(films.astype(np.float32))[1]),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="extra_output_name"):
        GradCam(trained_model).with_extra_output(films)
    with pytest.raises(ValueError, match="not a layer of the model"):
        GradCam(trained_model, extra_output_name="no_such_layer")


def test_bad_layer_name_names_the_convolution_layers(trained_model):
    with pytest.raises(ValueError, match=r"not a layer of the model.*Conv_1.*CAM layer .*'out_relu'"):
        GradCam(trained_model, layer_name="conv_last")
    with pytest.raises(ValueError, match=r"4-D feature map.*Conv_1.*CAM layer .*'out_relu'"):
        GradCam(trained_model, layer_name=POOLED_FEATURES_LAYER_NAME)


def test_bad_inputs_raise(explainer, test_films):
    with pytest.raises(ValueError, match=r"expected \(n, 96, 96, 1\)"):
        explainer(np.zeros((2, 64, 64, 1), np.uint8))
    with pytest.raises(ValueError, match=r"must be in 0\.\.1"):
        explainer(test_films[0][:1], class_index=2)


def test_prescaled_films_warn_once_and_black_films_do_not_warn(explainer, test_films):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))
    with pytest.warns(UserWarning, match="raw pixels in 0..255"):
        explainer(test_films[0][:1] / 255.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer(test_films[0][:1] / 255.0)


# --------------------------------------------------------------------------------------------------
# tf-keras-vis reference
# --------------------------------------------------------------------------------------------------


def test_fast_grad_cam_agrees_with_tf_keras_vis(trained_model, explained, test_films):
    _, cams = explained
    reference = grad_cam_vis(trained_model, test_films[0], method="gradcam")
    assert reference.shape == cams.shape and reference.dtype == np.float32
    compared = 0
    for fast, slow in zip(cams, reference):
        if fast.max() == 0 and slow.max() == 0:
            continue  # both blank: no evidence for the predicted class in either
        assert np.corrcoef(fast.ravel(), slow.ravel())[0, 1] > 0.9
        compared += 1
    assert compared >= len(cams) // 2


def test_grad_cam_plus_plus_runs(trained_model, test_films):
    cams = grad_cam_vis(trained_model, test_films[0][:4], class_index=1, method="gradcam++")
    assert cams.shape == (4, IMAGE_SIZE, IMAGE_SIZE)
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    # The served model keeps its softmax: tf-keras-vis changed a clone only.
    probabilities = np.asarray(trained_model(test_films[0][:4], training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_method_raises(trained_model, test_films):
    with pytest.raises(ValueError, match=r"must be one of \('gradcam', 'gradcam\+\+', 'scorecam', 'layercam'\)"):
        grad_cam_vis(trained_model, test_films[0][:1], method="occlusion")


# --------------------------------------------------------------------------------------------------
# core.explain.regions on real maps
# --------------------------------------------------------------------------------------------------


def test_cam_regions_of_real_maps_are_fractions_that_add_up(explained):
    _, cams = explained
    for cam in cams:
        regions = cam_regions(cam)
        assert all(0.0 <= share <= 1.0 for share in regions.values())
        expected_sum = 1.0 if cam.max() > 0 else 0.0  # all-zero maps have no mass anywhere
        assert regions["central"] + regions["border"] == pytest.approx(expected_sum)
