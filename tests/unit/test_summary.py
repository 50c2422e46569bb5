"""Tests for core.evaluation.summary: one wording of the headline figures and the overlap warnings."""

from __future__ import annotations

from core.evaluation.summary import (
    headline_figures,
    headline_markdown,
    headline_text,
    overlap_warning,
    perceptual_check_note,
)

METRICS = {"n": 40, "accuracy": 0.9, "macro": {"f1": 0.85}, "mean_ovr_accuracy": 0.95,
           "ci95": {"accuracy": [0.8, 0.975], "macro_f1": [0.7, 0.95]}}


def test_the_three_figures_are_named_for_what_they_are():
    figures = headline_figures(METRICS)
    assert [figure["name"] for figure in figures] == [
        "Overall accuracy", "Macro-F1", "Mean one-vs-rest accuracy (the paper's 'accuracy' figure)"]
    assert [figure["ci95"] for figure in figures] == [[0.8, 0.975], [0.7, 0.95], None]
    assert [figure["value"] for figure in headline_figures({})] == [None, None, None]


def test_the_card_and_the_command_line_share_the_names():
    assert headline_markdown(METRICS) == [
        "- Overall accuracy: 90.0% (95% CI 80.0%–97.5%)",
        "- Macro-F1: 85.0% (95% CI 70.0%–95.0%)",
        "- Mean one-vs-rest accuracy (the paper's 'accuracy' figure): 95.0%",
    ]
    assert headline_text(METRICS) == [
        "overall accuracy 0.9000 (95% CI 0.8000-0.9750)",
        "macro-F1 0.8500 (95% CI 0.7000-0.9500)",
        "mean one-vs-rest accuracy (the paper's 'accuracy' figure) 0.9500",
    ]


def test_overlap_warning_only_when_something_overlaps():
    assert overlap_warning({"checked": True, "identical_files": 0, "shared_patients": 0, "near_duplicates": 0}) is None
    warning = overlap_warning({"identical_files": 2, "shared_patients": 1, "near_duplicates": 3})
    assert warning.startswith("2 films are identical to training/validation films, 3 are resized")
    assert "1 share a patient" in warning and "optimistic" in warning


def test_perceptual_note_says_what_was_compared_or_why_not():
    checked = {"perceptual": {"checked": True, "near_duplicates": 6, "seen_films": 50, "threshold": 32, "bits": 256}}
    assert perceptual_check_note(checked).startswith("Perceptual check: 6 near-duplicates among the run's 50")
    missing = {"perceptual": {"checked": False, "reason": "the run has no split.csv"}}
    assert perceptual_check_note(missing) == ("The perceptual check (resized or re-encoded copies) could not be "
                                              "run: the run has no split.csv.")
