"""Split-conformal prediction sets: coverage within sampling error, small sets on easy films, clear errors."""

import math

import numpy as np
import pytest

from core.evaluation.conformal import (
    METHODS,
    ConformalCalibration,
    calibrate,
    calibration_of,
    class_scores,
    coverage_report,
    prediction_set,
    risk_coverage,
    run_conformal,
    set_classes,
)


def _synthetic(n: int, seed: int, k: int = 3):
    """Films from a known distribution: the true class is drawn from each film's own softmax, so the
    probabilities are perfectly calibrated but often uncertain."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, k))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in probabilities])
    return probabilities, labels


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("level", [0.8, 0.9])
def test_coverage_reached_within_sampling_error(method, level):
    val_probabilities, val_labels = _synthetic(2000, seed=1)
    test_probabilities, test_labels = _synthetic(2000, seed=2)
    calibration = calibrate(val_probabilities, val_labels, level=level, method=method)
    report = coverage_report(test_probabilities, test_labels, calibration, ["a", "b", "c"])
    sd = math.sqrt(level * (1 - level) / 2000)
    # The guarantee is coverage >= level (up to sampling error on 2000 test films).
    assert report["coverage"] >= level - 3 * sd, report["coverage"]
    if method == "lac":
        # LAC is exact up to sampling error: its sets are rarely topped up, so it does not over-cover.
        assert report["coverage"] <= level + 3 * sd + 1 / 2000, report["coverage"]
    assert 1.0 <= report["mean_set_size"] < 3.0
    assert report["method"] == method and report["level"] == level and report["n"] == 2000


def test_easy_films_get_sets_of_one_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    probabilities = np.full((500, 3), 0.01)
    probabilities[np.arange(500), labels] = 0.98
    calibration = calibrate(probabilities[:250], labels[:250], level=0.9)
    mask = prediction_set(probabilities[250:], calibration.threshold)
    assert mask.sum(axis=1).tolist() == [1] * 250
    assert (mask.argmax(axis=1) == labels[250:]).all()
    report = coverage_report(probabilities[250:], labels[250:], calibration, ["a", "b", "c"])
    assert report["coverage"] == 1.0 and report["mean_set_size"] == 1.0 and report["singleton_share"] == 1.0
    assert set(report["per_class"]) == {"a", "b", "c"}


def test_uncertain_film_gets_both_classes_and_names_are_ordered():
    calibration = ConformalCalibration(level=0.9, method="lac", threshold=0.7, n_calibration=100)
    assert set_classes([0.45, 0.55], calibration, ["Normal", "Pneumonia"]) == ["Pneumonia", "Normal"]
    assert set_classes([0.05, 0.95], calibration, ["Normal", "Pneumonia"]) == ["Pneumonia"]


def test_a_set_is_never_empty():
    # Threshold below every score: LAC would give an empty set; the top class is added.
    mask = prediction_set(np.array([[0.4, 0.35, 0.25]]), threshold=0.1)
    assert mask.tolist() == [[True, False, False]]


def test_aps_scores_are_cumulative_mass():
    scores = class_scores(np.array([[0.2, 0.5, 0.3]]), "aps")
    assert np.allclose(scores, [[1.0, 0.5, 0.8]])


def test_too_few_calibration_films_give_every_class():
    calibration = calibrate(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]), level=0.9)
    assert math.isinf(calibration.threshold)
    assert prediction_set(np.array([0.99, 0.01]), calibration.threshold).tolist() == [True, True]
    assert calibration.to_json()["threshold"] is None
    assert math.isinf(ConformalCalibration.from_json(calibration.to_json()).threshold)


def test_json_round_trip_and_bad_sections():
    calibration = calibrate(*_synthetic(200, seed=3), level=0.9, method="aps")
    assert ConformalCalibration.from_json(calibration.to_json()) == calibration
    for bad in ([], {"level": 2, "method": "lac"}, {"level": 0.9, "method": "raps"}, {"method": "lac"}):
        with pytest.raises(ValueError):
            ConformalCalibration.from_json(bad)


def test_empty_and_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="n >= 1"):
        calibrate(np.zeros((0, 2)), np.zeros(0, int))
    with pytest.raises(ValueError, match="one class index per row"):
        calibrate(np.full((3, 2), 0.5), np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        calibrate(np.full((2, 2), 0.5), np.array([0, 2]))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        calibrate(np.full((2, 2), 0.5), np.array([0, 1]), level=1.0)
    with pytest.raises(ValueError, match="must be one of"):
        calibrate(np.full((2, 2), 0.5), np.array([0, 1]), method="raps")
    with pytest.raises(ValueError, match="NaN"):
        prediction_set(np.array([np.nan, 0.5]), 0.5)


def test_risk_coverage_curve_rises_as_the_model_abstains():
    probabilities, labels = _synthetic(1000, seed=4)
    curve = risk_coverage(probabilities, labels)
    assert curve[0] == {"coverage": 0.0, "accuracy": None, "threshold": None}
    assert curve[-1]["coverage"] == 1.0
    assert curve[-1]["accuracy"] == pytest.approx((probabilities.argmax(1) == labels).mean(), abs=1e-4)
    # Calibrated scores: the most confident tenth is clearly more accurate than all films together.
    assert curve[2]["accuracy"] > curve[-1]["accuracy"] + 0.1


def test_run_section_and_old_runs_without_one():
    val, test = _synthetic(300, seed=5), _synthetic(300, seed=6)
    section = run_conformal(*val, *test, ["a", "b", "c"])
    assert {"level", "method", "threshold", "coverage", "mean_set_size", "per_class"} <= set(section)
    assert section["level"] == 0.9 and section["method"] == "lac"
    assert calibration_of({"conformal": section}) == calibrate(*val)
    assert calibration_of({"accuracy": 0.5}) is None  # A run from before prediction sets.
    assert calibration_of(None) is None and calibration_of({"conformal": "warm"}) is None
    assert calibration_of({"conformal": {"level": 0.9, "method": "lac", "threshold": "x"}}) is None
