"""Shared Streamlit helpers for the pages: the run selector, cached loaders, figures and formatting.

Pages stay thin views: they read widgets, call one or two functions here or in `core`, and draw. This
module imports Streamlit, pandas and plotly at the top but never TensorFlow: functions that need a model
import `core.serving.predict` / `core.explain.gradcam` inside themselves, so pages that only read metrics open fast.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import streamlit as st

from core.serving.export import EXPORT_FORMAT, PARITY_MAX_DIFFERENCE, PARITY_MIN_TOP1
from core.serving.export import VARIANTS as EXPORT_VARIANTS
from core.runs.registry import Run, list_runs, load_run, read_json
from core.data.paths import confined_data_folder, dataset_folders
from core.settings import PROJECT_ROOT, allowed_data_roots, default_data_root, default_models_dir, keras_home_env

DISCLAIMER = "Research and teaching tool — not for clinical diagnosis."
CLINICAL_BAR = 0.90
# Films and overlays are shown in a page column (300-500 px wide): sent at this longest side, an overlay costs a
# quarter of the work and bytes of a 1024 px one and still looks sharp on a high-density screen.
DISPLAY_MAX_SIDE = 512
CAM_METHOD_LABELS = {"Grad-CAM (fast)": "gradcam", "Grad-CAM++ (tf-keras-vis)": "gradcam++"}
UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom"]
PAPER_NOTE = (
    "The paper reports **99.42% 'accuracy'**: that is the *mean of the four one-vs-rest accuracies*, "
    "which counts every true negative of every class and so always looks higher. The paper's own "
    "confusion matrix gives an **overall accuracy of 98.83%** (1859 of 1881 test films right). Paru "
    "shows both, each under its own name."
)
NO_RUN_GUIDANCE = (
    "No trained model yet in `{models_dir}`. Train one on the **Training** page, or from a terminal with "
    "`python -m core train --data DIR`, then come back here."
)
PALETTE = {"train": "#2a9d8f", "val": "#e76f51", "right": "#2a9d8f", "wrong": "#e76f51"}


# --------------------------------------------------------------------------------------------------
# Page frame and run selector
# --------------------------------------------------------------------------------------------------


def models_dir() -> Path:
    """Where runs live: $PARU_MODELS_DIR, else the project's models/ folder (read on every call)."""
    return default_models_dir()


def available_runs() -> list[Run]:
    """Finished runs, newest first. Not cached: it reads a few small JSON files, and a run that a
    terminal or the Training page just finished must appear at once."""
    return list_runs(models_dir())


# The sidebar menu. Streamlit's own menu (hidden in .streamlit/config.toml: client.showSidebarNavigation)
# would name the home page after its file, "streamlit app"; these links keep the pages/ folder's pages and
# URLs and only choose the labels. Pages not listed here get a label from their file name.
HOME_SCRIPT = "streamlit_app.py"
PAGE_LABELS = {HOME_SCRIPT: ("Home", ":material/home:"), "1_Predict.py": ("Predict", ":material/search:"),
               "2_Evaluation.py": ("Evaluation", ":material/bar_chart:"),
               "3_Review.py": ("Review", ":material/fact_check:"), "4_Training.py": ("Training", ":material/model_training:"),
               "5_Audit.py": ("Audit log", ":material/receipt_long:")}


def navigation_links() -> list[tuple[str, str, str | None]]:
    """(page path for st.page_link, label, icon) of Home and every script in pages/, in Streamlit's order
    (number prefix, then name)."""
    import re

    def order(path: Path):
        number = re.match(r"\d*", path.name).group()
        return (int(number) if number else float("inf"), path.name.lower())

    links = [(HOME_SCRIPT, *PAGE_LABELS[HOME_SCRIPT])]
    pages = PROJECT_ROOT / "pages"
    scripts = sorted((path for path in pages.glob("*.py") if not path.name.startswith((".", "__"))), key=order)
    for path in scripts:
        default = re.sub(r"^\d*[_ -]*", "", path.stem).replace("_", " ").strip() or path.stem
        label, icon = PAGE_LABELS.get(path.name, (default, None))
        links.append((f"pages/{path.name}", label, icon))
    return links


def page_frame(title: str, icon: str = "🫁") -> Run | None:
    """Set up a page: config, the page menu, the disclaimer and the shared run selector in the sidebar.

    Returns the chosen Run, or None when there is no finished run (the sidebar then says what to do).
    The choice lives in st.session_state["run_path"], so every page shows the same run.
    """
    st.set_page_config(page_title=f"{title} · Paru", page_icon=icon, layout="wide")
    runs = available_runs()
    with st.sidebar:
        for page, label, page_icon in navigation_links():
            st.page_link(page, label=label, icon=page_icon)
        st.divider()
        st.caption(f"⚠️ {DISCLAIMER}")
        run = run_selector(runs)
    return run


def run_selector(runs: list[Run]) -> Run | None:
    """The sidebar selectbox of runs; defaults to the newest finished run."""
    if not runs:
        st.session_state.run_path = None
        st.info("No trained model yet.")
        return None
    paths = [str(run.path) for run in runs]
    by_path = {str(run.path): run for run in runs}
    # The widget's own value wins (the user just changed it); after a page switch only run_path is left.
    chosen = st.session_state.get("run_selector") or st.session_state.get("run_path")
    if chosen not in by_path:
        chosen = paths[0]
    # The widget has its own key; run_path is copied from it so that the choice survives page switches
    # (Streamlit forgets a widget's key when a page without that widget runs).
    st.session_state.run_selector = chosen
    chosen = st.selectbox("Model (run)", paths, key="run_selector",
                          format_func=lambda path: by_path[path].describe())
    st.session_state.run_path = chosen
    return by_path[chosen]


def show_no_run_guidance() -> None:
    """What to do when no model exists yet, with a link to the Training page."""
    st.warning(NO_RUN_GUIDANCE.format(models_dir=models_dir()))
    st.page_link("pages/4_Training.py", label="Open the Training page", icon="🏋️")


def require_run(run: Run | None) -> Run:
    """Stop the page with guidance when there is no run."""
    if run is None:
        show_no_run_guidance()
        st.stop()
    return run


# --------------------------------------------------------------------------------------------------
# Cached loaders
# --------------------------------------------------------------------------------------------------


def keep_keras_session_between_reruns() -> None:
    """Stop Streamlit from calling keras.backend.clear_session() after every script run.

    Streamlit (1.x, `script_runner._clean_problem_modules`) clears the Keras session after each rerun of
    every page once Keras is imported. That runs a full garbage collection (about 0.25 s here) and empties
    TensorFlow's kernel cache, so the next prediction of the cached model rebuilds its kernels (about 1 s
    instead of 0.06 s). Paru keeps its models in st.cache_resource and builds none in page code, so the
    clearing buys nothing. The replacement keeps Streamlit's other clean-up (closing pyplot figures).
    Does nothing when Streamlit no longer has that hook.
    """
    import sys

    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:
        return
    original = getattr(script_runner, "_clean_problem_modules", None)
    if original is None or getattr(original, "keeps_keras_session", False):
        return

    def clean_problem_modules_except_keras() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")

    clean_problem_modules_except_keras.keeps_keras_session = True
    script_runner._clean_problem_modules = clean_problem_modules_except_keras


keep_keras_session_between_reruns()


@st.cache_resource(show_spinner="Loading the model…")
def get_predictor(run_path: str):
    """One loaded core.serving.predict.Predictor per run folder (keyed by the path string, never the model).

    Single films run on TensorFlow Lite once a converted copy of the model exists (core.serving.lite); the first
    time a model is used on a machine, the conversion runs in the background and Keras serves meanwhile.
    """
    from core.serving.predict import Predictor

    return Predictor(run_path, engine="background")


@st.cache_data(show_spinner=False)
def load_predictions(run_path: str, classes: tuple[str, ...]) -> list[dict]:
    """predictions.csv rows of a run ([] when the file is missing)."""
    from core.evaluation.evaluate import read_predictions_csv

    path = Path(run_path) / "predictions.csv"
    return read_predictions_csv(path, list(classes)) if path.is_file() else []


@st.cache_data(show_spinner=False)
def load_history(run_path: str):
    """history.csv of a run as a DataFrame (empty when missing)."""
    import pandas as pd

    path = Path(run_path) / "history.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


@st.cache_data(show_spinner="Checking the dataset folder…")
def scan_folder(folder: str) -> dict:
    """core.data.scan.scan_dataset(folder, decode=False) as a report dict, or {"error": message}."""
    from core.data.scan import scan_dataset

    try:
        scan = scan_dataset(confined_data_folder(folder), decode=False)
    except ValueError as error:
        return {"error": str(error)}
    return scan.report()


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def pct(value, digits: int = 1) -> str:
    return f"{value:.{digits}%}" if isinstance(value, (int, float)) else "—"


def pct_with_ci(value, interval) -> str:
    """'93.1% (95% CI 90.2–95.4%)', or just the value when there is no interval."""
    if interval and len(interval) == 2:
        return f"{pct(value)} (95% CI {interval[0]:.1%}–{interval[1]:.1%})"
    return pct(value)


def headline_metrics(metrics: dict | None) -> list[dict]:
    """The three headline figures, each named for what it is, with 95% CIs where the run has them."""
    metrics = metrics or {}
    ci95 = metrics.get("ci95") or {}
    return [
        {"name": "Overall accuracy", "value": metrics.get("accuracy"), "ci95": ci95.get("accuracy"),
         "help": "Share of test films whose predicted class is the true class."},
        {"name": "Macro-F1", "value": (metrics.get("macro") or {}).get("f1"), "ci95": ci95.get("macro_f1"),
         "help": "F1 averaged over classes with equal weight: a weak rare class pulls it down."},
        {"name": "Mean one-vs-rest accuracy (the paper's 'accuracy' figure)",
         "value": metrics.get("mean_ovr_accuracy"), "ci95": None,
         "help": "Mean over classes of (TP + TN) / n. Always at least the overall accuracy."},
    ]


def show_headline_metrics(metrics: dict | None) -> None:
    """Three st.metric cards with their 95% intervals underneath."""
    columns = st.columns(3)
    for column, item in zip(columns, headline_metrics(metrics)):
        column.metric(item["name"], pct(item["value"]), help=item["help"])
        if item["ci95"]:
            column.caption(f"95% CI {item['ci95'][0]:.1%}–{item['ci95'][1]:.1%} (bootstrap)")
        elif item["value"] is not None:
            column.caption("No interval recorded for this figure.")
    n = (metrics or {}).get("n")
    if n:
        st.caption(f"On {n} held-out test films.")


def compare_table(runs: list[Run]):
    """Headline metrics of several runs side by side (one column per run)."""
    import pandas as pd

    columns = {}
    for run in runs:
        metrics = run.metrics or {}
        ci95 = metrics.get("ci95") or {}
        columns[run.run_id] = {
            "Test films": metrics.get("n"),
            "Overall accuracy": pct_with_ci(metrics.get("accuracy"), ci95.get("accuracy")),
            "Macro-F1": pct_with_ci((metrics.get("macro") or {}).get("f1"), ci95.get("macro_f1")),
            "Mean one-vs-rest accuracy": pct(metrics.get("mean_ovr_accuracy")),
            "Preset": run.config.get("preset"),
            "Alpha": run.config.get("alpha"),
            "Image size": run.config.get("image_size"),
            "Epochs run": (metrics.get("training") or {}).get("epochs_run"),
            "ECE test (after calibration)": _fmt_float((metrics.get("calibration") or {}).get("ece_test_after")),
        }
    return pd.DataFrame(columns).astype(str)


def _fmt_float(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "—"


# --------------------------------------------------------------------------------------------------
# Prediction helpers
# --------------------------------------------------------------------------------------------------


@st.cache_data(show_spinner="Classifying…", max_entries=64)
@st.cache_data(show_spinner="Classifying…", max_entries=64)
def predict_upload(run_path: str, data: bytes, name: str):
    """Classify one uploaded film with its fast Grad-CAM. The name is only shown, never used as a path.

    Cached per (run, bytes, name), so moving the opacity slider or switching the explanation method does
    not classify the film again, and the audit log gets one line per film, not one per rerun.
    """
    prediction = get_predictor(run_path).predict(data, name=name, with_cam=True, display=True,
                                                 display_max_side=DISPLAY_MAX_SIDE)
    try:
        from core.runs.audit import record

        # One audit line per prediction (the file's hash and the output, never the image).
        record(data, Path(run_path).name, prediction, models_dir())
    except (ImportError, OSError):
        pass  # An unwritable audit log must not stop a prediction; the log is a convenience here.
    return prediction


@st.cache_data(show_spinner="Computing Grad-CAM++…", max_entries=64)
def cam_for_method(run_path: str, data: bytes, label: str, method: str):
    """The CAM (S, S) of `label` for one film's bytes by `method` ("gradcam" or "gradcam++")."""
    from core.explain.gradcam import grad_cam_vis
    from core.imaging.loader import load_image

    predictor = get_predictor(run_path)
    image = load_image(data, predictor.image_size)[np.newaxis]
    return grad_cam_vis(predictor.model, image, class_index=predictor.class_names.index(label), method=method)[0]


def explain_overlay(run_path: str, prediction, data: bytes, method: str, opacity: float) -> np.ndarray:
    """The film with the chosen method's CAM painted over it (RGB uint8)."""
    from core.explain.overlay import overlay

    cam = prediction.cam if method == "gradcam" else cam_for_method(run_path, data, prediction.label, method)
    return overlay(prediction.gray, cam, opacity=opacity)


def with_file_name(name: str, message: str) -> str:
    """Prefix an error message with the upload's name unless the message already names it."""
    return message if name in message else f"{name}: {message}"


def predictions_csv(predictions: list) -> bytes:
    """All results of an upload batch as CSV bytes: file, label, confidence, calibrated, error, seconds,
    one probability column per class."""
    import pandas as pd

    rows = []
    for prediction in predictions:
        row = {"file": prediction.file, "label": prediction.label, "confidence": prediction.confidence,
               "calibrated": prediction.calibrated, "error": prediction.error,
               "seconds": round(prediction.seconds, 3)}
        row.update({f"p_{name}": value for name, value in prediction.probabilities.items()})
        rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False).encode()


def probability_chart(probabilities: dict[str, float], height: int = 220):
    """A horizontal bar chart of class probabilities (plotly Figure)."""
    import plotly.graph_objects as go

    names = list(probabilities)[::-1]
    values = [probabilities[name] for name in names]
    figure = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color="#2a9d8f",
                              text=[f"{value:.1%}" for value in values], textposition="auto"))
    figure.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10),
                         xaxis=dict(range=[0, 1], tickformat=".0%", title="Probability"))
    return figure


# --------------------------------------------------------------------------------------------------
# Evaluation figures and tables
# --------------------------------------------------------------------------------------------------


def distribution_table(data_report: dict | None):
    """The paper's Table 1: films per class (rows) and subset (columns), with totals."""
    import pandas as pd

    subsets = (data_report or {}).get("subsets") or {}
    if not subsets:
        counts = (data_report or {}).get("class_counts") or {}
        return pd.DataFrame({"Total": counts}) if counts else pd.DataFrame()
    table = pd.DataFrame(subsets).fillna(0).astype(int)
    table = table[[name for name in ("train", "val", "test") if name in table.columns]]
    table["Total"] = table.sum(axis=1)
    table.loc["Total"] = table.sum(axis=0)
    return table


def training_curves(history, best_epoch: int | None):
    """Two plotly figures (accuracy, loss): train vs validation per epoch, best epoch marked."""
    import plotly.graph_objects as go

    figures = []
    for metric, title in (("accuracy", "Accuracy"), ("loss", "Loss")):
        figure = go.Figure()
        if len(history) and "epoch" in history:
            for prefix, subset in (("", "train"), ("val_", "val")):
                if prefix + metric in history:
                    figure.add_trace(go.Scatter(x=history["epoch"], y=history[prefix + metric], mode="lines+markers",
                                                name="train" if subset == "train" else "validation",
                                                line=dict(color=PALETTE[subset])))
        if best_epoch:
            figure.add_vline(x=best_epoch, line_dash="dash", line_color="#555",
                             annotation_text=f"best epoch {best_epoch}")
        figure.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="Epoch",
                             yaxis_title=title)
        figures.append(figure)
    return figures


def confusion_figures(metrics: dict):
    """Two plotly heatmaps: counts and row percentages (rows true class, columns predicted)."""
    import plotly.graph_objects as go

    classes = metrics["classes"]
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    percent = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) * 100
    figures = []
    for values, title, text in ((counts, "Counts", counts.astype(int).astype(str)),
                                (percent, "Row percentages (recall on the diagonal)",
                                 np.char.add(np.round(percent, 1).astype(str), "%"))):
        figure = go.Figure(go.Heatmap(z=values, x=classes, y=classes, colorscale="Teal", text=text,
                                      texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}: %{text}<extra></extra>"))
        figure.update_layout(title=title, height=380, margin=dict(l=10, r=10, t=40, b=10),
                             xaxis_title="Predicted class", yaxis_title="True class",
                             yaxis=dict(autorange="reversed"))
        figures.append(figure)
    return figures


def counts_table(metrics: dict):
    """TP / FP / FN / TN and support per class."""
    import pandas as pd

    return pd.DataFrame({name: {"TP": row["tp"], "FP": row["fp"], "FN": row["fn"], "TN": row["tn"],
                                "Support": row["support"]}
                         for name, row in metrics["per_class"].items()}).T


def per_class_table(metrics: dict):
    """Precision, recall, F1, one-vs-rest accuracy and ROC AUC per class (fractions)."""
    import pandas as pd

    return pd.DataFrame({name: {"Precision": row["precision"], "Recall": row["recall"], "F1": row["f1"],
                                "One-vs-rest accuracy": row["ovr_accuracy"], "ROC AUC": row.get("roc_auc")}
                         for name, row in metrics["per_class"].items()}).T


def per_class_chart(metrics: dict):
    """Grouped bars of precision/recall/F1/one-vs-rest accuracy per class with the clinical bar line."""
    import plotly.graph_objects as go

    classes = list(metrics["per_class"])
    figure = go.Figure()
    for key, name in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                      ("ovr_accuracy", "One-vs-rest accuracy")):
        figure.add_trace(go.Bar(name=name, x=classes, y=[metrics["per_class"][c][key] for c in classes]))
    threshold = (metrics.get("clinical_bar") or {}).get("threshold", CLINICAL_BAR)
    figure.add_hline(y=threshold, line_dash="dash", line_color="#b00020",
                     annotation_text=f"clinical bar {threshold:.0%}")
    figure.update_layout(barmode="group", height=360, yaxis=dict(range=[0, 1.05], tickformat=".0%"),
                         margin=dict(l=10, r=10, t=30, b=10))
    return figure


def roc_figure(rows: list[dict], classes: list[str]):
    """One-vs-rest ROC curves of the test rows of predictions.csv (None when there are none)."""
    import plotly.graph_objects as go

    from core.evaluation.metrics import roc_curves

    test = [row for row in rows if row.get("subset") == "test"]
    if not test:
        return None
    y_true = [classes.index(row["label"]) for row in test]
    y_score = [[row["probabilities"][name] for name in classes] for row in test]
    curves = roc_curves(y_true, y_score, classes)
    figure = go.Figure()
    for name, curve in curves.items():
        if curve["fpr"]:
            auc = f"{curve['auc']:.3f}" if curve["auc"] is not None else "n/a"
            figure.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=f"{name} (AUC {auc})"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                line=dict(dash="dot", color="#999")))
    figure.update_layout(height=400, xaxis_title="False positive rate", yaxis_title="True positive rate",
                         margin=dict(l=10, r=10, t=30, b=10))
    return figure


def calibration_table(metrics: dict):
    """Temperature and expected calibration error before/after, or None when not recorded."""
    import pandas as pd

    calibration = metrics.get("calibration") or {}
    if not calibration:
        return None
    return pd.DataFrame({
        "Figure": ["Temperature", "ECE validation, before", "ECE validation, after",
                   "ECE test, before", "ECE test, after"],
        "Value": [_fmt_float(calibration.get(key)) for key in
                  ("temperature", "ece_val_before", "ece_val_after", "ece_test_before", "ece_test_after")],
    })


def external_vs_internal(internal: dict, external: dict):
    """Headline and per-class recall of the internal test set and an external folder, side by side."""
    import pandas as pd

    def column(metrics):
        ci95 = metrics.get("ci95") or {}
        values = {"Films": metrics.get("n"),
                  "Overall accuracy": pct_with_ci(metrics.get("accuracy"), ci95.get("accuracy")),
                  "Macro-F1": pct_with_ci((metrics.get("macro") or {}).get("f1"), ci95.get("macro_f1")),
                  "Mean one-vs-rest accuracy": pct(metrics.get("mean_ovr_accuracy"))}
        for name, row in (metrics.get("per_class") or {}).items():
            values[f"Recall {name}"] = pct(row.get("recall"))
        return values

    return pd.DataFrame({"Internal test": column(internal), "External": column(external)}).astype(str)


# --------------------------------------------------------------------------------------------------
# Review helpers
# --------------------------------------------------------------------------------------------------


def misclassified(rows: list[dict]) -> list[dict]:
    """Test rows whose prediction is wrong, most confident first."""
    wrong = [row for row in rows if row.get("subset") == "test" and row["label"] != row["predicted"]]
    return sorted(wrong, key=lambda row: row["confidence"], reverse=True)


def mixup_name(row: dict) -> str:
    return f"{row['label']} → {row['predicted']}"


def default_mixups(options: list[str], classes: list[str]) -> list[str]:
    """Normal→Pneumonia and Pneumonia→Normal when the run has both classes, else every mix-up."""
    if "Normal" in classes and "Pneumonia" in classes:
        wanted = ["Normal → Pneumonia", "Pneumonia → Normal"]
        chosen = [name for name in wanted if name in options]
        return chosen
    return list(options)


def confidence_histogram(rows: list[dict]):
    """Histogram of confidence of right vs wrong test answers (plotly), or None without test rows."""
    import plotly.graph_objects as go

    test = [row for row in rows if row.get("subset") == "test"]
    if not test:
        return None
    figure = go.Figure()
    for outcome, keep in (("right", lambda r: r["label"] == r["predicted"]),
                          ("wrong", lambda r: r["label"] != r["predicted"])):
        figure.add_trace(go.Histogram(x=[r["confidence"] for r in test if keep(r)], name=outcome,
                                      marker_color=PALETTE[outcome], opacity=0.7, xbins=dict(start=0, end=1, size=0.05)))
    figure.update_layout(barmode="overlay", height=300, xaxis_title="Confidence of the predicted class",
                         yaxis_title="Test films", margin=dict(l=10, r=10, t=30, b=10))
    return figure


def mixup_counts(wrong: list[dict]):
    """How many test films went each wrong way (true → predicted)."""
    import pandas as pd

    counts: dict[str, int] = {}
    for row in wrong:
        counts[mixup_name(row)] = counts.get(mixup_name(row), 0) + 1
    return pd.DataFrame({"Mix-up (true → predicted)": list(counts), "Films": list(counts.values())})


def resolve_film_path(root: Path, relative: str) -> Path | None:
    """root / relative when it stays inside root and exists; None otherwise (never escapes the root)."""
    try:
        path = (root / relative).resolve()
        path.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return path if path.is_file() else None


@st.cache_data(show_spinner="Explaining the film…", max_entries=256)
def review_case(run_path: str, film_path: str, opacity: float = 0.45) -> dict:
    """The film (2-D uint8), its Grad-CAM overlay (RGB uint8) and an error message, for one film path."""
    from core.explain.overlay import overlay

    prediction = get_predictor(run_path).predict(film_path, with_cam=True, display=True, gate=False)
    if prediction.error:
        return {"error": prediction.error}
    return {"gray": prediction.gray, "overlay": overlay(prediction.gray, prediction.cam, opacity=opacity),
            "label": prediction.label}


def bytes_of_json(path: Path) -> bytes:
    """The bytes of a JSON file for a download button (b'{}' when missing)."""
    try:
        return path.read_bytes()
    except OSError:
        return b"{}"


def metrics_of(run: Run) -> dict | None:
    return read_json(run.path / "metrics.json")


def open_run(path: str) -> Run:
    """load_run for a path string (ValueError says what is wrong)."""
    return load_run(path)


def csv_bytes(frame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


# --------------------------------------------------------------------------------------------------
# Training helpers
# --------------------------------------------------------------------------------------------------

# Training processes this server started; polled so that finished ones are reaped (no zombies).
_CHILDREN: list = []
ALPHAS = (0.35, 0.5, 0.75, 1.0)


def write_job_config(models_dir_path: Path, preset_name: str, overrides: dict) -> Path:
    """Validate the recipe and write it to models_dir/.jobs/config-<time>.json (ValueError if invalid)."""
    from datetime import datetime

    from core.config import preset

    config = preset(preset_name, **overrides)
    jobs_dir = Path(models_dir_path) / ".jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    path = jobs_dir / f"config-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.json"
    config.save(path)
    return path


def start_job(folder: str, config_path: Path, models_dir_path: Path) -> int:
    """Start the training process and return its pid.

    core.runs.jobs.start_training holds the training lock for the child from the moment it returns, so a second
    Start is refused with TrainingBusyError. The process is kept here so that it is reaped when it ends.
    """
    from core.runs import jobs

    _reap_children()
    process = jobs.start_training(folder, config_path, models_dir_path, extra_env=keras_home_env())
    _CHILDREN.append(process)
    return process.pid


def _reap_children() -> None:
    for process in list(_CHILDREN):
        if process.poll() is not None:
            _CHILDREN.remove(process)


def read_job_status(models_dir_path: Path):
    """core.runs.jobs.job_status, after reaping this server's finished training processes."""
    from core.runs import jobs

    _reap_children()
    return jobs.job_status(models_dir_path)


def progress_summary(progress: dict | None) -> tuple[float, str]:
    """(fraction done in [0, 1], one line: phase, epoch x/y, batch a/b, ETA) of a progress.json."""
    if not progress:
        return 0.0, "Starting…"
    phase = progress.get("phase", "?")
    if phase == "checking":
        done, total = progress.get("files_done", 0), progress.get("files_total") or 0
        return (done / total if total else 0.0), f"Checking films: {done}/{total}"
    if phase == "features":
        return 0.0, "Computing the backbone's features of the training and validation films (once)…"
    epochs, batches = progress.get("epochs") or 1, progress.get("batches") or 1
    epoch, batch = progress.get("epoch", 0), progress.get("batch", 0)
    fraction = min(1.0, max(0.0, ((max(epoch, 1) - 1) * batches + batch) / (epochs * batches)))
    if phase in ("evaluating", "done"):
        return 1.0, "Evaluating the best epoch on the test split…" if phase == "evaluating" else "Done"
    eta = progress.get("eta_seconds")
    eta_text = f", about {_duration(eta)} left" if isinstance(eta, (int, float)) else ""
    return fraction, f"Phase {phase}: epoch {epoch}/{epochs}, batch {batch}/{batches}{eta_text}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def live_curves(history: list[dict]):
    """Two plotly figures (loss, accuracy) of the running job's finished epochs."""
    import pandas as pd

    frame = pd.DataFrame(history or [])
    accuracy, loss = training_curves(frame, None)
    return loss, accuracy


# --------------------------------------------------------------------------------------------------
# Beyond the paper: reliability diagrams, near-duplicates, Grad-CAM regions, mobile export
# --------------------------------------------------------------------------------------------------

EXPORT_TIMEOUT_SECONDS = 900


def reliability_figures(rows: list[dict], classes: list[str], temperature: float) -> dict:
    """{"validation": figure, "test": figure}: reliability diagrams before/after temperature scaling.

    rows are predictions.csv rows (ui.load_predictions); a subset without rows maps to None. Points are
    the confidence bins of core.evaluation.metrics.reliability_before_after (marker area grows with the bin's films).
    """
    import plotly.graph_objects as go

    from core.evaluation.metrics import reliability_before_after

    figures = {}
    for subset, title in (("val", "validation"), ("test", "test")):
        chosen = [row for row in rows if row.get("subset") == subset]
        if not chosen:
            figures[title] = None
            continue
        y_true = [classes.index(row["label"]) for row in chosen]
        y_score = [[row["probabilities"][name] for name in classes] for row in chosen]
        curves = reliability_before_after(y_true, y_score, temperature)
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
                             height=340, margin=dict(l=10, r=10, t=40, b=10),
                             xaxis=dict(title="Mean top-1 confidence", range=[0, 1]),
                             yaxis=dict(title="Accuracy", range=[0, 1.02]),
                             legend=dict(orientation="h", y=-0.25))
        figures[title] = figure
    return figures


def near_duplicate_table(matches: list[dict]):
    """Evaluated films that are resized or re-encoded copies of training films, with their distance."""
    import pandas as pd

    return pd.DataFrame({"Evaluated film": [m["file"] for m in matches],
                         "Training/validation film": [m["seen_file"] for m in matches],
                         "Hamming distance": [m["distance"] for m in matches]})


def show_cam_regions(regions: dict) -> None:
    """Draw a cam_regions.json analysis: mean shares for right vs wrong answers, and the flagged films."""
    import pandas as pd

    summary, uniform = regions.get("summary") or {}, regions.get("uniform") or {}

    def row(name, group):
        return {"": name, "Films": group.get("n", ""),
                **{label: pct(group.get(f"mean_{key}")) for key, label in
                   (("central", "Central lung fields"), ("border", "Border band"), ("corners", "Corners"))}}

    table = pd.DataFrame([row("Right answers", summary.get("correct") or {}),
                          row("Wrong answers", summary.get("wrong") or {}),
                          {"": "Uniform map (area shares)", "Films": "",
                           "Central lung fields": pct(uniform.get("central")),
                           "Border band": pct(uniform.get("border")), "Corners": pct(uniform.get("corners"))}])
    st.dataframe(table.astype(str), hide_index=True)
    flagged = summary.get("flagged") or []
    share = regions.get("flag_share", 0.7)
    if flagged:
        st.warning(f"{len(flagged)} of {regions.get('n')} films have more than {share:.0%} of their Grad-CAM mass "
                   "on the border band, outside the lung fields: check whether the model reads labels, markers "
                   "or devices there.")
        st.dataframe(pd.DataFrame({"File": [f["file"] for f in flagged], "True": [f["label"] for f in flagged],
                                   "Predicted": [f["predicted"] for f in flagged],
                                   "Border share": [pct(f["border"]) for f in flagged],
                                   "Corners share": [pct(f["corners"]) for f in flagged]}), hide_index=True)
    else:
        st.success(f"No film has more than {share:.0%} of its Grad-CAM mass on the border band.")
    missing = regions.get("missing") or []
    st.caption(f"{regions.get('n')} test films explained on {regions.get('computed', '?')}"
               + (f"; {len(missing)} not found" if missing else "") + ".")


def bytes_of_file(path: Path) -> bytes:
    """The bytes of a file for a download button (b'' when missing)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def export_path(run_path: str, variant: str) -> Path:
    """Where a run's TFLite export of one variant is kept: <run>/exports/<variant>-v<format>.tflite."""
    if variant not in EXPORT_VARIANTS:
        raise ValueError(f"Got variant={variant!r}; must be one of {EXPORT_VARIANTS}.")
    return Path(run_path) / "exports" / f"{variant}-v{EXPORT_FORMAT}.tflite"


def build_export(run_path: str, variant: str, timeout: float = EXPORT_TIMEOUT_SECONDS) -> Path:
    """Build the run's TFLite export in a child process (`python -m core export`), once per variant.

    The TensorFlow converter runs outside the server process, so its memory is returned when it ends.
    The file is written under a temporary name and renamed into place, so a half-written export is never
    offered. Returns the path; RuntimeError (with the converter's last message) when the export fails.
    """
    import subprocess
    import sys
    import time

    target = export_path(run_path, variant)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RuntimeError(f"Cannot write exports into {target.parent} ({error.strerror or error}).") from None
    partial = target.with_name(f".{variant}-{os.getpid()}-{time.time_ns()}.tflite.partial")
    parity = partial.with_suffix(".json")
    command = [sys.executable, "-m", "core", "export", "--model", str(run_path), "--tflite", str(partial),
               "--variant", variant, "--parity-json", str(parity)]
    try:
        result = subprocess.run(command, cwd=PROJECT_ROOT, env={**os.environ, **keras_home_env()},
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        parity.unlink(missing_ok=True)
        raise RuntimeError(f"The {variant} export took longer than {timeout:.0f} s and was stopped.") from None
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        parity.unlink(missing_ok=True)
        last = (result.stderr or result.stdout or "").strip().splitlines()[-3:]
        raise RuntimeError(f"The {variant} export failed: {' '.join(last) or 'no message'}")
    if parity.is_file():
        os.replace(parity, export_parity_path(run_path, variant))
    os.replace(partial, target)
    return target


def export_parity_path(run_path: str, variant: str) -> Path:
    """Where the parity check of a run's export is kept, beside it: <run>/exports/<variant>-v<format>.parity.json."""
    return export_path(run_path, variant).with_suffix(".parity.json")


def export_parity_text(run_path: str, variant: str) -> tuple[str, bool] | None:
    """The export's parity check as one sentence and whether it meets the bar; None when it was not run."""
    report = read_json(export_parity_path(run_path, variant), None)
    if not report:
        return None
    text = (f"Checked against the Keras model on {report['n']} of the run's films: top-1 agreement "
            f"{report['top1_agreement']:.1%}, largest probability difference {report['max_abs_difference']:.3f} "
            f"(bar: at least {PARITY_MIN_TOP1:.0%} and at most {PARITY_MAX_DIFFERENCE}), "
            f"{report['latency_ms_per_film']:.1f} ms per film on this server.")
    return text, bool(report.get("meets_bar"))


def file_size_text(path: Path) -> str:
    """A file's size as '4.5 MB' / '812 kB'."""
    size = Path(path).stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
