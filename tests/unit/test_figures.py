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


def test_confusion_figures_say_no_films_for_a_class_without_films():
    _, percent = figures.confusion_figures({**METRICS, "confusion_matrix": [[0, 0], [1, 1]]})
    assert all(value != value for value in percent.data[0].z.tolist()[0])  # NaN: a blank cell, not 0%.
    assert percent.data[0].text.tolist() == [["—, no films", "—, no films"], ["50.0%", "50.0%"]]


def test_per_class_chart_draws_no_recall_bar_for_a_class_without_films():
    metrics = {**METRICS, "per_class": {**METRICS["per_class"],
                                        "Cardiomegaly": {"precision": 0.0, "recall": None, "f1": None,
                                                         "ovr_accuracy": 0.9, "support": 0}}}
    chart = figures.per_class_chart(metrics)
    recall = next(trace for trace in chart.data if trace.name == "Recall")
    assert list(recall.y) == [0.75, 0.75, None] and recall.x[2] == "Cardiomegaly<br>(no films)"


def test_reliability_diagrams_use_the_one_ece_of_the_calibration_table():
    from core.evaluation.calibration import ECE_BINS, expected_calibration_error

    test_rows = rows()
    diagram = figures.reliability_figures(test_rows, CLASSES, temperature=1.0)["test"]
    y_true = [CLASSES.index(row["label"]) for row in test_rows]
    y_score = [[row["probabilities"][name] for name in CLASSES] for row in test_rows]
    ece = expected_calibration_error(y_true, y_score)  # What metrics.json and the card record.
    assert f"(ECE {ece:.3f})" in diagram.data[1].name
    assert ECE_BINS == 15


def test_curves_have_whole_epoch_ticks_ending_at_the_last_epoch():
    accuracy, _ = figures.training_curves({"epoch": [1, 2, 3, 4, 5], "accuracy": [0.1] * 5}, best_epoch=5)
    assert list(accuracy.layout.xaxis.range) == [0.5, 5.5] and accuracy.layout.xaxis.dtick == 1
    live_loss, _ = figures.live_curves([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.9}])
    assert live_loss.layout.xaxis.dtick == 1 and live_loss.layout.xaxis.tick0 == 1


def test_mode_bars_stand_beside_the_titles_and_bar_labels_stay_horizontal():
    chart = figures.probability_chart({"Normal": 0.97, "Pneumonia": 0.02, "Cardiomegaly": 0.01})
    assert chart.data[0].textangle == 0 and chart.layout.modebar.orientation == "v"
    for figure in (*figures.training_curves({"epoch": [1]}, None), *figures.confusion_figures(METRICS),
                   figures.per_class_chart(METRICS), figures.roc_figure(rows(), CLASSES),
                   figures.confidence_histogram(rows())):
        assert figure.layout.modebar.orientation == "v"


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


def test_risk_coverage_figure_draws_the_answered_points_and_the_answer_everything_line():
    from core.evaluation.conformal import risk_coverage

    probabilities = [[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]]
    curve = risk_coverage(probabilities, [0, 1, 0], points=5)
    figure = figures.risk_coverage_figure(curve, level=0.9)
    line = figure.data[0]
    # The point at coverage 0 answers no film and has no accuracy: it is not drawn.
    assert len(line.x) == len(curve) - 1 and line.x[0] > 0 and line.x[-1] == 1.0
    assert line.y[0] == 1.0 and line.y[-1] == pytest.approx(2 / 3, abs=1e-3)
    assert figure.layout.shapes[0].y0 == pytest.approx(2 / 3, abs=1e-3)
    assert "(sets at 90%)" in figure.layout.title.text
    assert figures.risk_coverage_figure([]) is None
    assert figures.risk_coverage_figure([{"coverage": 0.0, "accuracy": None, "threshold": None}]) is None
