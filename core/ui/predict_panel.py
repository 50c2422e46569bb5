"""The Predict page's sections: the model box (a selector on the page, the run's context, a banner for a demo
or weak run), the films to classify (uploads bounded per session, the examples gallery), and one card per
film (the answer or the gate's refusal, the heatmap, the probabilities, the similar training films), whose
CSV rows the page offers for download.

What a result says comes from core.serving.results and core.runs.context, the same as the CSV and
`predict --json`; this module only draws it. Upload names are user input: they are shown with st.text or
escaped, never rendered as Markdown (a name like "![x](http://host/beacon.png).png" would fetch the URL).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import streamlit as st

from core.data.paths import film_under_root
from core.explain.methods import DEFAULT_METHOD
from core.explain.overlay import overlay
from core.imaging.loader import SUPPORTED_EXTENSIONS
from core.runs import audit
from core.runs.artifacts import now_iso
from core.runs.context import model_context
from core.serving import results
from core.settings import EXAMPLES_DIR
from core.ui import cached, explain_panel, figures, frame, pacs_panel

UPLOAD_TYPES = sorted(extension.lstrip(".") for extension in SUPPORTED_EXTENSIONS)
"""The file types the Predict uploader accepts: every extension core.imaging reads."""
MAX_SESSION_FILMS = 20
MAX_SESSION_BYTES = 200 * 1024 * 1024
"""What one session may hold in the uploader at once (the server's per-file cap is in .streamlit/config.toml):
without a bound, one browser tab could park gigabytes of uploads in the server's memory."""
REFUSED_HEADLINES = {
    "not_a_chest_film": "No diagnosis shown: this does not look like a frontal chest radiograph.",
    "unlike_training_films": "No diagnosis shown: a chest film unlike the films this model was trained on.",
    "mis_prepared": "No diagnosis shown: the film looks mis-prepared.",
}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!<>|~$])")


def plain(text: str) -> str:
    """Text for an st.error/st.warning/st.caption (which render Markdown) shown exactly as written."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", "".join(c for c in str(text) if c.isprintable()))


def with_file_name(name: str, message: str) -> str:
    """Prefix an error message with the upload's name unless the message already names it."""
    return message if name in message else f"{name}: {message}"


def explain_cam(run_path: str, prediction, data: bytes, method: str) -> np.ndarray:
    """The chosen method's CAM of the predicted class."""
    if method == DEFAULT_METHOD:
        return prediction.cam
    return cached.cam_for_method(run_path, data, prediction.label, method)


# --------------------------------------------------------------------------------------------------
# The model box
# --------------------------------------------------------------------------------------------------


def model_box(run):
    """The model selector on the page (reachable on a phone without the sidebar), what the run was trained on
    and how well it did, a banner when it is a demonstration or weak, and the quiet run notes."""
    runs = frame.available_runs()
    context = model_context(run)
    with st.container(border=True):
        frame.run_selector(runs, key="run_selector_page", label="Model")
        warning = context.warning()
        if warning:
            st.warning(warning, icon=":material/warning:")
        figures_text = context.figures()
        st.caption(plain(f"Trained on {context.population()}. Classes: {', '.join(context.classes)}. "
                         f"{figures_text[:1].upper()}{figures_text[1:]}."))
        for note in frame.run_notes(runs, run):
            st.caption(plain(note))
    return context


# --------------------------------------------------------------------------------------------------
# The films to classify
# --------------------------------------------------------------------------------------------------


def load_examples() -> list[dict]:
    """The gallery's films from docs/examples/examples.json ({"file", "label", "source", ...}), those whose
    file is present; [] when the folder or its manifest is missing."""
    try:
        manifest = json.loads((EXAMPLES_DIR / "examples.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [item for item in manifest if isinstance(item, dict) and (EXAMPLES_DIR / str(item.get("file"))).is_file()]


def uploaded_films() -> list[tuple[str, bytes]]:
    """The uploader's films as (name, bytes), bounded per session: over MAX_SESSION_FILMS or MAX_SESSION_BYTES,
    the uploader is emptied (which frees the server's copies) and the page says why and what to do."""
    generation = st.session_state.setdefault("upload_generation", 0)
    uploads = st.file_uploader("Chest X-ray films", type=UPLOAD_TYPES, accept_multiple_files=True,
                               key=f"uploads-{generation}",
                               help=f"PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM; up to {MAX_SESSION_FILMS} films "
                                    f"and {MAX_SESSION_BYTES // 2**20} MB at once. Files are read in memory only.")
    refused = st.session_state.pop("uploads_refused", None)
    if refused:
        st.error(f"{refused[0]} films ({refused[1] / 2**20:.0f} MB) were sent at once; one session holds at most "
                 f"{MAX_SESSION_FILMS} films and {MAX_SESSION_BYTES // 2**20} MB, so they were removed. Upload "
                 "them in smaller batches (download each batch's CSV), or classify a folder with "
                 "`python -m core predict FOLDER`.")
    uploads = uploads or []
    total = sum(upload.size for upload in uploads)
    if len(uploads) > MAX_SESSION_FILMS or total > MAX_SESSION_BYTES:
        st.session_state.upload_generation = generation + 1
        st.session_state.uploads_refused = (len(uploads), total)
        st.rerun()
    return [(upload.name, upload.getvalue()) for upload in uploads]


def examples_gallery(run) -> tuple[str, bytes, dict] | None:
    """Real example films (docs/examples), one button each: the one clicked is classified like an upload.

    Returns (name, bytes, manifest entry) of the chosen example, or None. Films of the run's classes come
    first; each says its label and where it comes from."""
    examples = sorted(load_examples(), key=lambda item: item.get("label") not in run.classes)
    if not examples:
        return None
    chosen = st.session_state.get("example")
    with st.expander("Examples: real films to try, one click each", expanded=chosen is None):
        for row_start in range(0, len(examples), 3):
            for column, item in zip(st.columns(3), examples[row_start:row_start + 3]):
                column.image(str(EXAMPLES_DIR / item["file"]), width="stretch")
                column.caption(plain(f"{item['label']} · {item.get('source', 'source not recorded')}"))
                if column.button(f"Classify this {item['label']} film", key=f"example-{item['file']}"):
                    st.session_state.example = chosen = item["file"]
        if chosen is not None and st.button("Clear the example", key="example_clear"):
            st.session_state.example = chosen = None
    item = next((entry for entry in examples if entry["file"] == chosen), None)
    if item is None:
        return None
    return item["file"], (EXAMPLES_DIR / item["file"]).read_bytes(), item


# --------------------------------------------------------------------------------------------------
# One film
# --------------------------------------------------------------------------------------------------


def record_audit(run, data: bytes, prediction) -> None:
    """One audit line per prediction per session (core.runs.audit.record_once), written here, outside every
    cache; a failed write is shown, never swallowed."""
    try:
        audit.record_once(st.session_state.setdefault("audit_recorded", set()), data, run.run_id, prediction,
                          frame.models_dir())
    except audit.AuditLogError as error:
        st.error(plain(str(error)), icon=":material/error:")


def _first_seen(key: str) -> str:
    """When this session first classified this film with this run (the CSV's time)."""
    return st.session_state.setdefault("classified_at", {}).setdefault(key, now_iso())


def film_card(run, predictor, context, name: str, data: bytes, method_label: str, opacity: float,
              example: dict | None = None) -> dict:
    """Classify one film (cached) and draw its card; returns its CSV row (core.serving.results.csv_row)."""
    run_path = str(run.path)
    sha256 = hashlib.sha256(data).hexdigest()
    prediction = cached.predict_upload(run_path, data, name)
    record_audit(run, data, prediction)
    raw_shown = False
    with st.container(border=True):
        st.text(name)  # Never Markdown: the name is the uploader's.
        if example is not None:
            st.caption(plain(f"Example film, labelled {example['label']} in its dataset: "
                             f"{example.get('source', 'source not recorded')} ({example.get('original_name', '')})."))
        if prediction.error:
            st.error(plain(with_file_name(prediction.file, prediction.error)))
        elif results.is_refused(prediction):
            verdict = results.gate_verdict(prediction)
            st.warning(plain(f"{REFUSED_HEADLINES.get(verdict['kind'], 'No diagnosis shown.')} {verdict['reason']}"))
            raw_shown = st.toggle("Show the model's raw output anyway (it is no diagnosis for such an image)",
                                  key=f"reveal-{sha256}")  # This film's, whatever its place in the list.
            if not raw_shown:
                st.image(prediction.gray, caption="Uploaded image", width=320)
            else:
                st.caption("Raw output shown on request: the gate refused this film, so it is not a diagnosis.")
                _result_columns(run, predictor, prediction, data, sha256, method_label, opacity)
        else:
            _result_columns(run, predictor, prediction, data, sha256, method_label, opacity)
            _similar_cases(run, prediction)
        for notice in () if prediction.error else prediction.notices:
            st.info(plain(notice))
        if not prediction.error and (raw_shown or not results.is_refused(prediction)):  # As the page shows it.
            pacs_panel.dicom_downloads(run, prediction, data, key=f"upload-{sha256[:16]}", raw=raw_shown)
    return results.csv_row(prediction, sha256, _first_seen(f"{run.run_id}:{sha256}"), context, run.classes,
                           raw_shown=raw_shown)


def _result_columns(run, predictor, prediction, data: bytes, sha256: str, method_label: str, opacity: float):
    film_column, cam_column, result_column = st.columns([1, 1, 1.2])
    film_column.image(prediction.gray, caption="Film", width="stretch")
    method = explain_panel.CAM_METHOD_LABELS[method_label]
    try:
        cam = explain_cam(str(run.path), prediction, data, method)
        cam_column.image(overlay(prediction.gray, cam, opacity=opacity), caption=method_label, width="stretch")
        if results.cam_is_flat(cam):
            cam_column.info(results.FLAT_CAM_NOTE, icon=":material/blur_off:")
    except (ValueError, ImportError) as error:
        cam_column.error(plain(f"No {method_label} for this film: {error}"))
    explain_panel.verdict_note(cam_column, str(run.path), method)
    if results.is_uncertain(prediction) and not results.is_refused(prediction):
        result_column.metric("Uncertain", results.answer_text(prediction),
                             help="The classes this model cannot tell apart for this film: the prediction set "
                                  "at the stated level, or, for a run without sets, the classes near the top "
                                  "probability. No single label is given.")
    else:
        # A probability is no change: no delta arrow.
        result_column.metric("Predicted", prediction.label, f"{prediction.confidence:.1%} probability",
                             delta_color="off", delta_arrow="off")
    # No mode bar: in a column this narrow it sits over the bars' labels, and a four-bar chart needs no zoom.
    result_column.plotly_chart(figures.probability_chart(prediction.probabilities),
                               key=f"probabilities-{sha256[:16]}", config={"displayModeBar": False})
    result_column.caption(
        f"{prediction.seconds * 1000:.0f} ms on {prediction.engine}"
        + (" (a faster engine is being prepared for this model). " if predictor.converting else ". ")
        + ("Probabilities are temperature-calibrated on the validation split."
           if prediction.calibrated else "Probabilities are the model's raw softmax (not calibrated).")
    )


def _similar_cases(run, prediction) -> None:
    """The nearest training films with their labels, as thumbnails where the films are on this machine."""
    similar = results.similar_cases(prediction)
    if not similar:
        return
    st.caption("Nearest training films in this model's own features (what it puts this film among):")
    root = run.dataset_root()
    for column, item in zip(st.columns(len(similar)), similar):
        path = film_under_root(root, item["file"]) if root is not None else None
        picture = cached.thumbnail(str(path)) if path is not None else None
        if picture is not None:
            column.image(picture, width="stretch")
        column.caption(plain(f"{item['label']} · distance {item['distance']:.3f}"
                             + ("" if picture is not None else " · film not on this machine")))
