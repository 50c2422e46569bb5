"""The Predict page: the answer (or "uncertain"), Grad-CAM overlay, probabilities, errors per file, the gate
honoured in the CSV and the audit log, the model's context, a linkable run choice, per-session upload bounds,
the examples gallery and a warm model."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from streamlit.proto.Metric_pb2 import Metric
from streamlit.testing.v1 import AppTest

from app.conftest import APP, TIMEOUT, open_page, plotly_charts, png_bytes, texts
from core.imaging.loader import SUPPORTED_EXTENSIONS
from core.runs.audit import audit_path
from core.serving import results
from core.serving.results import FLAT_CAM_NOTE
from core.ui import cached, navigation, predict_panel

PREDICT = navigation.PREDICT.script
ANSWERS = ("Predicted", "Uncertain")


def answers(at: AppTest) -> list:
    return [metric for metric in at.metric if metric.label in ANSWERS]


def markdown_texts(at: AppTest) -> str:
    """Everything the page rendered as Markdown."""
    return "\n".join(texts(elements) for elements in (at.markdown, at.caption, at.error, at.warning, at.info))


def colour_photo(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    photo = np.zeros((200, 300, 3), np.uint8)
    photo[..., seed % 3], photo[60:140, 80:220, (seed + 2) % 3] = 210, 230
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def csv_rows(monkeypatch):
    """The rows of the page's last "Download all results (CSV)", as a spreadsheet would read them."""
    written = []
    original = results.results_csv

    def results_csv(rows):
        data = original(rows)
        written.append(list(csv.DictReader(io.StringIO(data.decode()))))
        return data

    monkeypatch.setattr(results, "results_csv", results_csv)
    return written


def with_changed_prediction(monkeypatch, **changes):
    """The page's cached classification, with `changes` applied to every Prediction it gives."""
    original = cached.predict_upload

    def predict_upload(run_path, data, name):
        prediction = dataclasses.replace(original(run_path, data, name))
        for field, value in changes.items():
            setattr(prediction, field, value(prediction) if callable(value) else value)
        return prediction

    monkeypatch.setattr(cached, "predict_upload", predict_upload)


def test_predict_shows_an_answer_an_overlay_and_the_model_in_use(with_run):
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    assert not at.exception, at.exception
    assert len(answers(at)) == 1
    assert len(at.image) >= 2  # The film and its Grad-CAM overlay.
    assert len(plotly_charts(at)) == 1
    assert at.download_button
    shown = markdown_texts(at)
    assert "Trained on" in shown and "training films" in shown and "Classes" in shown and "95% CI" in shown
    assert at.selectbox(key="run_selector_page").value == str(with_run.path)  # On the page, not only the sidebar.

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
    assert len(answers(at)) == 1
    assert cleared == []


def test_corrupt_upload_shows_error_and_good_one_still_shows(with_run):
    at = open_page(PREDICT)
    at.file_uploader[0].set_value([("broken.png", b"this is not a picture", "image/png"),
                                   ("good.png", png_bytes(1), "image/png")]).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "broken.png" in at.error[0].value
    assert len(answers(at)) == 1


def test_a_colour_photo_gets_no_diagnosis_in_the_page_the_csv_or_the_audit_log(with_run, csv_rows):
    log = audit_path(with_run.path.parent)
    before = log.read_text().splitlines() if log.exists() else []
    at = open_page(PREDICT)
    at.file_uploader[0].upload("holiday.png", colour_photo(), "image/png").run()
    assert not at.exception, at.exception
    assert any("No diagnosis shown" in warning.value and "colour" in warning.value for warning in at.warning)
    assert not answers(at)
    row = csv_rows[-1][0]
    assert row["label"] == row["confidence"] == row["prediction_set"] == row["raw_output"] == ""
    assert not any(row[f"p_{name}"] for name in with_run.classes)
    assert row["gate_passed"] == "False" and row["gate_kind"] == "not_a_chest_film" and "colour" in row["gate_reason"]
    assert row["run_id"] == with_run.run_id and len(row["sha256"]) == 64 and row["engine"] and row["time"]
    entry = json.loads(log.read_text().splitlines()[len(before)])
    assert entry["label"] is None and entry["confidence"] is None and "probabilities" not in entry
    assert entry["gate"]["passed"] is False and "file_name" not in entry

    at.toggle[0].set_value(True).run()  # The raw output, on request, marked as such.
    assert "Predicted" in [metric.label for metric in at.metric]
    assert "not a diagnosis" in texts(at.caption)
    row = csv_rows[-1][0]
    assert row["label"] == "" and row["raw_output"].startswith("RAW")


def test_revealing_one_refused_film_never_reveals_another_uploaded_in_its_place(with_run):
    at = open_page(PREDICT)
    at.file_uploader[0].set_value(("first.png", colour_photo(1), "image/png")).run()
    at.toggle[0].set_value(True).run()
    assert "Predicted" in [metric.label for metric in at.metric]
    at.file_uploader[0].set_value(("second.png", colour_photo(2), "image/png")).run()
    assert not at.exception, at.exception
    assert any("No diagnosis shown" in warning.value for warning in at.warning)
    assert "Predicted" not in [metric.label for metric in at.metric]  # Asked for the first film only.


def test_a_failed_audit_write_is_shown(with_run, monkeypatch, tmp_path):
    from core.runs import audit

    unwritable = tmp_path / "audit.jsonl"
    unwritable.mkdir()  # Nothing can be appended to a folder: every write fails, as on a read-only disk.
    monkeypatch.setattr(audit, "audit_path", lambda models_dir=None: unwritable)
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(1), "image/png").run()
    assert not at.exception, at.exception
    assert "could not be written to the audit log" in texts(at.error)
    assert len(answers(at)) == 1  # The prediction is still shown.


def test_an_uncertain_answer_is_shown_as_its_set_never_as_one_label(with_run, monkeypatch, csv_rows):
    pair = with_run.classes[:2]
    with_changed_prediction(monkeypatch, prediction_set=list(pair), set_level=0.9, uncertain=True)
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    assert not at.exception, at.exception
    assert [metric.label for metric in answers(at)] == ["Uncertain"]
    assert answers(at)[0].value == f"{pair[0]} or {pair[1]} (90% set)"
    assert csv_rows[-1][0]["prediction_set"] == " | ".join(pair) and csv_rows[-1][0]["uncertain"] == "True"


def test_a_sure_answer_has_no_delta_arrow_and_a_flat_map_is_said_in_words(with_run, monkeypatch):
    with_changed_prediction(monkeypatch, prediction_set=lambda p: [p.label], set_level=0.9, uncertain=False,
                            cam=lambda p: np.zeros_like(p.cam))
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    assert not at.exception, at.exception
    metric = answers(at)[0]
    assert metric.label == "Predicted" and "probability" in metric.proto.delta
    assert metric.proto.direction == Metric.MetricDirection.NONE  # A probability is no rise: no arrow.
    assert FLAT_CAM_NOTE in texts(at.info)


def test_the_nearest_training_films_are_shown_with_their_labels(with_run, monkeypatch):
    with_changed_prediction(monkeypatch, gate=lambda p: dataclasses.replace(p.gate, passed=True))
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
    assert not at.exception, at.exception
    assert "Nearest training films" in texts(at.caption)
    similar = [caption.value for caption in at.caption if "distance" in caption.value]
    assert len(similar) == 3 and all(any(name in text for name in with_run.classes) for text in similar)
    assert len(at.image) >= 2 + 3  # The film, its overlay and the three training films (on this machine).


def test_upload_names_are_never_rendered_as_markdown(with_run, csv_rows):
    name = "![x](http://127.0.0.1:9/beacon.png)[click me](http://127.0.0.1:9/).png"
    at = open_page(PREDICT)
    at.file_uploader[0].set_value([(name, png_bytes(), "image/png"),
                                   ("=HYPERLINK(\"http://127.0.0.1:9\").png", b"not a film", "image/png")]).run()
    assert not at.exception, at.exception
    assert name in texts(at.text)
    assert "](http" not in markdown_texts(at)
    assert csv_rows[-1][1]["file"].startswith("'=")


def test_uploads_are_bounded_per_session(with_run, monkeypatch):
    monkeypatch.setattr(predict_panel, "MAX_SESSION_FILMS", 2)
    at = open_page(PREDICT)
    at.file_uploader[0].set_value([(f"film{i}.png", png_bytes(i % 4, seed=i), "image/png") for i in range(3)]).run()
    assert not at.exception, at.exception
    assert "3 films" in texts(at.error) and "at most 2 films" in texts(at.error) and "smaller batches" in texts(at.error)
    assert not answers(at)
    assert not at.file_uploader[0].value  # The session's copies were let go.


def test_the_examples_gallery_classifies_each_example_without_shared_data(with_run, monkeypatch, tmp_path):
    from core.runs import artifacts

    monkeypatch.setattr(artifacts, "SHARED_ROOT", tmp_path / "no-shared")
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "no-data"))
    examples = predict_panel.load_examples()
    assert {item["label"] for item in examples} >= {"Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax"}
    at = open_page(PREDICT)
    for item in examples:
        at.button(key=f"example-{item['file']}").click().run()
        assert not at.exception, at.exception
        assert item["file"] in texts(at.text)
        assert f"labelled {item['label']}" in texts(at.caption)
        assert len(answers(at)) == 1 or any("No diagnosis shown" in w.value for w in at.warning)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_run):
    """A models folder with two copies of the tiny run, finished a day apart: (older, newer)."""
    models_dir = tmp_path_factory.mktemp("two-runs")
    copies = []
    for run_id, finished in (("20260101-000000-tiny-older", "2026-01-01T00:00:00+00:00"),
                             ("20260102-000000-tiny-newer", "2026-01-02T00:00:00+00:00")):
        shutil.copytree(tiny_run, models_dir / run_id)
        status = json.loads((models_dir / run_id / "status.json").read_text())
        (models_dir / run_id / "status.json").write_text(json.dumps({**status, "finished": finished}))
        copies.append(models_dir / run_id)
    return models_dir, copies[0], copies[1]


def _session(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    return at.run()


def test_the_default_run_is_the_configured_one_not_the_newest(two_runs, monkeypatch):
    models_dir, older, newer = two_runs
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("PARU_DEFAULT_RUN", older.name)
    at = _session()
    assert at.sidebar.selectbox(key="run_selector").value == str(older)
    assert at.query_params["run"] == older.name
    assert f"A newer run exists: {newer.name}" in texts(at.sidebar.caption)


def test_the_run_in_the_link_is_kept_across_reloads_and_chosen_on_the_page(two_runs, monkeypatch):
    models_dir, older, newer = two_runs
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("PARU_DEFAULT_RUN", raising=False)
    at = _session({"run": older.name})
    at.switch_page(PREDICT).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="run_selector_page").value == str(older)
    at.selectbox(key="run_selector_page").set_value(str(newer)).run()  # On the page, as on a phone.
    assert at.sidebar.selectbox(key="run_selector").value == str(newer)
    assert at.query_params["run"] == newer.name
    reloaded = _session(dict(at.query_params))  # F5, or the link in a new tab: a new session.
    assert reloaded.sidebar.selectbox(key="run_selector").value == str(newer)
    unknown = _session({"run": "not-a-run"})
    assert "not-a-run, which is not on this machine" in texts(unknown.sidebar.caption)


def test_a_demonstration_run_says_so_on_the_page(run_copy):
    status = run_copy.path / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "demo": True}))
    at = open_page(PREDICT)
    assert not at.exception, at.exception
    assert any("demonstration model" in warning.value for warning in at.warning)
