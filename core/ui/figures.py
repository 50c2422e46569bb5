"""Plotly figures of the app, pure: data in (metrics.json dicts, predictions.csv rows, history), figure out.

Nothing here draws, reads files or touches Streamlit, so each builder is tested on its own. plotly is
imported inside the builders, so importing this module stays light.
"""

from __future__ import annotations

import numpy as np

from core.evaluation.calibration import ECE_BINS, reliability_before_after
from core.evaluation.metrics import roc_curves
from core.evaluation.summary import NO_FILMS

# Every figure keeps plotly's mode bar upright in its right margin (lying across the top it covered the
# titles), and legends lie below the plot, where the mode bar cannot cover them.
MODEBAR = dict(orientation="v")
LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.28, x=0)
RIGHT_MARGIN = 40
PALETTE = {"train": "#2a9d8f", "val": "#e76f51", "right": "#2a9d8f", "wrong": "#e76f51"}
# The clinical bar drawn on the per-class chart when metrics.json does not record its own.
CLINICAL_BAR = 0.90


def probability_chart(probabilities: dict[str, float], height: int = 220):
    """A horizontal bar chart of class probabilities, first class on top."""
    import plotly.graph_objects as go

    names = list(probabilities)[::-1]
    values = [probabilities[name] for name in names]
    # Labels stay horizontal: inside a long bar, just right of a short one (plotly rotated those that did not fit).
    figure = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color=PALETTE["right"],
                              text=[f"{value:.1%}" for value in values], textangle=0, cliponaxis=False,
                              textposition=["inside" if value >= 0.2 else "outside" for value in values],
                              insidetextanchor="end", constraintext="none"))
    figure.update_layout(height=height, margin=dict(l=10, r=RIGHT_MARGIN, t=10, b=10), modebar=MODEBAR,
                         xaxis=dict(range=[0, 1], tickformat=".0%", title="Probability"))
    return figure


def training_curves(history, best_epoch: int | None):
    """Two figures (accuracy, loss): train vs validation per epoch, the best epoch marked.

    history: history.csv as a DataFrame, or any mapping of column name -> values ("epoch", "accuracy",
    "val_accuracy", "loss", "val_loss"); without an "epoch" column the figures are empty.
    """
    import plotly.graph_objects as go

    epochs = [int(epoch) for epoch in history["epoch"]] if "epoch" in history else []
    # Whole epochs only, from the first to the last one run (autorange ran past the last, to 6 for 5 epochs,
    # and a running job's first epochs got ticks at 1.5).
    xaxis = dict(title="Epoch", tick0=1, dtick=max(1, -(-len(epochs) // 10)),
                 range=[min(epochs) - 0.5, max(epochs) + 0.5] if epochs else None)
    figures = []
    for metric, title in (("accuracy", "Accuracy"), ("loss", "Loss")):
        figure = go.Figure()
        if epochs:
            for prefix, subset in (("", "train"), ("val_", "val")):
                if prefix + metric in history:
                    figure.add_trace(go.Scatter(x=list(history["epoch"]), y=list(history[prefix + metric]),
                                                mode="lines+markers",
                                                name="train" if subset == "train" else "validation",
                                                line=dict(color=PALETTE[subset])))
        if best_epoch:
            figure.add_vline(x=best_epoch, line_dash="dash", line_color="#555",
                             annotation_text=f"best epoch {best_epoch}", annotation_position="top left")
        figure.update_layout(title=title, height=340, margin=dict(l=10, r=RIGHT_MARGIN, t=40, b=10), xaxis=xaxis,
                             yaxis_title=title, modebar=MODEBAR, legend=LEGEND_BELOW)
        figures.append(figure)
    return figures


def live_curves(history: list[dict]):
    """Two figures (loss, accuracy) of a running job's finished epochs (progress.json's "history" rows)."""
    rows = history or []
    columns = {key: [row.get(key) for row in rows] for key in dict.fromkeys(key for row in rows for key in row)}
    accuracy, loss = training_curves(columns, None)
    return loss, accuracy


def confusion_figures(metrics: dict):
    """Two heatmaps: counts and row percentages (rows the true class, columns the predicted one)."""
    import plotly.graph_objects as go

    classes = metrics["classes"]
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    # A class with no films has no row percentages (its recall is undefined): blank cells saying so, never 0%.
    percent = np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0) * 100
    percent_text = np.where(rows > 0, np.char.add(np.round(np.nan_to_num(percent), 1).astype(str), "%"), NO_FILMS)
    figures = []
    for values, title, text in ((counts, "Counts", counts.astype(int).astype(str)),
                                (percent, "Row percentages (recall on the diagonal)", percent_text)):
        figure = go.Figure(go.Heatmap(z=values, x=classes, y=classes, colorscale="Teal", text=text,
                                      texttemplate="%{text}",
                                      hovertemplate="true %{y}<br>predicted %{x}: %{text}<extra></extra>"))
        figure.update_layout(title=title, height=380, margin=dict(l=10, r=RIGHT_MARGIN, t=40, b=10), modebar=MODEBAR,
                             xaxis_title="Predicted class", yaxis_title="True class",
                             yaxis=dict(autorange="reversed"))
        figures.append(figure)
    return figures


def per_class_chart(metrics: dict):
    """Grouped bars of precision, recall, F1 and one-vs-rest accuracy per class, with the clinical bar.

    A class without films has no recall or F1 bar (undefined, not 0) and "no films" under its name."""
    import plotly.graph_objects as go

    per_class = metrics["per_class"]
    classes = list(per_class)
    labels = [f"{name}<br>(no films)" if per_class[name].get("support") == 0 else name
              for name in classes]
    figure = go.Figure()
    for key, name in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                      ("ovr_accuracy", "One-vs-rest accuracy")):
        values = [None if per_class[c].get("support") == 0 and key in ("recall", "f1") else per_class[c][key]
                  for c in classes]
        figure.add_trace(go.Bar(name=name, x=labels, y=values))
    threshold = (metrics.get("clinical_bar") or {}).get("threshold", CLINICAL_BAR)
    figure.add_hline(y=threshold, line_dash="dash", line_color="#b00020",
                     annotation_text=f"clinical bar {threshold:.0%}")
    figure.update_layout(barmode="group", height=380, yaxis=dict(range=[0, 1.05], tickformat=".0%"),
                         margin=dict(l=10, r=RIGHT_MARGIN, t=30, b=10), modebar=MODEBAR,
                         legend={**LEGEND_BELOW, "y": -0.18})
    return figure


def _scores(rows: list[dict], classes: list[str]) -> tuple[list[int], list[list[float]]]:
    """(true class indices, probability rows in `classes` order) of predictions.csv rows."""
    return ([classes.index(row["label"]) for row in rows],
            [[row["probabilities"][name] for name in classes] for row in rows])


def roc_figure(rows: list[dict], classes: list[str]):
    """One-vs-rest ROC curves of the test rows of predictions.csv, or None when there are none.

    ValueError (from core.evaluation.metrics) when a row's label is not one of `classes`.
    """
    import plotly.graph_objects as go

    test = [row for row in rows if row.get("subset") == "test"]
    if not test:
        return None
    curves = roc_curves(*_scores(test, classes), classes)
    figure = go.Figure()
    for name, curve in curves.items():
        if curve["fpr"]:
            auc = f"{curve['auc']:.3f}" if curve["auc"] is not None else "n/a"
            figure.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=f"{name} (AUC {auc})"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                line=dict(dash="dot", color="#999")))
    figure.update_layout(height=440, xaxis_title="False positive rate", yaxis_title="True positive rate",
                         margin=dict(l=10, r=RIGHT_MARGIN, t=30, b=10), modebar=MODEBAR, legend=LEGEND_BELOW)
    return figure


def reliability_figures(rows: list[dict], classes: list[str], temperature: float) -> dict:
    """{"validation": figure, "test": figure}: reliability diagrams before/after temperature scaling.

    rows are predictions.csv rows; a subset without rows maps to None. Points are the confidence bins of
    core.evaluation.calibration.reliability_before_after with its ECE_BINS equal-width bins, so the ECE in
    each legend is the one of the calibration table (marker area grows with the bin's films).
    """
    import plotly.graph_objects as go

    figures = {}
    for subset, title in (("val", "validation"), ("test", "test")):
        chosen = [row for row in rows if row.get("subset") == subset]
        if not chosen:
            figures[title] = None
            continue
        curves = reliability_before_after(*_scores(chosen, classes), temperature, n_bins=ECE_BINS)
        figure = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                      line=dict(dash="dot", color="#999")))
        for name, color in (("before", PALETTE["wrong"]), ("after", PALETTE["right"])):
            curve = curves[name]
            points = [(c, a, n) for c, a, n in zip(curve["confidence"], curve["accuracy"], curve["count"]) if n]
            figure.add_trace(go.Scatter(
                x=[c for c, _, _ in points], y=[a for _, a, _ in points], mode="lines+markers",
                name=f"{name} T (ECE {curve['ece']:.3f})", line=dict(color=color),
                marker=dict(size=[6 + 3 * np.sqrt(n) for _, _, n in points]),
                customdata=[n for _, _, n in points],
                hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata} films<extra></extra>"))
        figure.update_layout(title=f"Reliability, {title} ({len(chosen)} films, T = {temperature:.2f})",
                             height=340, margin=dict(l=10, r=RIGHT_MARGIN, t=40, b=10), modebar=MODEBAR,
                             xaxis=dict(title="Mean top-1 confidence", range=[0, 1]),
                             yaxis=dict(title="Accuracy", range=[0, 1.02]),
                             legend=dict(orientation="h", y=-0.25))
        figures[title] = figure
    return figures


def confidence_histogram(rows: list[dict]):
    """Histogram of the confidence of right vs wrong test answers, or None without test rows."""
    import plotly.graph_objects as go

    test = [row for row in rows if row.get("subset") == "test"]
    if not test:
        return None
    figure = go.Figure()
    for outcome, keep in (("right", lambda r: r["label"] == r["predicted"]),
                          ("wrong", lambda r: r["label"] != r["predicted"])):
        figure.add_trace(go.Histogram(x=[r["confidence"] for r in test if keep(r)], name=outcome,
                                      marker_color=PALETTE[outcome], opacity=0.7,
                                      xbins=dict(start=0, end=1, size=0.05)))
    figure.update_layout(barmode="overlay", height=320, xaxis_title="Confidence of the predicted class",
                         yaxis_title="Test films", margin=dict(l=10, r=RIGHT_MARGIN, t=30, b=10), modebar=MODEBAR,
                         legend=LEGEND_BELOW)
    return figure


def faithfulness_curves(report: dict):
    """The deletion and insertion curves of an explain_check.json report side by side: the predicted class's
    mean probability as a share of the cells is replaced (deletion) or put back (insertion), in the map's
    order and in random order. A faithful map's deletion curve falls below random, its insertion curve
    rises above."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("Deletion (lower is better)",
                                                           "Insertion (higher is better)"))
    for column, name in enumerate(("deletion", "insertion"), start=1):
        part = report[name]
        for key, label, colour, dash in (("curve_map", "map order", PALETTE["wrong"], "solid"),
                                         ("curve_random", "random order", "#888888", "dash")):
            figure.add_trace(go.Scatter(x=part["fractions"], y=part[key], name=label, mode="lines+markers",
                                        line=dict(color=colour, dash=dash), legendgroup=label,
                                        showlegend=column == 1), row=1, col=column)
    figure.update_xaxes(title_text="share of the film's cells",
                        range=[0, 1], tickformat=".0%")
    figure.update_yaxes(title_text="probability of the predicted class", range=[0, 1], col=1)
    figure.update_yaxes(range=[0, 1], col=2)
    figure.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), modebar=MODEBAR)
    return figure


def risk_coverage_figure(curve: list[dict], level: float | None = None):
    """Accuracy of the single-label answers against the share of test films answered, as the abstention
    threshold on the top probability moves (core.evaluation.conformal.risk_coverage points); None when no
    point has an accuracy. The hover gives the threshold each point answers down to."""
    import plotly.graph_objects as go

    points = [point for point in curve or [] if point.get("accuracy") is not None]
    if not points:
        return None
    figure = go.Figure(go.Scatter(
        x=[point["coverage"] for point in points], y=[point["accuracy"] for point in points],
        mode="lines+markers", name="answered films", line=dict(color=PALETTE["right"]),
        customdata=[point.get("threshold") for point in points],
        hovertemplate="answers %{x:.0%} of films<br>accuracy %{y:.1%}<br>top probability ≥ %{customdata:.3f}"
                      "<extra></extra>"))
    figure.add_hline(y=points[-1]["accuracy"], line=dict(dash="dot", color="#999"),
                     annotation_text="answering every film", annotation_position="bottom left")
    title = "Risk-coverage: abstaining on the least confident films"
    figure.update_layout(title=title if level is None else f"{title} (sets at {level:.0%})", height=340,
                         margin=dict(l=10, r=RIGHT_MARGIN, t=40, b=10), modebar=MODEBAR,
                         xaxis=dict(title="Share of test films answered (coverage)", range=[0, 1.02],
                                    tickformat=".0%"),
                         yaxis=dict(title="Accuracy of the answers", range=[0, 1.02], tickformat=".0%"))
    return figure
