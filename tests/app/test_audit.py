"""The Audit log page: lists, filters and downloads every prediction, and shows one made on Predict."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from app.conftest import open_page, png_bytes, texts
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


def test_audit_page_shows_a_prediction_made_on_the_predict_page(run_copy):
    data = png_bytes(2, seed=777)
    at = open_page(navigation.PREDICT.script)
    at.file_uploader[0].upload("audited.png", data, "image/png").run()
    assert not at.exception, at.exception
    at.switch_page(AUDIT).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["sha256"].iloc[0] == hashlib.sha256(data).hexdigest()
    assert table["run_id"].iloc[0] == run_copy.run_id


def test_audit_page_without_a_log_says_what_to_do(without_run):
    at = open_page(AUDIT)
    assert not at.exception, at.exception
    assert "No prediction recorded yet" in texts(at.warning)
