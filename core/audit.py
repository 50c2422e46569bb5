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

from core.registry import default_models_dir, now_iso

AUDIT_FILE_NAME = "audit.jsonl"


def audit_path(models_dir: str | os.PathLike | None = None) -> Path:
    return Path(models_dir or default_models_dir()) / AUDIT_FILE_NAME


def record(data: bytes, run_id: str, prediction, models_dir: str | os.PathLike | None = None) -> dict:
    """Append one prediction to the audit log and return the entry. `prediction` is a core.predict.Prediction."""
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
