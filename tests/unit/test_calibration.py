"""Tests for core.evaluation.calibration: ECE, reliability curves and temperature scaling, worked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_before_after,
    reliability_curve,
)
from unit.test_metrics import sample_labels, softmax


def test_reliability_before_after_by_hand():
    probabilities = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    curves = reliability_before_after([0, 1, 1, 0], probabilities, temperature=1.0, n_bins=5)
    assert curves["before"]["count"] == curves["after"]["count"]
    assert curves["before"]["ece"] == pytest.approx(curves["after"]["ece"])  # T = 1 changes nothing.
    # Bins (0.4, 0.6], (0.6, 0.8], (0.8, 1]: confidences 0.6 | 0.8, 0.7 | 0.9; right: yes | no, yes | yes.
    assert curves["before"]["count"] == [0, 0, 1, 2, 1]
    assert curves["before"]["accuracy"][2:] == [1.0, 0.5, 1.0]
    assert curves["before"]["ece"] == pytest.approx((0.4 + 2 * 0.25 + 0.1) / 4)
    softened = reliability_before_after([0, 1, 1, 0], probabilities, temperature=2.0, n_bins=5)
    assert softened["after"]["ece"] < softened["before"]["ece"]
    assert sum(softened["after"]["count"]) == 4


# --------------------------------------------------------------------------------------------------
# Calibration and temperature scaling
# --------------------------------------------------------------------------------------------------


def test_ece_of_perfectly_calibrated_data_is_near_zero():
    rng = np.random.default_rng(0)
    y_score = rng.dirichlet(np.full(4, 0.7), size=20_000)
    y_true = sample_labels(y_score, rng)
    assert expected_calibration_error(y_true, y_score) < 0.015


def test_ece_of_overconfident_model_is_large():
    # Always 99% sure, right half the time.
    y_score = np.tile([0.99, 0.01], (100, 1))
    y_true = np.array([0, 1] * 50)
    assert expected_calibration_error(y_true, y_score) == pytest.approx(0.49)


def test_reliability_curve_bins():
    y_score = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.45, 0.55]])
    y_true = np.array([0, 1, 1, 0])
    curve = reliability_curve(y_true, y_score, n_bins=10)
    assert curve["bin_edges"] == pytest.approx(np.linspace(0, 1, 11).tolist())
    assert sum(curve["count"]) == 4
    assert curve["count"][9] == 2 and curve["accuracy"][9] == pytest.approx(0.5)
    assert curve["confidence"][9] == pytest.approx(0.95)
    assert curve["count"][6] == 1 and curve["accuracy"][6] == 1.0  # confidence 0.65 -> bin (0.6, 0.7]
    assert curve["count"][5] == 1 and curve["accuracy"][5] == 0.0  # confidence 0.55 -> bin (0.5, 0.6]
    assert curve["confidence"][0] is None
    json.dumps(curve)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(scale=2.0, size=(8000, 4))
    y_true = sample_labels(softmax(true_logits), rng)
    # An over-confident model: its logits are the calibrated ones times 2.5.
    temperature = fit_temperature(true_logits * 2.5, y_true)
    assert temperature == pytest.approx(2.5, rel=0.08)
    # Probabilities are accepted too: their log differs from the logits by a per-row constant only.
    assert fit_temperature(softmax(true_logits * 2.5), y_true) == pytest.approx(temperature, rel=1e-3)


def test_apply_temperature_softens_and_keeps_argmax():
    probabilities = softmax(np.array([[4.0, 1.0, 0.0], [0.0, 3.0, 1.0]]))
    softened = apply_temperature(probabilities, 2.0)
    np.testing.assert_allclose(softened, softmax(np.array([[2.0, 0.5, 0.0], [0.0, 1.5, 0.5]])))
    np.testing.assert_array_equal(softened.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities)
    with pytest.raises(ValueError, match=r"Got temperature=0; expected a positive finite number"):
        apply_temperature(probabilities, 0)
