"""The Audit log page: lists, filters and downloads every prediction, and shows one made on Predict."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from app.conftest import open_page, png_bytes, texts
from core.runs.audit import audit_path
from core.ui import navigation

AUDIT = navigation.AUDIT.script


def _write_audit(models_dir: Path, entries: list[dict]) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "audit.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def test_audit_page_lists_filters_and_downloads(monkeypatch, tmp_path):
    models_dir = tmp_path / "audit-models"
    entry = {"probabilities": {}, "error": None, "file_name": "x.png", "label": "Normal", "confidence": 0.7}
    _write_audit(models_dir, [
        {**entry, "time": "2026-01-01T10:00:00+00:00", "sha256": "a" * 64, "run_id": "run-a",
         "gate": {"passed": True, "reason": None}},
        {**entry, "time": "2026-01-01T11:00:00+00:00", "sha256": "b" * 64, "run_id": "run-b", "gate": None},
        {**entry, "time": "2026-01-01T12:00:00+00:00", "sha256": "c" * 64, "run_id": "run-a",
         "gate": {"passed": False, "reason": "a colour photograph"}},
    ])
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    at = open_page(AUDIT)
    assert not at.exception, at.exception
    assert "Images are never stored" in texts(at.info)
    table = at.dataframe[0].value
    assert list(table["sha256"]) == ["c" * 64, "b" * 64, "a" * 64]  # Newest first.
    assert {"time", "sha256", "run_id", "label", "gate_passed"} <= set(table.columns)
    assert [button.label for button in at.download_button] == ["Download JSONL", "Download CSV"]
    at.selectbox(key="audit_run").set_value("run-a").run()
    assert list(at.dataframe[0].value["sha256"]) == ["c" * 64, "a" * 64]
    assert at.dataframe[0].value["gate_reason"].iloc[0] == "a colour photograph"


def test_audit_page_shows_a_prediction_made_on_the_predict_page(with_run):
    data = png_bytes(2, seed=777)
    at = open_page(navigation.PREDICT.script)
    at.file_uploader[0].upload("audited.png", data, "image/png").run()
    assert not at.exception, at.exception
    at.switch_page(AUDIT).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value  # Newest first: this film's line, above those of earlier tests.
    assert table["sha256"].iloc[0] == hashlib.sha256(data).hexdigest()
    assert table["run_id"].iloc[0] == with_run.run_id


def test_audit_page_without_a_log_says_what_to_do(without_run):
    at = open_page(AUDIT)
    assert not at.exception, at.exception
    assert "No prediction recorded yet" in texts(at.warning)


def test_two_sessions_uploading_the_same_film_write_two_lines_and_a_rerun_none(with_run):
    data = png_bytes(1, seed=4242)
    log = audit_path(with_run.path.parent)
    before = len(log.read_text().splitlines()) if log.exists() else 0
    first = open_page(navigation.PREDICT.script)
    first.file_uploader[0].upload("same.png", data, "image/png").run()
    first.slider(key="cam_opacity").set_value(0.6).run()  # A rerun of the same session: no new line.
    second = open_page(navigation.PREDICT.script)
    second.file_uploader[0].upload("same.png", data, "image/png").run()
    assert not first.exception and not second.exception
    lines = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert [line["sha256"] for line in lines] == [hashlib.sha256(data).hexdigest()] * 2
    assert all("file_name" not in line for line in lines)  # Names are opt-in.


def test_the_audit_page_survives_damaged_lines_and_mixed_entries(monkeypatch, tmp_path):
    models_dir = tmp_path / "audit-models"
    models_dir.mkdir()
    good = {"time": "2026-01-01T10:00:00+00:00", "sha256": "a" * 64, "run_id": "run-a", "label": "Normal",
            "confidence": 0.7, "gate": {"passed": True, "reason": None}, "error": None}
    not_an_image = {"time": "2026-01-01T11:00:00+00:00", "sha256": "b" * 64, "run_id": "run-a", "label": None,
                    "confidence": None, "gate": None, "error": "not an image"}
    (models_dir / "audit.jsonl").write_bytes(b"42\n\xff\xfe\n" + json.dumps(good).encode() + b"\n"
                                             + json.dumps(not_an_image).encode() + b"\n")
    monkeypatch.setenv("PARU_MODELS_DIR", str(models_dir))
    at = open_page(AUDIT)
    assert not at.exception, at.exception
    assert "2 of the last 200 lines" in texts(at.warning)
    assert list(at.dataframe[0].value["sha256"]) == ["b" * 64, "a" * 64]
