"""Split-conformal prediction sets: "Normal or Pneumonia (90% set)" instead of one label shown as certain.

This is the standard split-conformal method for classification (Vovk, Gammerman & Shafer, Algorithmic
Learning in a Random World, 2005; as set out by Angelopoulos & Bates, "A Gentle Introduction to Conformal
Prediction and Distribution-Free Uncertainty Quantification", 2021), implemented here in NumPy (a small,
tested implementation rather than MAPIE: the model's probabilities already exist, and MAPIE would need an
scikit-learn estimator wrapped around them and scikit-learn at serving time for about forty lines of
arithmetic).

Calibration: on the n validation films, a conformity score s_i is computed from the model's probabilities
and the true class; the threshold is the ceil((n + 1) * level) / n empirical quantile of the scores
(the "higher" order statistic). A new film's set holds every class whose score is at most the threshold.
When the validation films and a new film are exchangeable (drawn from the same population), the set
contains the true class with probability at least `level` (marginally, over films).

Scores (`METHODS`):
- "lac" (default; least ambiguous set-valued classifier, Sadinle, Lei & Wasserman 2019): s = 1 - p(true
  class). Gives the smallest sets on average.
- "aps" (adaptive prediction sets, Romano, Sesia & Candès 2020; the non-randomised form): s = the total
  probability of the classes ranked at or above the true class. Sets adapt more to how hard a film is.
  Without the randomisation of the original (which would make a film's set depend on a coin toss) it
  is conservative: its coverage can sit above the level, with larger sets.

Both can in principle give an empty set (every class unlikely); a set here is never empty: the top class is
added, which can only raise the coverage. The scores are computed on the model's raw softmax (before
temperature scaling): the temperature is itself fitted on the validation split, and conformal validity
needs a score function that does not depend on the calibration films.

Pure NumPy: no TensorFlow, no file I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.config import DEFAULT_SET_LEVEL

METHODS = ("lac", "aps")
"""Conformity scores offered (the first is the default)."""
DEFAULT_LEVEL = DEFAULT_SET_LEVEL
"""The coverage a set aims for unless a run or a caller says otherwise (the recipe's default, core.config)."""
RISK_COVERAGE_POINTS = 21
"""How many points of the risk-coverage curve are reported (coverage 0, 5, ..., 100%)."""


@dataclass(frozen=True)
class ConformalCalibration:
    """What a prediction set needs: level (target coverage), method (one of METHODS), threshold (on the
    conformity score; a class is in the set when its score is at most this, inf means every class) and
    n_calibration (the number of validation films it was fitted on)."""

    level: float
    method: str
    threshold: float
    n_calibration: int

    def to_json(self) -> dict:
        return {"level": self.level, "method": self.method,
                "threshold": None if math.isinf(self.threshold) else float(self.threshold),
                "n_calibration": self.n_calibration}

    @classmethod
    def from_json(cls, data: dict) -> "ConformalCalibration":
        """Read back what to_json (or metrics.json's "conformal" section) holds; ValueError if unusable."""
        if not isinstance(data, dict):
            raise ValueError(f"Got conformal calibration {data!r}; expected a JSON object.")
        try:
            threshold = data.get("threshold")
            return cls(level=_check_level(float(data["level"])), method=_check_method(str(data["method"])),
                       threshold=math.inf if threshold is None else float(threshold),
                       n_calibration=int(data.get("n_calibration") or 0))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"The conformal calibration {data!r} is unusable ({error}).") from None


def _check_level(level: float) -> float:
    if not (0.0 < level < 1.0) or math.isnan(level):
        raise ValueError(f"Got level={level}; a coverage level is a number strictly between 0 and 1 (e.g. 0.9).")
    return level


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"Got method={method!r}; must be one of {METHODS}.")
    return method


def _check_probabilities(probabilities, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0 or probabilities.shape[1] < 2:
        raise ValueError(f"Got probabilities of shape {probabilities.shape}; expected (n, k) with n >= 1 "
                         "films and k >= 2 classes.")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("Got probabilities with NaN or infinite values; expected softmax outputs.")
    if labels is None:
        return probabilities, None
    labels = np.asarray(labels)
    if labels.shape != (probabilities.shape[0],):
        raise ValueError(f"Got {labels.shape[0] if labels.ndim else 0} labels for {probabilities.shape[0]} rows "
                         "of probabilities; expected one class index per row.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"Got labels {np.unique(labels)[:10]}; expected class indices "
                         f"0..{probabilities.shape[1] - 1}.")
    return probabilities, labels.astype(np.int64)


def class_scores(probabilities: np.ndarray, method: str = METHODS[0]) -> np.ndarray:
    """Conformity score (n, k) of every class for every film (lower means more plausible)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if _check_method(method) == "lac":
        return 1.0 - probabilities
    # APS: the probability mass of the classes ranked at or above each class. Ties are broken by class
    # order, the same rule for calibration and prediction.
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)
    scores = np.empty_like(probabilities)
    np.put_along_axis(scores, order, cumulative, axis=1)
    return scores


def calibrate(val_probabilities, val_labels, level: float = DEFAULT_LEVEL,
              method: str = METHODS[0]) -> ConformalCalibration:
    """Fit the set threshold on the validation split.

    Args:
        val_probabilities: (n, k) softmax probabilities of the validation films (raw, before temperature).
        val_labels: (n,) true class indices.
        level: target coverage in (0, 1), default DEFAULT_LEVEL (0.9).
        method: "lac" (default) or "aps".
    Returns:
        ConformalCalibration. With fewer than 1 / (1 - level) - 1 films the quantile does not exist and the
        threshold is inf (every set holds every class): honest, if useless.
    """
    level, method = _check_level(float(level)), _check_method(method)
    probabilities, labels = _check_probabilities(val_probabilities, val_labels)
    scores = class_scores(probabilities, method)[np.arange(len(labels)), labels]
    n = len(scores)
    rank = math.ceil((n + 1) * level)  # 1-based order statistic of the finite-sample-valid quantile.
    threshold = math.inf if rank > n else float(np.sort(scores)[rank - 1])
    return ConformalCalibration(level=level, method=method, threshold=threshold, n_calibration=n)


def prediction_set(probabilities, threshold: float, method: str = METHODS[0]) -> np.ndarray:
    """Which classes are in each film's set.

    Args:
        probabilities: (k,) for one film or (n, k) for many.
        threshold: ConformalCalibration.threshold; method: the method it was calibrated with.
    Returns:
        A boolean mask of the same shape; never all False in a row (the top class is always in).
    """
    single = np.ndim(probabilities) == 1
    probabilities, _ = _check_probabilities(np.atleast_2d(probabilities))
    # A tiny tolerance: the threshold is one of the calibration scores, and the same probability computed
    # again (another engine, float32 vs float64) must land on the same side of it.
    mask = class_scores(probabilities, method) <= float(threshold) + 1e-9
    mask[np.arange(len(mask)), probabilities.argmax(axis=1)] = True
    return mask[0] if single else mask


def set_classes(probabilities, calibration: ConformalCalibration, class_names: list[str]) -> list[str]:
    """The set of one film as class names, most probable first."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    mask = prediction_set(probabilities, calibration.threshold, calibration.method)
    return [class_names[i] for i in np.argsort(-probabilities, kind="stable") if mask[i]]


def risk_coverage(probabilities, labels, points: int = RISK_COVERAGE_POINTS) -> list[dict]:
    """Accuracy of the single-label answers as the abstention threshold on the top probability moves.

    The films are ranked by their top probability; answering only the most confident share c of them gives
    one point {"coverage": c, "accuracy": accuracy of those answers (None when none), "threshold": the
    lowest top probability still answered}. `points` coverages from 0 to 1, evenly spaced.
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    confidence = probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probabilities.argmax(axis=1) == labels)[order]
    curve = []
    for coverage in np.linspace(0.0, 1.0, int(points)):
        answered = int(round(coverage * len(order)))
        curve.append({
            "coverage": round(answered / len(order), 4),
            "accuracy": round(float(correct[:answered].mean()), 4) if answered else None,
            "threshold": round(float(confidence[order[answered - 1]]), 4) if answered else None,
        })
    return curve


def coverage_report(probabilities, labels, calibration: ConformalCalibration, class_names: list[str]) -> dict:
    """How the sets did on held-out films (the test split): the metrics.json "conformal" section.

    Returns {"level", "method", "threshold", "n_calibration", "n", "coverage", "mean_set_size",
    "singleton_share", "singleton_accuracy", "per_class": {class: {"n", "coverage", "mean_set_size"}},
    "risk_coverage": risk_coverage(...)}. Per class, coverage is the share of that class's films whose set
    holds their class (conformal sets promise coverage over all films, not per class: small classes may
    fall below the level). A class with no film has None figures.
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    if probabilities.shape[1] != len(class_names):
        raise ValueError(f"Got {probabilities.shape[1]} probability columns for {len(class_names)} class names.")
    mask = prediction_set(probabilities, calibration.threshold, calibration.method)
    covered = mask[np.arange(len(labels)), labels]
    sizes = mask.sum(axis=1)
    singleton = sizes == 1
    per_class = {}
    for index, name in enumerate(class_names):
        rows = labels == index
        per_class[name] = {
            "n": int(rows.sum()),
            "coverage": round(float(covered[rows].mean()), 4) if rows.any() else None,
            "mean_set_size": round(float(sizes[rows].mean()), 4) if rows.any() else None,
        }
    return {
        **calibration.to_json(),
        "n": int(len(labels)),
        "coverage": round(float(covered.mean()), 4),
        "mean_set_size": round(float(sizes.mean()), 4),
        "singleton_share": round(float(singleton.mean()), 4),
        "singleton_accuracy": (round(float((probabilities.argmax(axis=1) == labels)[singleton].mean()), 4)
                               if singleton.any() else None),
        "per_class": per_class,
        "risk_coverage": risk_coverage(probabilities, labels),
    }


def run_conformal(val_probabilities, val_labels, test_probabilities, test_labels, class_names: list[str],
                  level: float = DEFAULT_LEVEL, method: str = METHODS[0]) -> dict:
    """The metrics.json "conformal" section of a run: calibrated on its validation split, reported on its
    test split (coverage_report)."""
    calibration = calibrate(val_probabilities, val_labels, level=level, method=method)
    return coverage_report(test_probabilities, test_labels, calibration, class_names)


def calibration_of(metrics: dict | None) -> ConformalCalibration | None:
    """A run's set calibration from its metrics.json, or None: a run evaluated before prediction sets
    existed (no "conformal" section) or one whose section is unusable has no sets, and never fails."""
    section = (metrics or {}).get("conformal") if isinstance(metrics, dict) else None
    if section is None:
        return None
    try:
        return ConformalCalibration.from_json(section)
    except ValueError:
        return None
