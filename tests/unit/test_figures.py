"""core.ui.figures: each plotly builder on small hand-made inputs, without a Streamlit runtime."""

from __future__ import annotations

import pytest

from core.ui import figures

CLASSES = ["Normal", "Pneumonia"]
METRICS = {
    "classes": CLASSES, "confusion_matrix": [[3, 1], [0, 4]],
    "per_class": {name: {"precision": 0.8, "recall": 0.75, "f1": 0.77, "ovr_accuracy": 0.9} for name in CLASSES},
}


def rows(subset: str = "test") -> list[dict]:
    """Predictions.csv rows: two right, one wrong."""
    return [{"subset": subset, "label": "Normal", "predicted": "Normal", "confidence": 0.9,
             "probabilities": {"Normal": 0.9, "Pneumonia": 0.1}},
            {"subset": subset, "label": "Pneumonia", "predicted": "Pneumonia", "confidence": 0.7,
             "probabilities": {"Normal": 0.3, "Pneumonia": 0.7}},
            {"subset": subset, "label": "Normal", "predicted": "Pneumonia", "confidence": 0.6,
             "probabilities": {"Normal": 0.4, "Pneumonia": 0.6}}]


def test_probability_chart_lists_the_first_class_on_top():
    figure = figures.probability_chart({"Normal": 0.7, "Pneumonia": 0.3})
    bar = figure.data[0]
    assert list(bar.y) == ["Pneumonia", "Normal"] and list(bar.text) == ["30.0%", "70.0%"]
    assert figure.layout.height == 220


def test_training_curves_take_a_mapping_or_a_frame_and_mark_the_best_epoch():
    import pandas as pd

    history = {"epoch": [1, 2], "accuracy": [0.5, 0.6], "val_accuracy": [0.4, 0.55], "loss": [1.0, 0.8]}
    for source in (history, pd.DataFrame(history)):
        accuracy, loss = figures.training_curves(source, best_epoch=2)
        assert [trace.name for trace in accuracy.data] == ["train", "validation"]
        assert [trace.name for trace in loss.data] == ["train"]  # No val_loss column.
        assert "best epoch 2" in accuracy.layout.annotations[0].text
    empty, _ = figures.training_curves({}, None)
    assert not empty.data


def test_live_curves_are_loss_then_accuracy_of_progress_history_rows():
    loss, accuracy = figures.live_curves([{"epoch": 1, "loss": 1.2, "accuracy": 0.4},
                                          {"epoch": 2, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1}])
    assert loss.layout.title.text == "Loss" and accuracy.layout.title.text == "Accuracy"
    assert list(loss.data[1].y) == [None, 1.1]
    assert figures.live_curves([])[0].data == ()


def test_confusion_figures_give_counts_and_row_percentages():
    counts, percent = figures.confusion_figures(METRICS)
    assert counts.data[0].text.tolist() == [["3", "1"], ["0", "4"]]
    assert percent.data[0].z.tolist() == [[75.0, 25.0], [0.0, 100.0]]


def test_confusion_figures_survive_an_empty_row():
    _, percent = figures.confusion_figures({**METRICS, "confusion_matrix": [[0, 0], [1, 1]]})
    assert percent.data[0].z.tolist()[0] == [0.0, 0.0]


def test_per_class_chart_draws_the_recorded_clinical_bar_or_the_default():
    assert "clinical bar 90%" in figures.per_class_chart(METRICS).layout.annotations[0].text
    chart = figures.per_class_chart({**METRICS, "clinical_bar": {"threshold": 0.8}})
    assert "clinical bar 80%" in chart.layout.annotations[0].text
    assert [trace.name for trace in chart.data] == ["Precision", "Recall", "F1", "One-vs-rest accuracy"]


def test_roc_figure_uses_test_rows_only():
    assert figures.roc_figure(rows("val"), CLASSES) is None
    figure = figures.roc_figure(rows(), CLASSES)
    assert [trace.name.split(" (")[0] for trace in figure.data] == ["Normal", "Pneumonia", "chance"]


def test_roc_figure_refuses_a_label_outside_the_classes():
    with pytest.raises(ValueError):
        figures.roc_figure([{**rows()[0], "label": "Cardiomegaly"}], CLASSES)


def test_reliability_figures_per_subset_with_before_and_after():
    diagrams = figures.reliability_figures(rows(), CLASSES, temperature=1.5)
    assert diagrams["validation"] is None
    test = diagrams["test"]
    assert test.layout.title.text == "Reliability, test (3 films, T = 1.50)"
    assert [trace.name.split(" (")[0] for trace in test.data] == ["perfect calibration", "before T", "after T"]


def test_confidence_histogram_splits_right_and_wrong_answers():
    assert figures.confidence_histogram(rows("val")) is None
    right, wrong = figures.confidence_histogram(rows()).data
    assert list(right.x) == [0.9, 0.7] and list(wrong.x) == [0.6]
