"""Classification metrics for Paru: confusion matrix, the report (with bootstrap CIs) and ROC curves.

Every function here is pure: arrays in, arrays or plain dicts out, with an explicit ``seed`` where
randomness is involved. Nothing imports TensorFlow or Streamlit or touches files, so pages that only
show metrics stay fast and the numbers can be checked by hand.

Conventions, shared by every function:

- ``y_true`` and ``y_pred`` are 1-D integer class indices in ``[0, num_classes)``, in the order of one
  ``class_names`` list (the same list the model registry stores).
- ``y_score`` is an ``(n, num_classes)`` array of class probabilities (a softmax output), with
  columns in ``class_names`` order.
- A class with no films in ``y_true`` has no recall and no F1: they are ``None`` (undefined), never 0,
  because "0% of no films found" would read as a failure. Its precision is 0 when it was predicted (every
  such answer is wrong) and ``None`` when it was not. A class with films that is never predicted keeps
  precision 0 (sklearn's ``zero_division=0``); F1 is ``2*TP / (2*TP + FP + FN)``.
- Macro averages are taken over the classes with films only, and ``macro["classes"]`` names them, so an
  external folder lacking a class is averaged over what it holds and says so.
- Every number in a returned dict is a plain Python ``float``/``int`` (or ``None``), so
  ``json.dumps`` works on it directly (this is the ``metrics.json`` schema).

The validators ``_check_targets`` and ``_check_scores`` are shared by all public functions (and by
core.evaluation.calibration, which holds calibration and temperature scaling), the way sklearn shares its own.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from core.validation import check_int

CI_METHOD = "percentile bootstrap over cases"
# The number of resampled cases processed at once by the bootstrap, to bound memory on large test sets.
_BOOTSTRAP_CELLS_PER_CHUNK = 4_000_000
# Row sums of a softmax output computed in float32 differ from 1 by far less than this.
PROBABILITY_SUM_TOLERANCE = 1e-3


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _as_class_indices(values, name: str) -> np.ndarray:
    """Return `values` as a 1-D int64 array, or raise ValueError saying what was received."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"Got {name} with shape {array.shape}; expected a 1-D array of class indices. "
            "If you have one-hot rows or probabilities, take argmax(axis=1) first."
        )
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise ValueError(
        f"Got {name} of dtype {array.dtype} (first values {array[:3].tolist()}); expected integer class "
        "indices. Map class names to indices with class_names.index(name) first."
    )


def _check_targets(y_true, y_pred, num_classes) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of label arrays; return them as int64 arrays.

    Args:
        y_true: shape (n,), true class indices.
        y_pred: shape (n,), predicted class indices (or any second label array of the same length).
        num_classes: the number of classes; every value must lie in ``[0, num_classes)``.

    Returns:
        ``(y_true, y_pred)`` as 1-D ``np.int64`` arrays.

    Raises:
        ValueError: a non-1-D or non-integer array, different lengths, no samples, or a value out of range.
    """
    num_classes = check_int("num_classes", num_classes)
    y_true = _as_class_indices(y_true, "y_true")
    y_pred = _as_class_indices(y_pred, "y_pred")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"Got y_true with {y_true.shape[0]} samples and y_pred with {y_pred.shape[0]}; they must have "
            "the same length, one entry per image. Check that both come from the same dataset."
        )
    if y_true.shape[0] == 0:
        raise ValueError("Got 0 samples; metrics need at least one labelled image. Check the test set.")
    for name, array in (("y_true", y_true), ("y_pred", y_pred)):
        out_of_range = (array < 0) | (array >= num_classes)
        if np.any(out_of_range):
            bad = np.unique(array[out_of_range])[:5].tolist()
            raise ValueError(
                f"Got {name} values {bad} outside [0, {num_classes}) for num_classes={num_classes}. "
                "Check that labels are indices into the same class_names list the model was trained with."
            )
    return y_true, y_pred


def _check_class_names(class_names) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence | np.ndarray):
        raise ValueError(
            f"Got class_names={class_names!r}; expected a list of class name strings, "
            "for example ['Normal', 'Pneumonia']."
        )
    names = [str(name) for name in class_names]
    if len(names) == 0:
        raise ValueError("Got an empty class_names list; expected one name per class.")
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"Got duplicate class names {duplicates}; every class needs a unique name.")
    return names


def _check_scores(y_score, n_samples: int, num_classes: int, *, probabilities: bool) -> np.ndarray:
    """Validate an (n, num_classes) score array; with `probabilities`, also the [0, 1] range and row sums."""
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.shape != (n_samples, num_classes):
        raise ValueError(
            f"Got y_score with shape {scores.shape}; expected ({n_samples}, {num_classes}), one row per "
            "sample and one column per class in class_names order."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("Got y_score with NaN or infinite values; expected finite probabilities.")
    if probabilities:
        if scores.min() < 0 or scores.max() > 1:
            raise ValueError(
                f"Got y_score values in [{scores.min():.4g}, {scores.max():.4g}]; expected probabilities "
                "in [0, 1]. If these are logits, apply a softmax first."
            )
        row_sums = scores.sum(axis=1)
        if np.any(np.abs(row_sums - 1) > PROBABILITY_SUM_TOLERANCE):
            worst = row_sums[np.argmax(np.abs(row_sums - 1))]
            raise ValueError(
                f"Got y_score rows summing to as much as {worst:.4g} apart from 1; expected each row to "
                "be a probability distribution (a softmax output) that sums to 1."
            )
    return scores


def _check_confusion_matrix(confusion_matrix, num_classes: int) -> np.ndarray:
    matrix = np.asarray(confusion_matrix)
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(
            f"Got a confusion matrix of shape {matrix.shape}; expected ({num_classes}, {num_classes}) "
            "to match class_names (rows true class, columns predicted class)."
        )
    if matrix.dtype.kind not in "iu" and not (
        matrix.dtype.kind == "f" and np.all(np.isfinite(matrix)) and np.all(matrix == np.round(matrix))
    ):
        raise ValueError(f"Got a confusion matrix of dtype {matrix.dtype}; expected whole-number counts.")
    matrix = matrix.astype(np.int64)
    if np.any(matrix < 0):
        raise ValueError("Got negative counts in the confusion matrix; expected counts of 0 or more.")
    if matrix.sum() == 0:
        raise ValueError("Got an all-zero confusion matrix; metrics need at least one labelled image.")
    return matrix


def _check_threshold(clinical_threshold) -> float:
    try:
        threshold = float(clinical_threshold)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"Got clinical_threshold={clinical_threshold!r}; expected a number in [0, 1], e.g. 0.90.")
    return threshold


# --------------------------------------------------------------------------------------------------
# Confusion matrix and the report
# --------------------------------------------------------------------------------------------------


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Count (true class, predicted class) pairs.

    Args:
        y_true: shape (n,), true class indices in ``[0, num_classes)``.
        y_pred: shape (n,), predicted class indices in ``[0, num_classes)``.
        num_classes: the number of classes; classes that never occur still get a row and a column.

    Returns:
        ``np.int64`` array of shape (num_classes, num_classes): ``matrix[i, j]`` is the number of images
        of true class ``i`` predicted as class ``j`` (rows true, columns predicted, as in sklearn).
        For two classes, ``tn, fp, fn, tp = confusion_matrix(y_true, y_pred, 2).ravel()``.

    Raises:
        ValueError: see ``_check_targets``.
    """
    y_true, y_pred = _check_targets(y_true, y_pred, num_classes)
    num_classes = int(num_classes)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise numerator / denominator, with 0.0 wherever the denominator is 0 (zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    result = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=result, where=denominator != 0)
    return result


def _counts_from_matrices(matrices: np.ndarray):
    """TP, FP, FN, TN per class from confusion matrices of shape (..., k, k); each result has shape (..., k)."""
    true_positive = np.diagonal(matrices, axis1=-2, axis2=-1)
    false_positive = matrices.sum(axis=-2) - true_positive
    false_negative = matrices.sum(axis=-1) - true_positive
    total = matrices.sum(axis=(-2, -1))[..., None]
    true_negative = total - true_positive - false_positive - false_negative
    return true_positive, false_positive, false_negative, true_negative


def _f1_from_counts(true_positive, false_positive, false_negative) -> np.ndarray:
    return _safe_divide(2 * true_positive, 2 * true_positive + false_positive + false_negative)


def _defined(values: np.ndarray, defined: np.ndarray) -> list:
    """Plain floats where `defined`, None elsewhere (a figure of a class it says nothing about)."""
    return [float(value) if keep else None for value, keep in zip(values, defined)]


def _mean_of_defined(values: list) -> float | None:
    kept = [value for value in values if value is not None]
    return float(np.mean(kept)) if kept else None


def report_from_confusion_matrix(confusion_matrix, class_names, clinical_threshold: float = 0.90) -> dict:
    """Build the ``metrics.json`` report from a confusion matrix alone.

    ROC AUC needs scores and the confidence intervals need the cases, so here every ``roc_auc`` is
    ``None`` and ``ci95`` is ``None``; use ``classification_report`` to get them.

    Args:
        confusion_matrix: shape (k, k) whole-number counts, rows true class, columns predicted class.
        class_names: k class names, in the order of the matrix rows.
        clinical_threshold: the bar every per-class metric, the accuracy and the macro-F1 are compared
            with (``>=`` passes). Default 0.90.

    Returns:
        A dict with keys ``classes``, ``n``, ``accuracy`` (trace / total), ``mean_ovr_accuracy`` (the mean
        over classes of (TP + TN) / n, the paper's "accuracy 99.42%" figure), ``macro`` and ``weighted``
        (support-weighted) ``{"precision", "recall", "f1"}``, ``per_class`` (per name: precision,
        recall, f1, ovr_accuracy, tp, fp, fn, tn, support, roc_auc), ``confusion_matrix`` (list of
        lists), ``ci95`` and ``clinical_bar``. A class without films has recall and F1 ``None`` (and
        precision ``None`` unless it was predicted); ``macro`` averages the classes with films, listed in
        ``macro["classes"]``; ``weighted`` weighs by support, so those classes weigh nothing.

    Raises:
        ValueError: a matrix that is not (k, k), has negative or fractional counts or sums to 0; bad
            class names; a threshold outside [0, 1].
    """
    names = _check_class_names(class_names)
    matrix = _check_confusion_matrix(confusion_matrix, len(names))
    threshold = _check_threshold(clinical_threshold)

    true_positive, false_positive, false_negative, true_negative = _counts_from_matrices(matrix)
    total = int(matrix.sum())
    support = matrix.sum(axis=1)
    precision = _safe_divide(true_positive, true_positive + false_positive)
    recall = _safe_divide(true_positive, true_positive + false_negative)
    f1 = _f1_from_counts(true_positive, false_positive, false_negative)
    ovr_accuracy = (true_positive + true_negative) / total
    accuracy = float(np.trace(matrix) / total)

    has_films = support > 0
    precision_values = _defined(precision, has_films | (true_positive + false_positive > 0))
    recall_values, f1_values = _defined(recall, has_films), _defined(f1, has_films)
    per_class = {}
    for index, name in enumerate(names):
        per_class[name] = {
            "precision": precision_values[index],
            "recall": recall_values[index],
            "f1": f1_values[index],
            "ovr_accuracy": float(ovr_accuracy[index]),
            "tp": int(true_positive[index]),
            "fp": int(false_positive[index]),
            "fn": int(false_negative[index]),
            "tn": int(true_negative[index]),
            "support": int(support[index]),
            "roc_auc": None,
        }
    weights = support / total
    averaged = [index for index in range(len(names)) if has_films[index]]
    macro = {"precision": _mean_of_defined([precision_values[i] for i in averaged]),
             "recall": _mean_of_defined([recall_values[i] for i in averaged]),
             "f1": _mean_of_defined([f1_values[i] for i in averaged]),
             "classes": [names[i] for i in averaged]}
    weighted = {
        "precision": float(np.sum(precision * weights)),
        "recall": float(np.sum(recall * weights)),
        "f1": float(np.sum(f1 * weights)),
    }
    report = {
        "classes": names,
        "n": total,
        "accuracy": accuracy,
        "mean_ovr_accuracy": float(ovr_accuracy.mean()),
        "macro": macro,
        "weighted": weighted,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "ci95": None,
        "clinical_bar": None,
    }
    report["clinical_bar"] = _clinical_bar(report, threshold)
    return report


def _clinical_bar(report: dict, threshold: float) -> dict:
    """Which figures of a report reach `threshold` (``>=`` passes; an undefined figure is ``None``, not judged)."""
    per_class = {
        name: {key: None if values[key] is None else bool(values[key] >= threshold)
               for key in ("precision", "recall", "f1", "ovr_accuracy")}
        for name, values in report["per_class"].items()
    }
    accuracy_passed = bool(report["accuracy"] >= threshold)
    macro_f1_passed = report["macro"]["f1"] is not None and bool(report["macro"]["f1"] >= threshold)
    all_passed = accuracy_passed and macro_f1_passed and all(
        passed is not False for checks in per_class.values() for passed in checks.values()
    )
    return {
        "threshold": float(threshold),
        "per_class": per_class,
        "accuracy": accuracy_passed,
        "macro_f1": macro_f1_passed,
        "all_passed": bool(all_passed),
    }


def _bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, n_bootstrap: int, seed) -> dict:
    """95% percentile bootstrap intervals of accuracy and macro-F1, resampling cases with replacement.

    Macro-F1 averages the classes with films in `y_true`, as the report's point estimate does."""
    rng = np.random.default_rng(seed)
    averaged = np.bincount(y_true, minlength=num_classes) > 0
    n_samples = y_true.shape[0]
    # Encoding each case as one (true, predicted) cell lets a single bincount build every resampled
    # confusion matrix at once.
    cells = y_true * num_classes + y_pred
    cells_per_matrix = num_classes * num_classes
    accuracies = np.empty(n_bootstrap, dtype=np.float64)
    macro_f1s = np.empty(n_bootstrap, dtype=np.float64)
    chunk_size = max(1, _BOOTSTRAP_CELLS_PER_CHUNK // n_samples)
    for start in range(0, n_bootstrap, chunk_size):
        stop = min(start + chunk_size, n_bootstrap)
        indices = rng.integers(0, n_samples, size=(stop - start, n_samples))
        offsets = np.arange(stop - start)[:, None] * cells_per_matrix
        flat = np.bincount((cells[indices] + offsets).ravel(), minlength=(stop - start) * cells_per_matrix)
        matrices = flat.reshape(stop - start, num_classes, num_classes)
        true_positive, false_positive, false_negative, _ = _counts_from_matrices(matrices)
        accuracies[start:stop] = true_positive.sum(axis=1) / n_samples
        macro_f1s[start:stop] = _f1_from_counts(true_positive, false_positive, false_negative)[:, averaged].mean(axis=1)
    return {
        "accuracy": [float(value) for value in np.percentile(accuracies, [2.5, 97.5])],
        "macro_f1": [float(value) for value in np.percentile(macro_f1s, [2.5, 97.5])],
        "n_bootstrap": int(n_bootstrap),
        "method": CI_METHOD,
    }


def _one_vs_rest_auc(y_true: np.ndarray, y_score: np.ndarray, class_index: int):
    """ROC AUC of one class against the rest, or None when the class is absent or is every case."""
    is_class = y_true == class_index
    if is_class.all() or not is_class.any():
        return None
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError as error:  # pragma: no cover - scikit-learn is a project dependency.
        raise ImportError("ROC AUC needs scikit-learn. Install it with `pip install scikit-learn`.") from error
    return float(roc_auc_score(is_class, y_score[:, class_index]))


def classification_report(
    y_true,
    y_pred,
    class_names,
    y_score=None,
    *,
    n_bootstrap: int = 1000,
    seed=0,
    clinical_threshold: float = 0.90,
) -> dict:
    """The full ``metrics.json`` report: per-class and averaged metrics, ROC AUC, 95% CIs and the clinical bar.

    Args:
        y_true: shape (n,), true class indices into `class_names`.
        y_pred: shape (n,), predicted class indices (usually ``y_score.argmax(axis=1)``).
        class_names: k class names; k sets the number of classes.
        y_score: optional shape (n, k) class probabilities. When given, each class gets a one-vs-rest
            ROC AUC (``None`` for a class absent from `y_true` or present in every case).
        n_bootstrap: number of bootstrap resamples of the cases for the 95% percentile intervals of
            accuracy and macro-F1. Default 1000; 0 skips them (``ci95`` is then ``None``).
        seed: seed for ``np.random.default_rng``; the same seed gives the same intervals.
        clinical_threshold: the bar of ``clinical_bar``. Default 0.90.

    Returns:
        The dict of ``report_from_confusion_matrix`` with ``per_class[name]["roc_auc"]`` filled when
        `y_score` is given and ``ci95 = {"accuracy": [lo, hi], "macro_f1": [lo, hi], "n_bootstrap": int,
        "method": "percentile bootstrap over cases"}`` when ``n_bootstrap > 0``.

    Raises:
        ValueError: see ``_check_targets``; also a `y_score` of the wrong shape or not probabilities.

    Example:
        >>> report = classification_report([0, 1, 1], [0, 1, 0], ["Normal", "Pneumonia"], n_bootstrap=0)
        >>> report["per_class"]["Pneumonia"]["recall"]
        0.5
    """
    names = _check_class_names(class_names)
    num_classes = len(names)
    y_true, y_pred = _check_targets(y_true, y_pred, num_classes)
    n_bootstrap = check_int("n_bootstrap", n_bootstrap, minimum=0,
                            expected="an integer of 0 or more (1000 is typical, 0 skips the confidence intervals)")
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    report = report_from_confusion_matrix(matrix, names, clinical_threshold=clinical_threshold)
    if y_score is not None:
        scores = _check_scores(y_score, y_true.shape[0], num_classes, probabilities=True)
        for index, name in enumerate(names):
            report["per_class"][name]["roc_auc"] = _one_vs_rest_auc(y_true, scores, index)
    if n_bootstrap > 0:
        report["ci95"] = _bootstrap_intervals(y_true, y_pred, num_classes, n_bootstrap, seed)
    return report


# --------------------------------------------------------------------------------------------------
# ROC curves
# --------------------------------------------------------------------------------------------------


def roc_curves(y_true, y_score, class_names) -> dict:
    """One-vs-rest ROC curves per class, for plotting.

    Args:
        y_true: shape (n,), true class indices into `class_names`.
        y_score: shape (n, k) class probabilities (any finite scores work; only their order matters).
        class_names: k class names.

    Returns:
        ``{name: {"fpr": [...], "tpr": [...], "auc": float or None}}``. A class absent from `y_true`, or
        present in every case, has no ROC curve: its ``fpr`` and ``tpr`` are empty lists and ``auc`` is
        ``None``.
    """
    names = _check_class_names(class_names)
    num_classes = len(names)
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(
            f"Got y_score with shape {scores.shape}; expected (n, {num_classes}), one column per class "
            "in class_names order."
        )
    y_true, _ = _check_targets(y_true, scores.argmax(axis=1), num_classes)
    scores = _check_scores(scores, y_true.shape[0], num_classes, probabilities=False)
    try:
        from sklearn.metrics import roc_curve
    except ImportError as error:  # pragma: no cover - scikit-learn is a project dependency.
        raise ImportError("ROC curves need scikit-learn. Install it with `pip install scikit-learn`.") from error

    curves = {}
    for index, name in enumerate(names):
        auc = _one_vs_rest_auc(y_true, scores, index)
        if auc is None:
            curves[name] = {"fpr": [], "tpr": [], "auc": None}
            continue
        false_positive_rate, true_positive_rate, _ = roc_curve(y_true == index, scores[:, index])
        curves[name] = {
            "fpr": [float(value) for value in false_positive_rate],
            "tpr": [float(value) for value in true_positive_rate],
            "auc": auc,
        }
    return curves
