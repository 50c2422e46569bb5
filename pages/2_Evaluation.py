"""Evaluation: how good the chosen run is on its held-out test films, and on an external folder."""

import streamlit as st

from core import ui
from core.evaluation.summary import overlap_warning, perceptual_check_note
from core.runs.artifacts import METRICS_FILE_NAME

run = ui.require_run(ui.page_frame("Evaluation"))
run_path = str(run.path)
metrics = run.metrics

st.title("📊 Evaluation")
st.caption(f"{run.describe()} · {ui.DISCLAIMER}")
if not metrics or "confusion_matrix" not in metrics:
    st.error(f"{run.path / METRICS_FILE_NAME} is missing or unreadable; re-evaluate the run with "
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
    table_column, *diagram_columns = st.columns([1, 1.5, 1.5])
    table_column.dataframe(calibration, hide_index=True)
    table_column.caption("Temperature scaling is fitted on the validation split; ECE = expected calibration "
                         "error (lower is better). Predict shows temperature-calibrated probabilities when T ≠ 1.")
    temperature = float((metrics.get("calibration") or {}).get("temperature") or 1.0)
    diagrams = ui.reliability_figures(ui.load_predictions(run_path, tuple(run.classes)), run.classes, temperature)
    for column, (subset, figure) in zip(diagram_columns, diagrams.items()):
        if figure is None:
            column.info(f"No {subset} predictions to draw a reliability diagram from.")
        else:
            column.plotly_chart(figure, key=f"reliability-{subset}")

st.subheader("Compare with another run")
others = [other for other in ui.available_runs() if other.path != run.path]
if not others:
    st.info("Only one run exists. Train another on the Training page to compare.")
else:
    by_path = {str(other.path): other for other in others}
    other_path = st.selectbox("Second run", list(by_path), format_func=lambda p: by_path[p].describe(),
                              key="compare_run")
    st.dataframe(ui.compare_table([run, by_path[other_path]]))

st.download_button(f"Download {METRICS_FILE_NAME}", ui.bytes_of_json(run.path / METRICS_FILE_NAME),
                   file_name=f"{run.run_id}-metrics.json", mime="application/json")

st.subheader("Mobile export (TensorFlow Lite)")
st.caption("The exported model takes the same raw films (1, S, S, 1) in 0..255 and returns the probabilities. "
           "float16 is about half the size and keeps the model's answers (its small layers stay float32); "
           "dynamic-range int8 is a quarter of the size but changes answers; float32 is exact. Built once per "
           "variant in a separate process, checked against the Keras model on the run's films, and kept in "
           "the run's exports/ folder.")
variant_column, action_column = st.columns([1, 2])
variant = variant_column.selectbox("Variant", ui.EXPORT_VARIANTS, key="export_variant")
export_file = ui.export_path(run_path, variant)
if not export_file.is_file() and action_column.button(f"Build {variant} export", key="export_go"):
    try:
        with st.spinner(f"Converting the model to TensorFlow Lite ({variant})…"):
            ui.build_export(run_path, variant)
    except RuntimeError as error:
        st.error(str(error))
if export_file.is_file():
    action_column.metric(f"{variant} .tflite size", ui.file_size_text(export_file))
    parity = ui.export_parity_text(run_path, variant)
    if parity is None:
        action_column.caption("Parity with the Keras model was not checked (the run's films were not reachable).")
    elif parity[1]:
        action_column.success(parity[0])
    else:
        action_column.warning(parity[0] + " Below the bar: this export's answers differ from the model's.")
    action_column.download_button(f"Download {variant} .tflite", export_file.read_bytes(),
                                  file_name=f"{run.run_id}-{variant}.tflite", mime="application/octet-stream",
                                  key="export_download")

with st.expander("External validation"):
    st.markdown("Evaluate this run on another dataset folder (class folders named after the model's classes).")
    default_folder = str(ui.default_data_root())
    folder = st.text_input("Dataset folder", value=default_folder, key="external_folder")
    if st.button("Evaluate on this folder", key="external_go"):
        from core.evaluation.evaluate import evaluate_folder

        try:
            with st.spinner("Evaluating every film in the folder…"):
                st.session_state.external_metrics = evaluate_folder(run, ui.confined_data_folder(folder))
        except ValueError as error:
            st.error(str(error))
    external = st.session_state.get("external_metrics")
    if external and external.get("run_id") == run.run_id:
        overlap = external.get("overlap") or {}
        perceptual = overlap.get("perceptual") or {}
        warning = overlap_warning(overlap)
        if warning:
            st.warning(f"{warning} Examples: {', '.join(overlap.get('examples', [])[:5])}")
        if perceptual.get("checked"):
            st.caption(perceptual_check_note(overlap))
            if perceptual.get("matches"):
                st.dataframe(ui.near_duplicate_table(perceptual["matches"]), hide_index=True)
        else:
            st.info(perceptual_check_note(overlap))
        st.caption(f"Folder: `{external['data_dir']}` · {len(external.get('skipped', []))} files skipped")
        st.dataframe(ui.external_vs_internal(metrics, external))
        left, right = st.columns(2)
        for column, figures, title in ((left, ui.confusion_figures(metrics), "Internal test"),
                                       (right, ui.confusion_figures(external), "External folder")):
            figures[1].update_layout(title=f"{title}: row percentages")
            column.plotly_chart(figures[1], key=f"confusion-{title}")
