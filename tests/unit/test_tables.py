"""core.ui.tables: each pandas builder on small hand-made inputs, without a Streamlit runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.ui import tables

PER_CLASS = {"Normal": {"tp": 3, "fp": 0, "fn": 1, "tn": 4, "support": 4, "precision": 1.0, "recall": 0.75,
                        "f1": 0.857, "ovr_accuracy": 0.875, "roc_auc": 0.9},
             "Pneumonia": {"tp": 4, "fp": 1, "fn": 0, "tn": 3, "support": 4, "precision": 0.8, "recall": 1.0,
                           "f1": 0.889, "ovr_accuracy": 0.875}}
METRICS = {"n": 8, "accuracy": 0.875, "mean_ovr_accuracy": 0.875, "macro": {"f1": 0.873},
           "ci95": {"accuracy": [0.5, 0.98]}, "per_class": PER_CLASS,
           "calibration": {"temperature": 1.25, "ece_val_before": 0.1, "ece_val_after": 0.05,
                           "ece_test_before": 0.12, "ece_test_after": 0.06},
           "training": {"epochs_run": 3}}


@dataclass
class FakeRun:
    run_id: str
    metrics: dict | None
    config: dict = field(default_factory=lambda: {"preset": "paper", "alpha": 0.35, "image_size": 64})
    data_report: dict = field(default_factory=lambda: {"root": "/data/nih-cxr4"})
    classes: list = field(default_factory=lambda: ["Normal", "Pneumonia"])


def test_compare_table_one_column_per_run():
    table = tables.compare_table([FakeRun("a", METRICS), FakeRun("b", None)])
    assert list(table.columns) == ["a", "b"]
    assert table.loc["Dataset", "a"] == "nih-cxr4" and table.loc["Classes", "b"] == "Normal, Pneumonia"
    assert table.loc["Test films", "a"] == "8" and table.loc["Preset", "a"] == "paper"
    assert table.loc["Overall accuracy", "a"] == "87.5% (95% CI 50.0%–98.0%)"
    assert table.loc["Macro-F1", "a"] == "87.3%" and table.loc["Overall accuracy", "b"] == "—"
    assert table.loc["ECE test (after calibration)", "a"] == "0.060"
    assert table.loc["Epochs run", "a"] == "3"


def test_compare_warns_when_the_runs_were_tested_on_different_data():
    paediatric = FakeRun("p", {**METRICS, "n": 120}, data_report={"root": "/data/pediatric-pneumonia"})
    four_class = FakeRun("f", {**METRICS, "n": 4, "classes": ["Normal", "Pneumonia", "Cardiomegaly"]})
    warning = tables.compare_warning([paediatric, four_class])
    assert "tested on different data" in warning
    assert all(part in warning for part in ("dataset folders", "classes", "numbers of test films"))
    assert tables.compare_warning([FakeRun("a", METRICS), FakeRun("b", METRICS)]) is None


def test_a_class_without_films_reads_no_films_never_zero_percent():
    per_class = {**PER_CLASS, "Cardiomegaly": {"tp": 0, "fp": 0, "fn": 0, "tn": 8, "support": 0,
                                               "precision": None, "recall": None, "f1": None,
                                               "ovr_accuracy": 1.0, "roc_auc": None}}
    external = {**METRICS, "per_class": per_class, "macro": {"f1": 0.873, "classes": ["Normal", "Pneumonia"]}}
    table = tables.external_vs_internal(METRICS, external)
    assert table.loc["Recall Cardiomegaly", "External"] == "—, no films"
    assert table.loc["Macro averages over", "External"] == "Normal, Pneumonia"
    figures_table = tables.per_class_table(external)
    assert figures_table.loc["Cardiomegaly"].tolist() == ["—, no films"] * 3 + ["1.000", "—, no films"]


def test_external_vs_internal_adds_recall_per_class():
    table = tables.external_vs_internal(METRICS, {**METRICS, "n": 20, "per_class": {"Normal": {"recall": 0.5}}})
    assert table.loc["Recall Normal", "Internal test"] == "75.0%"
    assert table.loc["Recall Normal", "External"] == "50.0%"
    assert table.loc["Recall Pneumonia", "Internal test"] == "100.0%"  # Only the internal set has it.


def test_distribution_table_is_the_papers_table_1_with_totals():
    report = {"subsets": {"train": {"Normal": 6, "Pneumonia": 4}, "test": {"Normal": 2}, "val": {"Normal": 1}}}
    table = tables.distribution_table(report)
    assert list(table.columns) == ["train", "val", "test", "Total"]
    assert table.loc["Total", "Total"] == 13 and table.loc["Pneumonia", "test"] == 0
    assert list(tables.distribution_table({"class_counts": {"Normal": 5}})["Total"]) == [5]
    assert tables.distribution_table(None).empty


def test_counts_and_per_class_tables():
    counts = tables.counts_table(METRICS)
    assert counts.loc["Normal"].tolist() == [3, 0, 1, 4, 4]
    per_class = tables.per_class_table(METRICS)
    assert per_class.loc["Normal", "ROC AUC"] == "0.900" and per_class.loc["Pneumonia", "ROC AUC"] == "—"
    assert per_class.columns.tolist() == ["Precision", "Recall", "F1", "One-vs-rest accuracy", "ROC AUC"]


def test_calibration_table_or_none():
    table = tables.calibration_table(METRICS)
    assert table["Value"].tolist() == ["1.250", "0.100", "0.050", "0.120", "0.060"]
    assert tables.calibration_table({}) is None


def test_near_duplicate_table():
    table = tables.near_duplicate_table([{"file": "x.jpg", "seen_file": "Normal/a.png", "distance": 3}])
    assert table.to_dict("records") == [{"Evaluated film": "x.jpg", "Training/validation film": "Normal/a.png",
                                         "Hamming distance": 3}]


def test_mixups_names_defaults_and_counts():
    wrong = [{"label": "Normal", "predicted": "Pneumonia"}, {"label": "Normal", "predicted": "Pneumonia"},
             {"label": "Pneumonia", "predicted": "Cardiomegaly"}]
    assert tables.mixup_name(wrong[0]) == "Normal → Pneumonia"
    options = sorted({tables.mixup_name(row) for row in wrong})
    assert tables.default_mixups(options, ["Normal", "Pneumonia"]) == ["Normal → Pneumonia"]
    assert tables.default_mixups(options, ["Normal", "Cardiomegaly"]) == options
    assert tables.mixup_counts(wrong)["Films"].tolist() == [2, 1]


def test_cam_region_tables():
    regions = {"summary": {"correct": {"n": 5, "mean_central": 0.6, "mean_border": 0.3, "mean_corners": 0.1},
                           "wrong": {"n": 1, "mean_central": 0.2, "mean_border": 0.75, "mean_corners": 0.2}},
               "uniform": {"central": 0.4, "border": 0.5, "corners": 0.1}}
    table = tables.cam_region_table(regions)
    assert table[""].tolist() == ["Right answers", "Wrong answers", "Uniform map (area shares)"]
    assert table["Border band"].tolist() == ["30.0%", "75.0%", "50.0%"]
    flagged = tables.flagged_films_table([{"file": "a.png", "label": "Normal", "predicted": "Pneumonia",
                                           "border": 0.8, "corners": 0.3}])
    assert flagged.iloc[0].tolist() == ["a.png", "Normal", "Pneumonia", "80.0%", "30.0%"]


def test_fixed():
    assert tables.fixed(0.12345) == "0.123" and tables.fixed(None) == "—"


def test_conformal_table_gives_all_films_then_each_class():
    section = {"level": 0.9, "method": "lac", "n": 8, "coverage": 0.875, "mean_set_size": 1.25,
               "per_class": {"Normal": {"n": 4, "coverage": 1.0, "mean_set_size": 1.5},
                             "Pneumonia": {"n": 0, "coverage": None, "mean_set_size": None}}}
    table = tables.conformal_table(section)
    assert list(table.columns) == ["Films", "n", "Coverage", "Mean set size"]
    assert list(table["Films"]) == ["All test films", "Normal", "Pneumonia"]
    assert list(table["Coverage"]) == ["87.5%", "100.0%", "—"]
    assert list(table["Mean set size"]) == ["1.25", "1.50", "—"]
    assert tables.conformal_table(None) is None
