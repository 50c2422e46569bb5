"""Sections the pages draw: headline cards, the Evaluation page's export and external-validation sections,
the Training page's folder check, recipe form and job panel (core.ui.mixups holds the Review page's,
core.ui.predict_panel the Predict page's).

Each function draws with Streamlit and returns only what the page needs next (a widget value, a scan
report); figures come from core.ui.figures, tables from core.ui.tables, cached work from core.ui.cached.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from core.data.paths import confined_data_folder, dataset_folders
from core.evaluation.evaluate import evaluate_folder, load_external_result, save_external_result
from core.evaluation.calibration import ECE_DEFINITION
from core.evaluation.conformal import calibration_of
from core.evaluation.summary import headline_figures, macro_note, overlap_warning, perceptual_check_note, percent
from core.serving import export
from core.ui import cached, figures, tables



def show_headline_metrics(metrics: dict | None) -> None:
    """The three headline figures as st.metric cards (short names, which a card never cuts off; what the
    longer name adds is said underneath), with their 95% intervals underneath."""
    for column, item in zip(st.columns(3), headline_figures(metrics)):
        column.metric(item["short_name"], percent(item["value"]), help=item["help"])
        more = item["name"][len(item["short_name"]):].strip(" ()")
        if more:
            column.caption(more[0].upper() + more[1:] + ".")
        if item["ci95"]:
            column.caption(f"95% CI {item['ci95'][0]:.1%}–{item['ci95'][1]:.1%} (bootstrap)")
        elif item["value"] is not None:
            column.caption("No interval recorded for this figure.")
    n = (metrics or {}).get("n")
    if n:
        st.caption(f"On {n} held-out test films.")
    note = macro_note(metrics)
    if note:
        st.caption(note)


def bytes_of_file(path: Path, missing: bytes = b"") -> bytes:
    """The bytes of a file for a download button (`missing` when it cannot be read)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return missing


def file_size_text(path: Path) -> str:
    """A file's size as '4.5 MB' / '812 kB'."""
    size = Path(path).stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def per_class_section(metrics: dict) -> None:
    """The counts and the per-class figures (each table the page's full width, so no column is cut off),
    the per-class chart, and which classes the macro averages are over."""
    counts_column, figures_column = st.columns([2, 3])
    counts_column.markdown("TP / FP / FN / TN")
    counts_column.dataframe(tables.counts_table(metrics))
    figures_column.markdown("Precision, recall, F1, one-vs-rest accuracy, ROC AUC")
    figures_column.dataframe(tables.per_class_table(metrics))
    note = macro_note(metrics)
    if note:
        st.caption(note)
    st.plotly_chart(figures.per_class_chart(metrics))


def compare_section(run, available: list) -> None:
    """The run beside a second one chosen from `available` (dataset, classes, test films, headline figures,
    recipe), with a warning when they were tested on different data."""
    others = {str(other.path): other for other in available if other.path != run.path}
    if not others:
        st.info("Only one run exists. Train another on the Training page to compare.")
        return
    other_path = st.selectbox("Second run", list(others), format_func=lambda path: others[path].describe(),
                              key="compare_run")
    runs = [run, others[other_path]]
    warning = tables.compare_warning(runs)
    if warning:
        st.warning(warning)
    st.dataframe(tables.compare_table(runs))


def calibration_section(run, metrics: dict) -> None:
    """The calibration table and the validation and test reliability diagrams."""
    calibration = tables.calibration_table(metrics)
    if calibration is None:
        st.info("This run recorded no calibration.")
        return
    table_column, *diagram_columns = st.columns([1, 1.5, 1.5])
    table_column.dataframe(calibration, hide_index=True)
    table_column.caption("Temperature scaling is fitted on the validation split; ECE = expected calibration "
                         f"error (lower is better) of the {ECE_DEFINITION}, the same in this table, the diagrams "
                         "and the model card. Predict shows temperature-calibrated probabilities when T ≠ 1.")
    temperature = float((metrics.get("calibration") or {}).get("temperature") or 1.0)
    rows = cached.load_predictions(str(run.path), tuple(run.classes))
    for column, (subset, figure) in zip(diagram_columns,
                                        figures.reliability_figures(rows, run.classes, temperature).items()):
        if figure is None:
            column.info(f"No {subset} predictions to draw a reliability diagram from.")
        else:
            column.plotly_chart(figure, key=f"reliability-{subset}")


NO_SETS_NOTE = "This run has no prediction sets (trained before they existed)."
SET_METHOD_WORDS = {"lac": "LAC, least ambiguous set-valued classifier",
                    "aps": "APS, adaptive prediction sets"}
"""How the Evaluation page names each core.evaluation.conformal.METHODS score."""


def roc_section(run) -> None:
    """One-vs-rest ROC curves of the run's test films (predictions.csv), or why there are none."""
    try:
        roc = figures.roc_figure(cached.load_predictions(str(run.path), tuple(run.classes)), run.classes)
    except ValueError as error:  # A damaged predictions.csv: said, and the rest of the page still shown.
        st.error(str(error))
        return
    if roc is None:
        st.info("No test predictions to draw ROC curves from.")
    else:
        st.plotly_chart(roc)


def conformal_section(run, metrics: dict) -> None:
    """The run's split-conformal prediction sets: level and method, coverage and mean set size on the test
    split overall and per class, and the risk-coverage curve (stored with the section, else computed from
    predictions.csv); one line for a run without sets."""
    section = metrics.get("conformal")
    calibration = calibration_of(metrics)
    if calibration is None:
        st.caption(NO_SETS_NOTE if section is None else
                   f"{run.path / 'metrics.json'} has an unusable conformal section; re-evaluate the run to get "
                   "its prediction sets.")
        return
    st.markdown(f"**{calibration.level:.0%} sets** ({SET_METHOD_WORDS.get(calibration.method, calibration.method)}"
                f"), calibrated on {calibration.n_calibration} validation films. A set of more than one class "
                "is the model saying it cannot tell those classes apart; the sets promise the level over all "
                "films, not for each class.")
    table = tables.conformal_table(section)
    table_column, curve_column = st.columns([2, 3])
    table_column.dataframe(table, hide_index=True)
    curve = section.get("risk_coverage")
    if not curve:
        try:
            curve = cached.risk_coverage_curve(str(run.path), tuple(run.classes))
        except ValueError as error:
            curve_column.error(str(error))
            return
    figure = figures.risk_coverage_figure(curve, calibration.level)
    if figure is None:
        curve_column.info("No test predictions to draw the risk-coverage curve from.")
    else:
        curve_column.plotly_chart(figure, key="risk-coverage")


def export_section(run) -> None:
    """Choose a TensorFlow Lite variant, build it once (child process), show its parity and offer it."""
    run_path = str(run.path)
    st.caption("The exported model takes the same raw films (1, S, S, 1) in 0..255 and returns the probabilities. "
               "float16 is about half the size and keeps the model's answers (its small layers stay float32); "
               "dynamic-range int8 is a quarter of the size but changes answers; float32 is exact. Built once per "
               "variant in a separate process, checked against the Keras model on the run's films, and kept in "
               "the run's exports/ folder.")
    variant_column, action_column = st.columns([1, 2])
    variant = variant_column.selectbox("Variant", export.VARIANTS, key="export_variant")
    export_file = export.export_path(run_path, variant)
    build_slot = action_column.empty()  # The build button goes once the export exists, in this run too.
    if not export_file.is_file() and build_slot.button(f"Build {variant} export", key="export_go"):
        try:
            with st.spinner(f"Converting the model to TensorFlow Lite ({variant})…"):
                export.build_export(run_path, variant)
        except RuntimeError as error:
            st.error(str(error))
    if not export_file.is_file():
        return
    build_slot.empty()
    action_column.metric(f"{variant} .tflite size", file_size_text(export_file))
    report = export.read_export_parity(run_path, variant)
    if report is None:
        action_column.caption("Parity with the Keras model was not checked (the run's films were not reachable).")
    else:
        text = (f"Checked against the Keras model on {report['n']} of the run's films: top-1 agreement "
                f"{report['top1_agreement']:.1%}, largest probability difference "
                f"{report['max_abs_difference']:.3f} (bar: at least {export.PARITY_MIN_TOP1:.0%} and at most "
                f"{export.PARITY_MAX_DIFFERENCE}), {report['latency_ms_per_film']:.1f} ms per film on this server.")
        if report.get("meets_bar"):
            action_column.success(text)
        else:
            action_column.warning(text + " Below the bar: this export's answers differ from the model's.")
    action_column.download_button(f"Download {variant} .tflite", export_file.read_bytes(),
                                  file_name=f"{run.run_id}-{variant}.tflite", mime="application/octet-stream",
                                  key="export_download")


def folder_picker(data_root: Path, key: str, help: str) -> str:
    """The dataset folders under the data root as a choice, and a path one may type instead; returns the typed
    path, else the chosen folder, else ""."""
    folders = dataset_folders(data_root)
    left, right = st.columns(2)
    picked = left.selectbox(f"Folders under {data_root}", folders or ["(none)"], key=f"{key}_pick",
                            format_func=lambda path: Path(path).name, disabled=not folders)
    typed = right.text_input("…or type a folder path", key=f"{key}_typed", help=help)
    return typed.strip() or (picked if folders else "")


def external_validation_section(run, metrics: dict, data_root: Path) -> None:
    """Evaluate the run on a dataset folder (confined to the data roots), compare with its test set, and keep
    the result with the run, so the last one is shown again in a later session."""
    st.markdown("Evaluate this run on another dataset folder (class folders named after the model's classes: "
                f"{', '.join(run.classes)}).")
    folder = folder_picker(data_root, "external_folder", help="Class folders named after the model's classes.")
    if st.button("Evaluate on this folder", key="external_go", disabled=not folder):
        try:
            with st.spinner("Evaluating every film in the folder…"):
                result = evaluate_folder(run, confined_data_folder(folder))
        except ValueError as error:
            st.error(str(error))
        else:
            try:
                save_external_result(run.path, result)
            except OSError as error:
                st.warning(f"The result is shown but could not be kept with the run: {error}")
    external = load_external_result(run.path)
    if external is None:
        return
    show_external_result(run, metrics, external)


def show_external_result(run, metrics: dict, external: dict) -> None:
    """An external validation: overlap warnings, the skipped files, the figures beside the internal test set's
    (downloadable as JSON and CSV) and both confusion matrices."""
    overlap = external.get("overlap") or {}
    perceptual = overlap.get("perceptual") or {}
    warning = overlap_warning(overlap)
    if warning:
        st.warning(f"{warning} Examples: {', '.join(overlap.get('examples', [])[:5])}")
    if perceptual.get("checked"):
        st.caption(perceptual_check_note(overlap))
        if perceptual.get("matches"):
            st.dataframe(tables.near_duplicate_table(perceptual["matches"]), hide_index=True)
    else:
        st.info(perceptual_check_note(overlap))
    skipped = external.get("skipped") or []
    st.caption(f"Folder: `{external['data_dir']}` · evaluated {external.get('evaluated', '?')} · "
               f"{external.get('n')} films · {len(skipped)} files skipped")
    if skipped:
        with st.expander(f"{len(skipped)} files skipped"):
            st.dataframe(tables.skipped_table(skipped), hide_index=True)
    comparison = tables.external_vs_internal(metrics, external)
    st.dataframe(comparison)
    note = macro_note(external)
    if note:
        st.caption(f"External folder: {note}")
    json_column, csv_column = st.columns(2)
    json_column.download_button("Download the external result (JSON)", json.dumps(external, indent=2),
                                file_name=f"{run.run_id}-external.json", mime="application/json",
                                key="external_json")
    csv_column.download_button("Download the figures (CSV)", comparison.to_csv().encode(),
                               file_name=f"{run.run_id}-external-figures.csv", mime="text/csv", key="external_csv")
    for column, matrices, title in zip(st.columns(2), (figures.confusion_figures(metrics),
                                                       figures.confusion_figures(external)),
                                       ("Internal test", "External folder")):
        matrices[1].update_layout(title=f"{title}: row percentages")
        column.plotly_chart(matrices[1], key=f"confusion-{title}")
