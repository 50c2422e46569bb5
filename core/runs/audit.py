"""The audit trail: one JSON line per prediction the app makes, never the image itself.

Each line: {"time", "sha256" (of the uploaded bytes), "run_id", "file_name", "label", "confidence",
"probabilities", "gate": {"passed", "reason"}, "error"}. The log lives at models/audit.jsonl (or beside
$PARU_MODELS_DIR's runs) and is appended to with one write per line, so concurrent sessions don't interleave.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from core.runs.artifacts import now_iso
from core.settings import default_models_dir

AUDIT_FILE_NAME = "audit.jsonl"


def audit_path(models_dir: str | os.PathLike | None = None) -> Path:
    return Path(models_dir or default_models_dir()) / AUDIT_FILE_NAME


def record(data: bytes, run_id: str, prediction, models_dir: str | os.PathLike | None = None) -> dict:
    """Append one prediction to the audit log and return the entry. `prediction` is a core.serving.predict.Prediction."""
    entry = {
        "time": now_iso(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "run_id": run_id,
        # The name is only echoed (control characters removed), never used as a path.
        "file_name": "".join(c for c in str(prediction.file) if c.isprintable())[:200],
        "label": prediction.label,
        "confidence": prediction.confidence,
        "probabilities": prediction.probabilities,
        "gate": prediction.gate.to_json() if prediction.gate is not None else None,
        "error": prediction.error,
    }
    path = audit_path(models_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return entry


def read(models_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """Entries of the audit log, newest last (the last `limit` when given). Damaged lines are skipped."""
    path = audit_path(models_dir)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries[-limit:] if limit else entries


AUDIT_COLUMNS = ("time", "sha256", "run_id", "file_name", "label", "confidence", "gate_passed", "gate_reason",
                 "error")


def table_rows(entries: list[dict], run_id: str | None = None) -> list[dict]:
    """Audit entries flattened for a table or CSV, newest first, optionally only those of one run.

    Each row has AUDIT_COLUMNS: the gate's {"passed", "reason"} becomes gate_passed / gate_reason (empty
    when the entry has no gate). The probabilities stay in the JSONL download only.
    """
    rows = []
    for entry in reversed(entries):
        if run_id is not None and entry.get("run_id") != run_id:
            continue
        gate = entry.get("gate") if isinstance(entry.get("gate"), dict) else {}
        rows.append({
            "time": entry.get("time", ""), "sha256": entry.get("sha256", ""), "run_id": entry.get("run_id", ""),
            "file_name": entry.get("file_name", ""), "label": entry.get("label") or "",
            "confidence": entry.get("confidence"),
            "gate_passed": gate.get("passed", ""), "gate_reason": gate.get("reason") or "",
            "error": entry.get("error") or "",
        })
    return rows


def run_ids(entries: list[dict]) -> list[str]:
    """The run ids that occur in the log, sorted."""
    return sorted({str(entry.get("run_id")) for entry in entries if entry.get("run_id")})


def to_jsonl(entries: list[dict]) -> bytes:
    """Entries as JSON Lines bytes, one object per line, in log order."""
    return "".join(json.dumps(entry) + "\n" for entry in entries).encode()


def to_csv(rows: list[dict]) -> bytes:
    """`table_rows` output as CSV bytes with AUDIT_COLUMNS as header."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AUDIT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()
