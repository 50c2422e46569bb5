"""The `metrics.json` schema (and that of an external validation), as TypedDicts: what
core.evaluation.metrics.classification_report returns and what the training-time evaluation adds.

Types only: core.runs.artifacts reads and writes the files, and nothing here reads a file or imports
TensorFlow.
"""

from __future__ import annotations

from typing import TypedDict


class ClassMetrics(TypedDict):
    precision: float | None  # None for a class with no films that was never predicted
    recall: float | None  # None for a class with no films: undefined, shown as "—, no films", never 0
    f1: float | None  # None for a class with no films
    ovr_accuracy: float
    tp: int
    fp: int
    fn: int
    tn: int
    support: int
    roc_auc: float | None  # None without scores, or for a class absent from (or making up) every case.


class Averages(TypedDict):
    precision: float | None  # None only when no class has films
    recall: float | None
    f1: float | None


class MacroAverages(Averages):
    classes: list[str]  # the classes averaged over: those with films in the evaluated set


class ConfidenceIntervals(TypedDict):
    accuracy: list[float]  # [low, high], 95% percentile bootstrap over cases
    macro_f1: list[float]
    n_bootstrap: int
    method: str


class ClinicalBar(TypedDict):
    threshold: float
    per_class: dict[str, dict[str, bool | None]]  # name -> {"precision", "recall", "f1", "ovr_accuracy"} passed,
    # None where the figure is undefined (a class with no films)
    accuracy: bool
    macro_f1: bool
    all_passed: bool


class Report(TypedDict):
    """What core.evaluation.metrics.classification_report returns."""

    classes: list[str]
    n: int
    accuracy: float  # trace / total
    mean_ovr_accuracy: float  # mean over classes of (TP + TN) / n: the paper's "accuracy" figure
    macro: MacroAverages
    weighted: Averages
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]  # rows true class, columns predicted class
    ci95: ConfidenceIntervals | None  # None when no bootstrap was asked for
    clinical_bar: ClinicalBar


class TrainingSummary(TypedDict):
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    wall_time_seconds: float
    decode_seconds: float


class ValidationSummary(TypedDict):
    n: int
    accuracy: float
    macro_f1: float
    mean_ovr_accuracy: float


class Calibration(TypedDict):
    temperature: float  # fitted on the validation split (core.evaluation.calibration.fit_temperature)
    fitted_on: str
    ece_val_before: float
    ece_val_after: float
    ece_test_before: float
    ece_test_after: float


class LaterRunSections(TypedDict, total=False):
    """metrics.json sections added after the first runs were shipped: a run evaluated before lacks them."""

    # Split-conformal sets calibrated on the validation split, reported on the test split
    # (core.evaluation.conformal.coverage_report: "level", "method", "threshold", "coverage",
    # "mean_set_size", "per_class", ...).
    conformal: dict


class RunMetrics(Report, LaterRunSections):
    """metrics.json of a run: the test-set Report plus what the training-time evaluation adds."""

    subset: str  # "test"
    evaluated: str  # ISO time
    training: TrainingSummary
    validation: ValidationSummary
    calibration: Calibration


class ExternalMetrics(Report):
    """What core.evaluation.evaluate.evaluate_folder returns (and `evaluate --json` writes); kept, plus
    "evaluated", as the run's last external validation (external_validation.json)."""

    subset: str  # "external"
    data_dir: str
    run_id: str
    evaluated: str
    skipped: list[dict]  # {"path", "reason"}
    engine: str
    overlap: dict  # core.evaluation.overlap.check_overlap
    predictions: list[dict]  # {"file", "label", "predicted", "probabilities": {class: p}}
