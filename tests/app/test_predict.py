"""The Predict page: label, Grad-CAM overlay, probabilities, errors per file, the gate, a warm model."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from app.conftest import open_page, plotly_charts, png_bytes, texts
from core.imaging.loader import SUPPORTED_EXTENSIONS
from core.ui import navigation

PREDICT = navigation.PREDICT.script


def test_predict_shows_label_and_overlay(with_run):
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    assert not at.exception, at.exception
    predicted = [metric for metric in at.metric if metric.label == "Predicted"]
    assert len(predicted) == 1 and predicted[0].value in with_run.classes
    assert len(at.image) >= 2  # The film and its Grad-CAM overlay.
    assert len(plotly_charts(at)) == 1
    assert at.download_button

    at.radio(key="cam_method").set_value("Grad-CAM++ (tf-keras-vis)").run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert len(at.image) >= 2


def test_the_uploader_takes_every_type_the_loader_reads(with_run):
    at = open_page(PREDICT)
    accepted = set(at.file_uploader[0].proto.type)
    assert accepted == set(SUPPORTED_EXTENSIONS)  # gif and webp included
    assert {".gif", ".webp"} <= accepted


def test_probability_chart_has_no_mode_bar_over_its_labels(with_run):
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    chart = plotly_charts(at)[0]
    assert json.loads(chart.proto.config) == {"displayModeBar": False}


def test_reruns_keep_the_loaded_model_warm(with_run, monkeypatch):
    """Streamlit clears the Keras session after every rerun unless the shell stops it; the next prediction
    would then rebuild TensorFlow's kernels."""
    import keras

    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *args, **kwargs: cleared.append(args))
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    at.slider(key="cam_opacity").set_value(0.6).run()
    assert not at.exception, at.exception
    assert [metric.label for metric in at.metric].count("Predicted") == 1
    assert cleared == []


def test_corrupt_upload_shows_error_and_good_one_still_shows(with_run):
    at = open_page(PREDICT)
    at.file_uploader[0].set_value([("broken.png", b"this is not a picture", "image/png"),
                                   ("good.png", png_bytes(1), "image/png")]).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "broken.png" in at.error[0].value
    assert [metric.label for metric in at.metric].count("Predicted") == 1


def test_a_colour_photo_gets_no_diagnosis_unless_revealed(with_run):
    rng = np.random.default_rng(0)
    photo = np.zeros((200, 300, 3), np.uint8)
    photo[..., 0], photo[60:140, 80:220, 2] = 210, 230
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)).save(buffer, "PNG")
    at = open_page(PREDICT)
    at.file_uploader[0].upload("holiday.png", buffer.getvalue(), "image/png").run()
    assert not at.exception, at.exception
    assert any("No diagnosis shown" in warning.value and "colour" in warning.value for warning in at.warning)
    assert "Predicted" not in [metric.label for metric in at.metric]
    at.toggle[0].set_value(True).run()
    assert "Predicted" in [metric.label for metric in at.metric]


def _colour_photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    photo = np.zeros((200, 300, 3), np.uint8)
    photo[..., seed % 3], photo[60:140, 80:220, (seed + 2) % 3] = 210, 230
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_revealing_one_refused_film_never_reveals_another_uploaded_in_its_place(with_run):
    at = open_page(PREDICT)
    at.file_uploader[0].set_value(("first.png", _colour_photo(1), "image/png")).run()
    at.toggle[0].set_value(True).run()
    assert "Predicted" in [metric.label for metric in at.metric]
    at.file_uploader[0].set_value(("second.png", _colour_photo(2), "image/png")).run()
    assert not at.exception, at.exception
    assert any("No diagnosis shown" in warning.value for warning in at.warning)
    assert "Predicted" not in [metric.label for metric in at.metric]  # Asked for the first film only.
