"""Tests for core.evaluation.metrics: the paper's numbers, agreement with sklearn, CIs and validation."""

import json

import numpy as np
import pytest
from sklearn import metrics as sklearn_metrics

from core.evaluation.calibration import expected_calibration_error
from core.evaluation.metrics import classification_report, confusion_matrix, report_from_confusion_matrix, roc_curves

PAPER_CLASS_NAMES = ["Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax"]
# The paper's test-set confusion matrix, rows true class, columns predicted class.
PAPER_CONFUSION_MATRIX = np.array([
    [480, 16, 0, 1],
    [1, 466, 0, 3],
    [0, 0, 417, 0],
    [1, 0, 0, 496],
])
PAPER_TOLERANCE = 5e-5


def expand_confusion_matrix(matrix):
    """y_true, y_pred with one entry per counted case of `matrix`."""
    y_true, y_pred = [], []
    for true_class, row in enumerate(matrix):
        for predicted_class, count in enumerate(row):
            y_true += [true_class] * int(count)
            y_pred += [predicted_class] * int(count)
    return np.array(y_true), np.array(y_pred)


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def sample_labels(probabilities, rng):
    """One class per row drawn from that row's probabilities."""
    cumulative = probabilities.cumsum(axis=1)
    draws = rng.random((probabilities.shape[0], 1))
    return np.minimum((draws > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def random_classifier_data(n_samples, num_classes, seed):
    """Labels, noisy-but-informative probabilities and their argmax predictions."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, n_samples)
    logits = rng.normal(size=(n_samples, num_classes))
    logits[np.arange(n_samples), y_true] += 1.5
    y_score = softmax(logits)
    return y_true, y_score.argmax(axis=1), y_score


# --------------------------------------------------------------------------------------------------
# The paper's table
# --------------------------------------------------------------------------------------------------


def check_paper_numbers(report):
    per_class = report["per_class"]
    expected = {
        "tp": [480, 466, 417, 496],
        "fp": [2, 16, 0, 4],
        "fn": [17, 4, 0, 1],
        "tn": [1382, 1395, 1464, 1380],
    }
    for key, values in expected.items():
        assert [per_class[name][key] for name in PAPER_CLASS_NAMES] == values, key
    expected_rates = {
        "precision": [0.9959, 0.9668, 1.0, 0.9920],
        "recall": [0.9658, 0.9915, 1.0, 0.9980],
        "f1": [0.9806, 0.9790, 1.0, 0.9950],
    }
    for key, values in expected_rates.items():
        received = [per_class[name][key] for name in PAPER_CLASS_NAMES]
        assert received == pytest.approx(values, abs=PAPER_TOLERANCE), key
    assert report["macro"]["precision"] == pytest.approx(0.9887, abs=PAPER_TOLERANCE)
    assert report["macro"]["recall"] == pytest.approx(0.9888, abs=PAPER_TOLERANCE)
    assert report["macro"]["f1"] == pytest.approx(0.9886, abs=PAPER_TOLERANCE)
    assert report["mean_ovr_accuracy"] == pytest.approx(0.9942, abs=PAPER_TOLERANCE)
    assert report["accuracy"] == pytest.approx(0.9883, abs=PAPER_TOLERANCE)
    assert report["n"] == 1881
    assert report["classes"] == PAPER_CLASS_NAMES
    assert report["confusion_matrix"] == PAPER_CONFUSION_MATRIX.tolist()
    assert [per_class[name]["support"] for name in PAPER_CLASS_NAMES] == [497, 470, 417, 497]
    assert report["clinical_bar"]["all_passed"] is True


def test_report_from_confusion_matrix_reproduces_the_paper():
    report = report_from_confusion_matrix(PAPER_CONFUSION_MATRIX, PAPER_CLASS_NAMES)
    check_paper_numbers(report)
    assert report["ci95"] is None
    assert all(values["roc_auc"] is None for values in report["per_class"].values())


def test_classification_report_from_cases_reproduces_the_paper():
    y_true, y_pred = expand_confusion_matrix(PAPER_CONFUSION_MATRIX)
    report = classification_report(y_true, y_pred, PAPER_CLASS_NAMES, n_bootstrap=200)
    check_paper_numbers(report)
    low, high = report["ci95"]["accuracy"]
    assert low <= report["accuracy"] <= high
    json.dumps(report)


def test_weighted_average_uses_support():
    report = report_from_confusion_matrix(PAPER_CONFUSION_MATRIX, PAPER_CLASS_NAMES)
    support = PAPER_CONFUSION_MATRIX.sum(axis=1)
    recalls = np.array([report["per_class"][name]["recall"] for name in PAPER_CLASS_NAMES])
    # Support-weighted recall is the overall accuracy, a classic identity.
    assert report["weighted"]["recall"] == pytest.approx(np.sum(recalls * support) / support.sum())
    assert report["weighted"]["recall"] == pytest.approx(report["accuracy"])


# --------------------------------------------------------------------------------------------------
# Agreement with sklearn
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_agrees_with_sklearn_on_random_data(seed, num_classes):
    y_true, y_pred, y_score = random_classifier_data(300, num_classes, seed)
    class_names = [f"class {index}" for index in range(num_classes)]
    labels = list(range(num_classes))

    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, num_classes),
        sklearn_metrics.confusion_matrix(y_true, y_pred, labels=labels),
    )
    report = classification_report(y_true, y_pred, class_names, y_score, n_bootstrap=0)
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    for index, name in enumerate(class_names):
        values = report["per_class"][name]
        assert values["precision"] == pytest.approx(precision[index])
        assert values["recall"] == pytest.approx(recall[index])
        assert values["f1"] == pytest.approx(f1[index])
        assert values["support"] == support[index]
        assert values["roc_auc"] == pytest.approx(
            sklearn_metrics.roc_auc_score(y_true == index, y_score[:, index])
        )
    for average in ("macro", "weighted"):
        expected = sklearn_metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        assert [report[average][key] for key in ("precision", "recall", "f1")] == pytest.approx(expected[:3])
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    if num_classes > 2:
        macro_auc = np.mean([report["per_class"][name]["roc_auc"] for name in class_names])
        assert macro_auc == pytest.approx(
            sklearn_metrics.roc_auc_score(y_true, y_score, multi_class="ovr", average="macro")
        )


def test_roc_curves_match_sklearn_and_skip_single_class_columns():
    y_true, _, y_score = random_classifier_data(200, 3, seed=5)
    # Make class 2 absent from y_true so it has no ROC curve.
    y_true = np.where(y_true == 2, 0, y_true)
    curves = roc_curves(y_true, y_score, ["a", "b", "c"])
    false_positive_rate, true_positive_rate, _ = sklearn_metrics.roc_curve(y_true == 1, y_score[:, 1])
    assert curves["b"]["fpr"] == pytest.approx(false_positive_rate.tolist())
    assert curves["b"]["tpr"] == pytest.approx(true_positive_rate.tolist())
    assert curves["b"]["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y_true == 1, y_score[:, 1]))
    assert curves["c"] == {"fpr": [], "tpr": [], "auc": None}
    json.dumps(curves)


def test_roc_auc_is_none_for_absent_or_universal_class():
    y_true = np.array([0, 0, 0, 0])
    y_score = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    report = classification_report(y_true, y_score.argmax(axis=1), ["a", "b"], y_score, n_bootstrap=0)
    assert report["per_class"]["a"]["roc_auc"] is None
    assert report["per_class"]["b"]["roc_auc"] is None


# --------------------------------------------------------------------------------------------------
# Bootstrap confidence intervals
# --------------------------------------------------------------------------------------------------


def test_confidence_interval_contains_estimate_and_narrows_with_more_data():
    widths = {}
    for n_samples in (200, 3000):
        y_true, y_pred, _ = random_classifier_data(n_samples, 4, seed=3)
        report = classification_report(y_true, y_pred, list("abcd"), n_bootstrap=500, seed=0)
        ci95 = report["ci95"]
        assert ci95["n_bootstrap"] == 500
        assert ci95["method"] == "percentile bootstrap over cases"
        assert ci95["accuracy"][0] <= report["accuracy"] <= ci95["accuracy"][1]
        assert ci95["macro_f1"][0] <= report["macro"]["f1"] <= ci95["macro_f1"][1]
        widths[n_samples] = (ci95["accuracy"][1] - ci95["accuracy"][0], ci95["macro_f1"][1] - ci95["macro_f1"][0])
    assert widths[3000][0] < widths[200][0] / 2
    assert widths[3000][1] < widths[200][1] / 2


def test_confidence_interval_is_reproducible_for_a_seed():
    y_true, y_pred, _ = random_classifier_data(300, 3, seed=4)
    first = classification_report(y_true, y_pred, list("abc"), n_bootstrap=300, seed=7)["ci95"]
    second = classification_report(y_true, y_pred, list("abc"), n_bootstrap=300, seed=7)["ci95"]
    other = classification_report(y_true, y_pred, list("abc"), n_bootstrap=300, seed=8)["ci95"]
    assert first == second
    assert first != other


def test_n_bootstrap_zero_skips_intervals():
    report = classification_report([0, 1, 1], [0, 1, 0], ["Normal", "Pneumonia"], n_bootstrap=0)
    assert report["ci95"] is None


@pytest.mark.parametrize("n_bootstrap", [-1, 2.5, "1000"])
def test_bad_n_bootstrap_raises(n_bootstrap):
    with pytest.raises(ValueError, match=r"Got n_bootstrap=.*expected an integer of 0 or more"):
        classification_report([0, 1], [0, 1], ["a", "b"], n_bootstrap=n_bootstrap)


# --------------------------------------------------------------------------------------------------
# Zero division and the clinical bar
# --------------------------------------------------------------------------------------------------


def test_zero_division_gives_zero_and_a_class_without_films_is_undefined():
    # Class 2 is never predicted and never true; class 1 is true but never predicted.
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 0])
    report = classification_report(y_true, y_pred, ["a", "b", "c"], n_bootstrap=0)
    assert report["per_class"]["b"]["precision"] == 0.0 and report["per_class"]["b"]["f1"] == 0.0
    assert report["per_class"]["b"]["recall"] == 0.0
    # A class with no films has no recall, F1 or (never predicted) precision: None, never 0.
    assert {key: report["per_class"]["c"][key] for key in ("precision", "recall", "f1", "support")} == {
        "precision": None, "recall": None, "f1": None, "support": 0}
    assert report["per_class"]["a"]["precision"] == pytest.approx(0.5)
    # Macro averages are over the classes with films, and say so.
    assert report["macro"]["classes"] == ["a", "b"]
    expected = sklearn_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1], average="macro", zero_division=0
    )
    assert [report["macro"][key] for key in ("precision", "recall", "f1")] == pytest.approx(expected[:3])
    assert report["clinical_bar"]["per_class"]["c"]["recall"] is None
    json.dumps(report)


def test_a_class_without_films_that_was_predicted_has_precision_zero():
    report = classification_report([0, 0, 1, 1], [0, 2, 1, 1], ["a", "b", "c"], n_bootstrap=200, seed=0)
    assert report["per_class"]["c"]["precision"] == 0.0 and report["per_class"]["c"]["recall"] is None
    assert report["macro"]["classes"] == ["a", "b"]
    assert report["macro"]["f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    # The interval is of the same macro-F1: it holds the point estimate.
    low, high = report["ci95"]["macro_f1"]
    assert low <= report["macro"]["f1"] <= high


def test_every_undefined_figure_reads_no_films_never_zero_percent():
    from core.evaluation.summary import NO_FILMS, class_figure_text, macro_note

    report = classification_report([0, 0, 1, 1], [0, 0, 0, 1], ["Normal", "Pneumonia", "Cardiomegaly"],
                                   n_bootstrap=0)
    row = report["per_class"]["Cardiomegaly"]
    assert [class_figure_text(row, key) for key in ("precision", "recall", "f1", "roc_auc")] == [NO_FILMS] * 4
    assert class_figure_text(report["per_class"]["Normal"], "recall") == "100.0%"
    # A report written before the undefined figures existed (0.0 stored) reads the same.
    assert class_figure_text({"support": 0, "recall": 0.0}, "recall") == NO_FILMS
    assert macro_note(report) == ("Macro averages are over Normal and Pneumonia only: Cardiomegaly has no films "
                                  "here, so their recall and F1 are undefined.")
    assert macro_note(classification_report([0, 1], [0, 1], ["a", "b"], n_bootstrap=0)) is None


def test_clinical_bar_flags_what_fails():
    # Class b has recall 0.5, below the 0.9 bar; class a passes recall.
    y_true = np.array([0] * 10 + [1] * 10)
    y_pred = np.array([0] * 10 + [1] * 5 + [0] * 5)
    bar = classification_report(y_true, y_pred, ["a", "b"], n_bootstrap=0)["clinical_bar"]
    assert bar["threshold"] == 0.9
    assert bar["per_class"]["a"]["recall"] is True
    assert bar["per_class"]["b"]["recall"] is False
    assert bar["accuracy"] is False
    assert bar["all_passed"] is False
    relaxed = classification_report(y_true, y_pred, ["a", "b"], n_bootstrap=0, clinical_threshold=0.5)
    assert relaxed["clinical_bar"]["all_passed"] is True


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match=r"Got y_true with 3 samples and y_pred with 2; they must have the same length"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="same length"):
        classification_report([0, 1, 1], [0, 1], ["a", "b"])


@pytest.mark.parametrize(
    "y_true, y_pred, pattern",
    [
        ([0, 1, 2], [0, 1, 1], r"Got y_true values \[2\] outside \[0, 2\) for num_classes=2"),
        ([0, 1, 1], [0, -1, 1], r"Got y_pred values \[-1\] outside \[0, 2\)"),
    ],
)
def test_out_of_range_labels_raise(y_true, y_pred, pattern):
    with pytest.raises(ValueError, match=pattern):
        confusion_matrix(y_true, y_pred, 2)
    with pytest.raises(ValueError, match=pattern):
        classification_report(y_true, y_pred, ["a", "b"])


def test_non_integer_and_empty_labels_raise():
    with pytest.raises(ValueError, match=r"Got y_true of dtype <U6 .*expected integer class indices"):
        confusion_matrix(["Normal", "Normal"], [0, 1], 2)
    with pytest.raises(ValueError, match=r"Got y_pred with shape \(2, 2\); expected a 1-D array"):
        confusion_matrix([0, 1], [[1, 0], [0, 1]], 2)
    with pytest.raises(ValueError, match="Got 0 samples"):
        confusion_matrix([], [], 2)


def test_score_shape_and_range_are_checked():
    with pytest.raises(ValueError, match=r"Got y_score with shape \(2, 3\); expected \(2, 2\)"):
        classification_report([0, 1], [0, 1], ["a", "b"], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="expected probabilities in \\[0, 1\\]. If these are logits, apply a softmax"):
        expected_calibration_error([0, 1], np.array([[2.0, -1.0], [0.5, 0.5]]))


def test_report_from_confusion_matrix_validates_shape():
    with pytest.raises(ValueError, match=r"Got a confusion matrix of shape \(2, 2\); expected \(3, 3\)"):
        report_from_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"])
    with pytest.raises(ValueError, match="Got clinical_threshold=1.5"):
        report_from_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], clinical_threshold=1.5)


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------


def test_full_report_is_json_serialisable_with_plain_types():
    y_true, y_pred, y_score = random_classifier_data(150, 4, seed=9)
    report = classification_report(y_true, y_pred, PAPER_CLASS_NAMES, y_score, n_bootstrap=100)
    assert json.loads(json.dumps(report)) == report

    def check_plain(value):
        if isinstance(value, dict):
            for item in value.values():
                check_plain(item)
        elif isinstance(value, list):
            for item in value:
                check_plain(item)
        else:
            assert value is None or type(value) in (bool, int, float, str), type(value)

    check_plain(report)
    assert set(report) == {
        "classes", "n", "accuracy", "mean_ovr_accuracy", "macro", "weighted", "per_class",
        "confusion_matrix", "ci95", "clinical_bar",
    }
    assert set(report["per_class"]["Normal"]) == {
        "precision", "recall", "f1", "ovr_accuracy", "tp", "fp", "fn", "tn", "support", "roc_auc",
    }


def test_bootstrap_matches_a_plain_loop_over_resamples():
    y_true, y_pred, _ = random_classifier_data(300, 3, seed=6)
    ci95 = classification_report(y_true, y_pred, list("abc"), n_bootstrap=200, seed=11)["ci95"]
    # The same resamples, drawn the same way, scored one at a time with plain masks.
    indices = np.random.default_rng(11).integers(0, len(y_true), size=(200, len(y_true)))
    accuracies, macro_f1s = [], []
    for rows in indices:
        true, predicted = y_true[rows], y_pred[rows]
        accuracies.append(np.mean(true == predicted))
        f1s = []
        for label in range(3):
            true_positive = np.sum((true == label) & (predicted == label))
            errors = np.sum((true == label) != (predicted == label))
            f1s.append(2 * true_positive / (2 * true_positive + errors) if true_positive + errors else 0.0)
        macro_f1s.append(np.mean(f1s))
    assert ci95["accuracy"] == pytest.approx(np.percentile(accuracies, [2.5, 97.5]).tolist())
    assert ci95["macro_f1"] == pytest.approx(np.percentile(macro_f1s, [2.5, 97.5]).tolist())
