"""The audit trail: one JSON line per prediction the app makes, never the image itself.

Each line is a JSON object: {"time", "sha256" (of the uploaded bytes), "run_id", "engine", "gate" (the gate's
verdict, or null), "error" (why the film could not be used, or null), "label", "confidence",
"probabilities"}, plus "file_name" only when $PARU_AUDIT_FILE_NAMES is set (names often carry patient
identifiers, so by default only the SHA-256 ties a line to a file). A film the gate refused has "label" and
"confidence" null and no "probabilities": the log never holds a diagnosis the page did not show.

The log lives at models/audit.jsonl (or in $PARU_MODELS_DIR). Each line is appended by one write of the whole
line, under an exclusive lock on the file, and checked: a short write (a full disk) is cut back off and
raises AuditLogError, so a half line is never left for the next one to be glued to. When the log would grow
past $PARU_AUDIT_MAX_BYTES it is renamed to `audit-<time>.jsonl` beside it (kept, never deleted) and a new
one is started. The page reads only the tail of the current log (`read_view`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import MutableSet
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.csvsafe import neutralise
from core.runs.artifacts import now_iso
from core.runs.checks import is_number
from core.settings import audit_file_names, audit_max_bytes, default_models_dir

AUDIT_FILE_NAME = "audit.jsonl"
ROTATED_PREFIX = "audit-"
DEFAULT_VIEW_LINES = 200
_BLOCK = 64 * 1024


class AuditLogError(OSError):
    """A prediction could not be written to the audit log (the message says where and what to do)."""


def audit_path(models_dir: str | os.PathLike | None = None) -> Path:
    return Path(models_dir or default_models_dir()) / AUDIT_FILE_NAME


def make_entry(data: bytes, run_id: str, prediction, include_file_name: bool | None = None) -> dict:
    """The audit line of one prediction (a core.serving.predict.Prediction); see the module docstring."""
    gate = prediction.gate.to_json() if prediction.gate is not None else None
    refused = prediction.error is not None or (gate is not None and not gate.get("passed"))
    entry = {
        "time": now_iso(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "run_id": run_id,
        "engine": getattr(prediction, "engine", "") or "",
        "gate": gate,
        "error": prediction.error,
        "label": None if refused else prediction.label,
        "confidence": None if refused else prediction.confidence,
    }
    if not refused:
        entry["probabilities"] = prediction.probabilities
    if audit_file_names() if include_file_name is None else include_file_name:
        # Only echoed (control characters removed), never used as a path.
        entry["file_name"] = "".join(c for c in str(prediction.file) if c.isprintable())[:200]
    return entry


def record(data: bytes, run_id: str, prediction, models_dir: str | os.PathLike | None = None) -> dict:
    """Append one prediction to the audit log and return the entry.

    Raises AuditLogError when the line could not be written whole (read-only folder, full disk, ...).
    """
    entry = make_entry(data, run_id, prediction)
    append_line(audit_path(models_dir), (json.dumps(entry) + "\n").encode())
    return entry


def record_once(recorded: MutableSet[str], data: bytes, run_id: str, prediction,
                models_dir: str | os.PathLike | None = None) -> dict | None:
    """`record`, unless `recorded` (one session's memory, e.g. a set in st.session_state) already holds this
    prediction (same run, bytes and name). Returns the entry, or None when it was recorded before.

    A prediction is marked recorded only once its line is written, so a failed write is tried again (and
    raises again) on the next rerun instead of being forgotten."""
    key = hashlib.sha256(f"{run_id}\0{prediction.file}\0".encode() + data).hexdigest()
    if key in recorded:
        return None
    entry = record(data, run_id, prediction, models_dir)
    recorded.add(key)
    return entry


def append_line(path: Path, line: bytes) -> None:
    """Append `line` (ending in a newline) to the log with one write under an exclusive lock, rotating the
    log first when it would pass audit_max_bytes(); AuditLogError when it cannot be written whole."""
    fd = None
    size = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path)
        size = os.fstat(fd).st_size
        if size and size + len(line) > audit_max_bytes():
            os.rename(path, _rotated_name(path))
            os.close(fd)
            fd = _open_locked(path)
            size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # A line cut by a crash stays alone (one unreadable line), never glued to this.
        written = os.write(fd, line)
        if written != len(line):
            os.ftruncate(fd, size)
            raise OSError(28, f"only {written} of {len(line)} bytes could be written (is the disk full?)")
    except OSError as error:
        if fd is not None:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
        raise AuditLogError(
            f"This prediction could not be written to the audit log {path} ({error.strerror or error}). Make "
            "the folder writable or free disk space (or set PARU_MODELS_DIR to a writable folder); until then "
            "predictions are not recorded."
        ) from None
    finally:
        if fd is not None:
            os.close(fd)  # Also releases the lock.


def _open_locked(path: Path) -> int:
    """An O_APPEND descriptor of the current log at `path`, exclusively locked (reopened when another
    process rotated the log while this one waited for the lock)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _rotated_name(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{ROTATED_PREFIX}{stamp}.jsonl")
    number = 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{ROTATED_PREFIX}{stamp}-{number}.jsonl")
    return candidate


def rotated_logs(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """The older logs set aside by rotation, oldest first."""
    folder = audit_path(models_dir).parent
    return sorted(folder.glob(f"{ROTATED_PREFIX}*.jsonl")) if folder.is_dir() else []


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass
class AuditView:
    """The newest lines of the current log: `entries` oldest first, `unreadable` lines among them skipped
    (not a JSON object, or not UTF-8), `total_lines` in the current log, `older` whether lines before the
    window exist (the full log is a download away)."""

    path: Path
    entries: list[dict] = field(default_factory=list)
    unreadable: int = 0
    total_lines: int = 0
    older: bool = False


def read_view(models_dir: str | os.PathLike | None = None, limit: int = DEFAULT_VIEW_LINES) -> AuditView:
    """The last `limit` lines of the current log, read from its end (the cost grows with `limit`, not with
    the log)."""
    path = audit_path(models_dir)
    view = AuditView(path)
    try:
        with open(path, "rb") as handle:
            lines, view.older = _tail_lines(handle, max(1, int(limit)))
            view.total_lines = _count_lines(handle)
    except FileNotFoundError:
        return view
    for raw in lines:
        entry = parse_line(raw)
        if entry is None:
            view.unreadable += 1
        else:
            view.entries.append(entry)
    return view


def read(models_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """Entries of the current log, oldest first (the last `limit` lines when given). Unreadable lines are
    skipped (`read_view` counts them)."""
    path = audit_path(models_dir)
    if limit:
        return read_view(models_dir, limit).entries
    try:
        with open(path, "rb") as handle:
            return [entry for raw in handle if (entry := parse_line(raw)) is not None]
    except FileNotFoundError:
        return []


def parse_line(raw: bytes) -> dict | None:
    """One log line as an object, or None for a blank line, bytes that are not UTF-8 JSON, or JSON that is
    not an object (`42`)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        entry = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _tail_lines(handle, limit: int) -> tuple[list[bytes], bool]:
    """The last `limit` non-blank lines of a binary file and whether earlier lines exist."""
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    chunks: list[bytes] = []
    position, newlines = end, 0
    while position > 0 and newlines <= limit:
        step = min(_BLOCK, position)
        position -= step
        handle.seek(position)
        chunks.append(handle.read(step))
        newlines += chunks[-1].count(b"\n")
    data = b"".join(reversed(chunks))
    lines = [line for line in data.split(b"\n") if line.strip()]
    if position > 0:
        lines = lines[1:]  # The first piece may be the end of an earlier line.
    older = position > 0 or len(lines) > limit
    return lines[-limit:], older


def _count_lines(handle) -> int:
    handle.seek(0)
    count, last = 0, b"\n"
    while chunk := handle.read(1024 * 1024):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


# --------------------------------------------------------------------------------------------------
# Tables and downloads
# --------------------------------------------------------------------------------------------------

AUDIT_COLUMNS = ("time", "sha256", "run_id", "file_name", "label", "confidence", "gate_passed", "gate_reason",
                 "error")


def _text(value) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def table_rows(entries: list[dict], run_id: str | None = None) -> list[dict]:
    """Audit entries flattened for a table or CSV, newest first, optionally only those of one run.

    Each row has AUDIT_COLUMNS with one type per column whatever the line held (so a table library never
    meets mixed types): text columns str ("" when absent), confidence a float or None, gate_passed True,
    False or None (no gate). The probabilities stay in the JSONL download only.
    """
    rows = []
    for entry in reversed(entries):
        if run_id is not None and entry.get("run_id") != run_id:
            continue
        gate = entry.get("gate") if isinstance(entry.get("gate"), dict) else {}
        passed = gate.get("passed")
        confidence = entry.get("confidence")
        rows.append({
            "time": _text(entry.get("time")), "sha256": _text(entry.get("sha256")),
            "run_id": _text(entry.get("run_id")), "file_name": _text(entry.get("file_name")),
            "label": _text(entry.get("label")),
            "confidence": float(confidence) if is_number(confidence) else None,
            "gate_passed": passed if isinstance(passed, bool) else None,
            "gate_reason": _text(gate.get("reason")), "error": _text(entry.get("error")),
        })
    return rows


def run_ids(entries: list[dict]) -> list[str]:
    """The run ids that occur in the log, sorted."""
    return sorted({str(entry.get("run_id")) for entry in entries if entry.get("run_id")})


def to_jsonl(entries: list[dict]) -> bytes:
    """Entries as JSON Lines bytes, one object per line, in log order."""
    return "".join(json.dumps(entry) + "\n" for entry in entries).encode()


def to_csv(rows: list[dict]) -> bytes:
    """`table_rows` output as CSV bytes with AUDIT_COLUMNS as header, every cell neutralised
    (core.csvsafe.neutralise: no spreadsheet runs a file name as a formula)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AUDIT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({key: neutralise(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue().encode()
