"""Evaluation: how good the chosen run is on its held-out test films, and on an external folder."""

import streamlit as st

from core import ui

run = ui.require_run(ui.page_frame("Evaluation"))
run_path = str(run.path)
metrics = run.metrics

st.title("📊 Evaluation")
st.caption(f"{run.describe()} · {ui.DISCLAIMER}")
if not metrics or "confusion_matrix" not in metrics:
    st.error(f"{run.path / 'metrics.json'} is missing or unreadable; re-evaluate the run with "
             "`python -m core evaluate --model RUN_DIR --data DIR`.")
    st.stop()

st.subheader("Headline numbers")
ui.show_headline_metrics(metrics)
with st.expander("Overall accuracy vs mean one-vs-rest accuracy", expanded=False):
    st.markdown(
        "**Overall accuracy** is the share of films given the right class. **Mean one-vs-rest accuracy** "
        "asks, for each class separately, 'is it this class or not?', and averages those four yes/no "
        "accuracies. Every film that is correctly *not* a class counts as a success for that class, so the "
        "mean one-vs-rest figure is always at least the overall accuracy. " + ui.PAPER_NOTE
    )

st.subheader("Dataset (the paper's Table 1)")
st.dataframe(ui.distribution_table(run.data_report))

st.subheader("Training curves")
history = ui.load_history(run_path)
if history.empty:
    st.info("This run has no history.csv.")
else:
    best_epoch = (metrics.get("training") or {}).get("best_epoch")
    for column, figure in zip(st.columns(2), ui.training_curves(history, best_epoch)):
        column.plotly_chart(figure)

st.subheader("Confusion matrix (rows: true class)")
for column, figure in zip(st.columns(2), ui.confusion_figures(metrics)):
    column.plotly_chart(figure)

st.subheader("Per class")
left, right = st.columns(2)
left.markdown("TP / FP / FN / TN")
left.dataframe(ui.counts_table(metrics))
right.markdown("Precision, recall, F1, one-vs-rest accuracy, ROC AUC")
right.dataframe(ui.per_class_table(metrics).style.format("{:.3f}", na_rep="—"))
st.plotly_chart(ui.per_class_chart(metrics))

st.subheader("ROC curves (one class vs the rest, test films)")
try:
    roc = ui.roc_figure(ui.load_predictions(run_path, tuple(run.classes)), run.classes)
except ValueError as error:
    st.error(str(error))
    roc = None
if roc is None:
    st.info("No test predictions to draw ROC curves from.")
else:
    st.plotly_chart(roc)

st.subheader("Calibration")
calibration = ui.calibration_table(metrics)
if calibration is None:
    st.info("This run recorded no calibration.")
else:
    st.dataframe(calibration, hide_index=True)
    st.caption("Temperature scaling is fitted on the validation split; ECE = expected calibration error "
               "(lower is better). Predict shows temperature-calibrated probabilities when T ≠ 1.")

st.subheader("Compare with another run")
others = [other for other in ui.available_runs() if other.path != run.path]
if not others:
    st.info("Only one run exists. Train another on the Training page to compare.")
else:
    by_path = {str(other.path): other for other in others}
    other_path = st.selectbox("Second run", list(by_path), format_func=lambda p: by_path[p].describe(),
                              key="compare_run")
    st.dataframe(ui.compare_table([run, by_path[other_path]]))

st.download_button("Download metrics.json", ui.bytes_of_json(run.path / "metrics.json"),
                   file_name=f"{run.run_id}-metrics.json", mime="application/json")

with st.expander("External validation"):
    st.markdown("Evaluate this run on another dataset folder (class folders named after the model's classes).")
    default_folder = str(ui.default_data_root())
    folder = st.text_input("Dataset folder", value=default_folder, key="external_folder")
    if st.button("Evaluate on this folder", key="external_go"):
        from core.evaluate import evaluate_folder

        try:
            with st.spinner("Evaluating every film in the folder…"):
                st.session_state.external_metrics = evaluate_folder(run, ui.confined_data_folder(folder))
        except ValueError as error:
            st.error(str(error))
    external = st.session_state.get("external_metrics")
    if external and external.get("run_id") == run.run_id:
        overlap = external.get("overlap") or {}
        if overlap.get("identical_files") or overlap.get("shared_patients"):
            st.warning(
                f"{overlap.get('identical_files', 0)} films are identical to training/validation films and "
                f"{overlap.get('shared_patients', 0)} share a patient with them: this is not an independent "
                f"test. Examples: {', '.join(overlap.get('examples', [])[:5])}"
            )
        st.caption(f"Folder: `{external['data_dir']}` · {len(external.get('skipped', []))} files skipped")
        st.dataframe(ui.external_vs_internal(metrics, external))
        left, right = st.columns(2)
        for column, figures, title in ((left, ui.confusion_figures(metrics), "Internal test"),
                                       (right, ui.confusion_figures(external), "External folder")):
            figures[1].update_layout(title=f"{title}: row percentages")
            column.plotly_chart(figures[1], key=f"confusion-{title}")
