"""Evaluation: how good the chosen run is on its held-out test films, and on an external folder."""

import streamlit as st

from core.settings import default_data_root
from core.ui import cached, explain_panel, figures, frame, navigation, panels, tables

navigation.require_shell()
run = frame.require_run()
metrics = run.metrics

st.title("📊 Evaluation")
st.caption(f"{run.describe()} · {frame.DISCLAIMER}")
if not metrics or "confusion_matrix" not in metrics:
    st.error(f"{run.path / 'metrics.json'} is missing or unreadable; re-evaluate the run with "
             "`python -m core evaluate --model RUN_DIR --data DIR`.")
    st.stop()

st.subheader("Headline numbers")
panels.show_headline_metrics(metrics)
with st.expander("Overall accuracy vs mean one-vs-rest accuracy", expanded=False):
    st.markdown(
        "**Overall accuracy** is the share of films given the right class. **Mean one-vs-rest accuracy** "
        "asks, for each class separately, 'is it this class or not?', and averages those four yes/no "
        "accuracies. Every film that is correctly *not* a class counts as a success for that class, so the "
        "mean one-vs-rest figure is always at least the overall accuracy. " + frame.PAPER_NOTE
    )

st.subheader("Dataset (the paper's Table 1)")
st.dataframe(tables.distribution_table(run.data_report))

st.subheader("Training curves")
try:
    history = cached.load_history(str(run.path))
except ValueError as error:  # A damaged history.csv: said, and the rest of the page still shown.
    st.error(str(error))
    history = None
if history is not None and history.empty:
    st.info("This run has no history.csv.")
elif history is not None:
    best_epoch = (metrics.get("training") or {}).get("best_epoch")
    for column, figure in zip(st.columns(2), figures.training_curves(history, best_epoch)):
        column.plotly_chart(figure)

st.subheader("Confusion matrix (rows: true class)")
for column, figure in zip(st.columns(2), figures.confusion_figures(metrics)):
    column.plotly_chart(figure)

st.subheader("Per class")
panels.per_class_section(metrics)

st.subheader("ROC curves (one class vs the rest, test films)")
panels.roc_section(run)

st.subheader("Calibration")
panels.calibration_section(run, metrics)

st.subheader("Prediction sets")
panels.conformal_section(run, metrics)

st.subheader("Are the heatmaps faithful?")
explain_panel.explain_check_section(run)

st.subheader("Compare with another run")
panels.compare_section(run, frame.available_runs())

st.download_button("Download metrics.json", panels.bytes_of_file(run.path / "metrics.json", missing=b"{}"),
                   file_name=f"{run.run_id}-metrics.json", mime="application/json")

st.subheader("Mobile export (TensorFlow Lite)")
panels.export_section(run)

with st.expander("External validation"):
    panels.external_validation_section(run, metrics, default_data_root())
