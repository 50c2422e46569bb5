"""Every st.cache_resource / st.cache_data function of the app, and nothing else.

Caches are keyed by strings and bytes (a run folder's path, a film's bytes), never by a model object, so a
cached answer always belongs to the run it names. TensorFlow is loaded by the first call that needs a
model, never by importing this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from core.data.paths import confined_data_folder
from core.data.scan import scan_dataset
from core.evaluation.conformal import risk_coverage
from core.explain.methods import explain
from core.explain.overlay import overlay
from core.imaging.loader import ImageLoadError, load_image, read_film
from core.runs.artifacts import HISTORY_FILE_NAME, PREDICTIONS_FILE_NAME, read_history_csv, read_predictions_csv
from core.serving.predict import Predictor

# Films and overlays are shown in a page column (300-500 px wide): sent at this longest side, an overlay costs a
# quarter of the work and bytes of a 1024 px one and still looks sharp on a high-density screen.
DISPLAY_MAX_SIDE = 512


@st.cache_resource(show_spinner="Loading the model…")
def get_predictor(run_path: str) -> Predictor:
    """One loaded core.serving.predict.Predictor per run folder (keyed by the path string, never the model).

    Single films run on TensorFlow Lite once a converted copy of the model exists (core.serving.lite); the
    first time a model is used on a machine, the conversion runs in the background and Keras serves meanwhile.
    """
    return Predictor(run_path, engine="background")


@st.cache_data(show_spinner=False)
def load_predictions(run_path: str, classes: tuple[str, ...]) -> list[dict]:
    """predictions.csv rows of a run ([] when the file is missing)."""
    path = Path(run_path) / PREDICTIONS_FILE_NAME
    return read_predictions_csv(path, list(classes)) if path.is_file() else []


@st.cache_data(show_spinner=False)
def risk_coverage_curve(run_path: str, classes: tuple[str, ...]) -> list[dict]:
    """The risk-coverage curve (core.evaluation.conformal.risk_coverage) of a run's test films, from its
    predictions.csv, for a conformal section that does not store one; [] without test rows. ValueError naming
    the file when it is damaged."""
    rows = [row for row in load_predictions(run_path, classes) if row.get("subset") == "test"]
    if not rows:
        return []
    return risk_coverage([[row["probabilities"][name] for name in classes] for row in rows],
                         [classes.index(row["label"]) for row in rows])


@st.cache_data(show_spinner=False)
def load_history(run_path: str):
    """history.csv of a run as a DataFrame (empty when missing); ValueError naming the file when it is damaged
    (core.runs.artifacts.read_history_csv)."""
    import pandas as pd

    path = Path(run_path) / HISTORY_FILE_NAME
    return pd.DataFrame(read_history_csv(path)) if path.is_file() else pd.DataFrame()


@st.cache_data(show_spinner="Checking the dataset folder…")
def scan_folder(folder: str) -> dict:
    """core.data.scan.scan_dataset(folder, decode=False) as a report dict, or {"error": message}."""
    try:
        scan = scan_dataset(confined_data_folder(folder), decode=False)
    except ValueError as error:
        return {"error": str(error)}
    return scan.report()


@st.cache_data(show_spinner="Classifying…", max_entries=64)
def predict_upload(run_path: str, data: bytes, name: str):
    """Classify one uploaded film with its fast Grad-CAM. The name is only shown, never used as a path.

    Cached per (run, bytes, name), so moving the opacity slider or switching the explanation method does
    not classify the film again. The audit line is written by the page (core.runs.audit.record_once), never
    here: a cache shared by all sessions would log a film only for the first session that sent it.
    """
    return get_predictor(run_path).predict(data, name=name, with_cam=True, display=True,
                                           display_max_side=DISPLAY_MAX_SIDE)


@st.cache_data(show_spinner="Computing the map…", max_entries=64)
def cam_for_method(run_path: str, data: bytes, label: str, method: str) -> np.ndarray:
    """The map (S, S) of `label` for one film's bytes by `method` (one of core.explain.methods.METHODS)."""
    predictor = get_predictor(run_path)
    image = load_image(data, predictor.image_size)[np.newaxis]
    return explain(predictor.model, image, predictor.class_names.index(label), method=method)[0]


@st.cache_data(show_spinner="Explaining the film…", max_entries=256)
def review_case(run_path: str, film_path: str, opacity: float = 0.45) -> dict:
    """The film (2-D uint8), its Grad-CAM overlay (RGB uint8) and its label, or {"error": message}, for one
    film path."""
    prediction = get_predictor(run_path).predict(film_path, with_cam=True, display=True, gate=False)
    if prediction.error:
        return {"error": prediction.error}
    return {"gray": prediction.gray, "overlay": overlay(prediction.gray, prediction.cam, opacity=opacity),
            "label": prediction.label}


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(film_path: str, max_side: int = 192) -> np.ndarray | None:
    """A small copy (2-D uint8) of a film on this machine, for the similar cases beside a result; None when it
    cannot be read."""
    try:
        return read_film(film_path, max_side=max_side).gray
    except (ImageLoadError, OSError, ValueError):
        return None
