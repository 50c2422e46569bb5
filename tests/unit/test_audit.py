"""The audit log's tables: filtered, flattened, downloadable."""

from __future__ import annotations

import csv
import io
import json


def _entries():
    return [
        {"time": "t1", "sha256": "a" * 64, "run_id": "run-a", "file_name": "x.png", "label": "Normal",
         "confidence": 0.7, "probabilities": {"Normal": 0.7}, "gate": {"passed": True, "reason": None}, "error": None},
        {"time": "t2", "sha256": "b" * 64, "run_id": "run-b", "file_name": "y.png", "label": None,
         "confidence": None, "probabilities": {}, "gate": None, "error": "not a picture"},
        {"time": "t3", "sha256": "c" * 64, "run_id": "run-a", "file_name": "z.png", "label": "Pneumonia",
         "confidence": 0.6, "probabilities": {}, "gate": {"passed": False, "reason": "colour photo"}, "error": None},
    ]


def test_audit_tables_filter_flatten_and_download():
    from core.runs import audit

    entries = _entries()
    assert audit.run_ids(entries) == ["run-a", "run-b"]
    rows = audit.table_rows(entries, "run-a")
    assert [row["time"] for row in rows] == ["t3", "t1"]  # Newest first.
    assert rows[0]["gate_passed"] is False and rows[0]["gate_reason"] == "colour photo"
    assert list(rows[0]) == list(audit.AUDIT_COLUMNS)
    assert audit.table_rows(entries)[1]["error"] == "not a picture"
    parsed = list(csv.DictReader(io.StringIO(audit.to_csv(rows).decode())))
    assert [row["sha256"] for row in parsed] == ["c" * 64, "a" * 64]
    lines = audit.to_jsonl(entries).decode().splitlines()
    assert [json.loads(line) for line in lines] == entries


def test_audit_log_records_each_prediction_without_the_image(tmp_path):
    from core.runs import audit
    from core.serving.gate import GateResult
    from core.serving.predict import Prediction

    film = b"\x89PNG fake film bytes"
    prediction = Prediction("../../etc/passwd\x1b[31m", "Normal", 0.9, {"Normal": 0.9, "Pneumonia": 0.1},
                            gate=GateResult(True, "ok"))
    audit.record(film, "run-1", prediction, models_dir=tmp_path)
    audit.record(b"other", "run-1", Prediction("bad.png", error="not an image"), models_dir=tmp_path)
    entries = audit.read(tmp_path)
    assert [e["label"] for e in entries] == ["Normal", None]
    assert entries[0]["sha256"] == __import__("hashlib").sha256(film).hexdigest()
    assert entries[0]["gate"] == {"passed": True, "reason": "ok"}
    assert "\x1b" not in entries[0]["file_name"]
    raw = (tmp_path / "audit.jsonl").read_bytes()
    assert film not in raw and len(raw.splitlines()) == 2
