"""Calibration of Paru's probabilities: reliability curves, expected calibration error and temperature scaling.

Pure like core.evaluation.metrics, whose conventions (``y_true`` class indices, ``y_score`` (n, k)
probabilities in ``class_names`` order) and validators it shares. Nothing imports TensorFlow or touches files.
"""

from __future__ import annotations

import numpy as np

from core.evaluation.metrics import PROBABILITY_SUM_TOLERANCE, _check_scores, _check_targets
from core.validation import check_int

# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------

ECE_BINS = 15
"""The one ECE of Paru: the top-1 confidence in this many equal-width bins on [0, 1] (Guo et al., 2017).
metrics.json, the calibration table, the model card and the reliability diagrams all use it, so two
numbers shown side by side for the same films never differ by their binning."""
ECE_BINNING = "equal-width"
ECE_DEFINITION = f"top-1 confidence in {ECE_BINS} {ECE_BINNING} bins"
"""How the ECE is computed, in words, for captions and the model card."""


def _top1_bins(y_true, y_score, n_bins):
    """Top-1 confidence, correctness and equal-width bin index per case, plus the bin edges."""
    n_bins = check_int("n_bins", n_bins, expected="a positive integer (10 or 15 is typical)")
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"Got y_score with shape {scores.shape}; expected (n, num_classes) probabilities.")
    y_true, _ = _check_targets(y_true, scores.argmax(axis=1), scores.shape[1])
    scores = _check_scores(scores, y_true.shape[0], scores.shape[1], probabilities=True)
    confidence = scores.max(axis=1)
    correct = (scores.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are right-closed, (lo, hi], as in Guo et al. (2017); a confidence of exactly 0 joins the first bin.
    bin_index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    return confidence, correct, bin_index, edges


def reliability_curve(y_true, y_score, n_bins: int = ECE_BINS) -> dict:
    """Mean top-1 confidence against accuracy in equal-width confidence bins (a reliability diagram).

    Args:
        y_true: shape (n,), true class indices.
        y_score: shape (n, k) class probabilities; each row sums to 1.
        n_bins: number of equal-width bins on [0, 1]. Default ECE_BINS.

    Returns:
        ``{"bin_edges": [n_bins + 1 floats], "confidence": [...], "accuracy": [...], "count": [...]}``,
        the last three with one entry per bin: the mean top-1 confidence, the fraction of cases whose
        top-1 class is right, and the number of cases. Empty bins have ``None`` confidence and accuracy.
        A perfectly calibrated model has confidence == accuracy in every bin.
    """
    confidence, correct, bin_index, edges = _top1_bins(y_true, y_score, n_bins)
    count = np.bincount(bin_index, minlength=len(edges) - 1)
    confidence_sum = np.bincount(bin_index, weights=confidence, minlength=len(edges) - 1)
    correct_sum = np.bincount(bin_index, weights=correct, minlength=len(edges) - 1)
    return {
        "bin_edges": [float(edge) for edge in edges],
        "confidence": [float(total / size) if size else None for total, size in zip(confidence_sum, count)],
        "accuracy": [float(total / size) if size else None for total, size in zip(correct_sum, count)],
        "count": [int(size) for size in count],
    }


def expected_calibration_error(y_true, y_score, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 confidence (lower is better).

    ``ECE = sum over bins of (count_b / n) * |accuracy_b - confidence_b|`` with equal-width bins on
    [0, 1], as in Guo et al. (2017).

    Args:
        y_true: shape (n,), true class indices.
        y_score: shape (n, k) class probabilities; each row sums to 1.
        n_bins: number of equal-width bins. Default ECE_BINS, the one every figure of the app uses.

    Returns:
        The ECE as a float in [0, 1].
    """
    confidence, correct, bin_index, edges = _top1_bins(y_true, y_score, n_bins)
    n_total = len(edges) - 1
    count = np.bincount(bin_index, minlength=n_total)
    gap = np.abs(
        np.bincount(bin_index, weights=correct, minlength=n_total)
        - np.bincount(bin_index, weights=confidence, minlength=n_total)
    )
    # Summing |sum(correct) - sum(confidence)| per bin and dividing by n equals the count-weighted mean gap.
    return float(gap.sum() / count.sum())


# --------------------------------------------------------------------------------------------------
# Temperature scaling
# --------------------------------------------------------------------------------------------------

_MIN_TEMPERATURE, _MAX_TEMPERATURE = 0.01, 100.0


def _looks_like_probabilities(values: np.ndarray) -> bool:
    return bool(
        values.min() >= 0
        and values.max() <= 1
        and np.all(np.abs(values.sum(axis=1) - 1) <= PROBABILITY_SUM_TOLERANCE)
    )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _probabilities_to_logits(probabilities: np.ndarray) -> np.ndarray:
    # Clipping keeps log finite for probabilities that underflowed to 0 in float32.
    return np.log(np.clip(probabilities, 1e-12, 1.0))


def fit_temperature(logits_or_probs, y_true) -> float:
    """Fit the temperature T of temperature scaling by minimising the negative log-likelihood.

    Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 before the softmax:
    T > 1 softens over-confident predictions and leaves the top-1 class (so accuracy) unchanged. Fit it
    on the validation set, never on the test set.

    Args:
        logits_or_probs: shape (n, k) logits, or softmax probabilities (recognised when every value is
            in [0, 1] and each row sums to 1; their log is used as logits, which is exact up to a
            per-row constant that the softmax ignores).
        y_true: shape (n,), true class indices.

    Returns:
        The temperature as a float in [0.01, 100], found by a bounded 1-D search over log T.

    Note:
        The argument order follows the project brief (scores first), unlike the metric functions.
    """
    values = np.asarray(logits_or_probs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(
            f"Got logits_or_probs with shape {values.shape}; expected (n, num_classes) with at least 2 classes."
        )
    y_true, _ = _check_targets(y_true, values.argmax(axis=1), values.shape[1])
    values = _check_scores(values, y_true.shape[0], values.shape[1], probabilities=False)
    logits = _probabilities_to_logits(values) if _looks_like_probabilities(values) else values
    rows = np.arange(y_true.shape[0])

    def negative_log_likelihood(log_temperature: float) -> float:
        return float(-_log_softmax(logits / np.exp(log_temperature))[rows, y_true].mean())

    try:
        from scipy.optimize import minimize_scalar
    except ImportError as error:  # pragma: no cover - scipy comes with scikit-learn.
        raise ImportError("Temperature fitting needs scipy. Install it with `pip install scipy`.") from error
    result = minimize_scalar(
        negative_log_likelihood,
        bounds=(np.log(_MIN_TEMPERATURE), np.log(_MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Rescale probabilities with a fitted temperature: ``softmax(log(probs) / temperature)``.

    Args:
        probs: shape (n, k) softmax probabilities; each row sums to 1.
        temperature: a positive float from ``fit_temperature``; 1.0 returns the probabilities unchanged.

    Returns:
        ``np.float64`` array of shape (n, k); rows sum to 1 and the top-1 class of each row is kept.
    """
    try:
        temperature_value = float(temperature)
    except (TypeError, ValueError):
        temperature_value = float("nan")
    if not (np.isfinite(temperature_value) and temperature_value > 0):
        raise ValueError(f"Got temperature={temperature!r}; expected a positive finite number, e.g. from fit_temperature.")
    values = np.asarray(probs, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"Got probs with shape {values.shape}; expected (n, num_classes) probabilities.")
    values = _check_scores(values, values.shape[0], values.shape[1], probabilities=True)
    return np.exp(_log_softmax(_probabilities_to_logits(values) / temperature_value))


def reliability_before_after(y_true, y_score, temperature: float, n_bins: int = ECE_BINS) -> dict:
    """Reliability curves and ECE of probabilities before and after temperature scaling.

    Args:
        y_true: shape (n,), true class indices.
        y_score: shape (n, k) class probabilities as the model gave them (rows sum to 1).
        temperature: the run's fitted temperature (``fit_temperature``); 1.0 makes "after" equal "before".
        n_bins: equal-width confidence bins of the curves and of the ECE. Default ECE_BINS, so the diagram's
            ECE is the one in metrics.json.

    Returns:
        ``{"before": curve, "after": curve}`` where each curve is ``reliability_curve``'s dict plus
        ``"ece"`` (``expected_calibration_error`` with the same bins). Temperature scaling keeps every
        top-1 class, so only the confidences move, never the accuracy.

    Example::

        curves = reliability_before_after(y_val, p_val, metrics["calibration"]["temperature"])
        curves["after"]["ece"] <= curves["before"]["ece"]   # usually, on the split T was fitted on
    """
    scores = np.asarray(y_score, dtype=np.float64)
    result = {}
    for name, probabilities in (("before", scores), ("after", apply_temperature(scores, temperature))):
        curve = reliability_curve(y_true, probabilities, n_bins=n_bins)
        curve["ece"] = expected_calibration_error(y_true, probabilities, n_bins=n_bins)
        result[name] = curve
    return result
