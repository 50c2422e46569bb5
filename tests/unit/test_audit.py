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
