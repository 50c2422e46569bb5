"""The audit log's tables: filtered, flattened, downloadable."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


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


def _prediction(name="film.png", label="Normal", passed=True, error=None):
    from core.serving.gate import GateResult
    from core.serving.predict import Prediction

    if error:
        return Prediction(name, error=error)
    return Prediction(name, label, 0.9, {"Normal": 0.9, "Pneumonia": 0.1},
                      gate=GateResult(passed, None if passed else "This looks like a colour picture."))


def test_audit_log_records_each_prediction_without_the_image_or_the_file_name(tmp_path, monkeypatch):
    from core.runs import audit

    monkeypatch.delenv("PARU_AUDIT_FILE_NAMES", raising=False)
    film = b"\x89PNG fake film bytes"
    audit.record(film, "run-1", _prediction("patient-0042-smith.png"), models_dir=tmp_path)
    audit.record(b"other", "run-1", _prediction("bad.png", error="not an image"), models_dir=tmp_path)
    entries = audit.read(tmp_path)
    assert [e["label"] for e in entries] == ["Normal", None]
    assert entries[0]["sha256"] == hashlib.sha256(film).hexdigest()
    assert entries[0]["gate"]["passed"] is True
    raw = (tmp_path / "audit.jsonl").read_bytes()
    assert film not in raw and b"smith" not in raw and len(raw.splitlines()) == 2
    assert all("file_name" not in entry for entry in entries)

    monkeypatch.setenv("PARU_AUDIT_FILE_NAMES", "1")
    audit.record(film, "run-1", _prediction("../../etc/passwd\x1b[31m"), models_dir=tmp_path)
    assert audit.read(tmp_path)[-1]["file_name"] == "../../etc/passwd[31m"  # Echoed, control characters gone.


def test_a_refused_film_has_no_label_in_the_audit_line_only_the_gate_verdict(tmp_path):
    from core.runs import audit

    entry = audit.record(b"colour photo", "run-1", _prediction("astronaut.jpg", "Pneumonia", passed=False),
                         models_dir=tmp_path)
    logged = audit.read(tmp_path)[0]
    assert logged == entry
    assert logged["label"] is None and logged["confidence"] is None and "probabilities" not in logged
    assert logged["gate"]["passed"] is False and "colour" in logged["gate"]["reason"]
    assert b"Pneumonia" not in (tmp_path / "audit.jsonl").read_bytes()


def test_each_session_records_a_prediction_once_and_two_sessions_twice(tmp_path):
    from core.runs import audit

    first_session, second_session = set(), set()
    prediction = _prediction()
    for _ in range(3):  # Reruns of one page (slider moves) with the same film.
        audit.record_once(first_session, b"film", "run-1", prediction, tmp_path)
    assert audit.record_once(second_session, b"film", "run-1", prediction, tmp_path) is not None
    audit.record_once(first_session, b"another film", "run-1", prediction, tmp_path)
    assert len(audit.read(tmp_path)) == 3


def test_an_unwritable_log_raises_a_clear_error_and_the_prediction_stays_unrecorded(tmp_path, monkeypatch):
    from core.runs import audit

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    session = set()
    monkeypatch.setattr(audit.os, "open", read_only)
    with pytest.raises(audit.AuditLogError, match="could not be written to the audit log .*Read-only file system"):
        audit.record_once(session, b"film", "run-1", _prediction(), tmp_path)
    assert session == set()  # Tried again (and shown again) on the next rerun.
    monkeypatch.undo()
    (tmp_path / "file").write_text("")
    with pytest.raises(audit.AuditLogError, match="Make the folder writable"):
        audit.record(b"film", "run-1", _prediction(), tmp_path / "file" / "models")


FULL_DISK = """
import resource, signal, sys
sys.path.insert(0, sys.argv[1])
from core.runs import audit
from core.serving.predict import Prediction
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # A full disk: writes past the limit fail or come up short.
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
written = failed = 0
for number in range(16):
    try:
        audit.record(bytes([number]), "run-1", Prediction(f"f{number}.png", "Normal", 0.9, {"Normal": 0.9}), sys.argv[2])
        written += 1
    except audit.AuditLogError as error:
        assert "could not be written" in str(error)
        failed += 1
print(written, failed)
"""


def test_a_full_disk_never_leaves_a_half_line_and_every_returned_write_is_readable(tmp_path):
    from core.runs import audit

    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", FULL_DISK, root, str(tmp_path), "2000"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PARU_AUDIT_FILE_NAMES": ""})
    assert done.returncode == 0, done.stderr
    written, failed = map(int, done.stdout.split())
    assert 0 < written < 16 and written + failed == 16
    raw = (tmp_path / "audit.jsonl").read_bytes()
    assert raw.endswith(b"\n") and len(raw.splitlines()) == written
    view = audit.read_view(tmp_path, limit=100)
    assert len(view.entries) == written and view.unreadable == 0
    # Space again: the next line starts on its own line.
    audit.record(b"later", "run-1", _prediction(), tmp_path)
    assert len(audit.read(tmp_path)) == written + 1


def test_damaged_lines_are_counted_not_fatal_and_a_cut_line_is_never_glued_to_the_next(tmp_path):
    from core.runs import audit

    good = json.dumps({"time": "t1", "sha256": "a" * 64, "run_id": "run-a", "gate": None, "error": "not an image"})
    (tmp_path / "audit.jsonl").write_bytes(b"42\n" + b"\xff\xfe not utf-8\n" + good.encode() + b"\n[1, 2]\n"
                                           + b'{"time": "t2", "sha')  # The last line was cut by a crash.
    audit.record(b"film", "run-a", _prediction(), tmp_path)
    view = audit.read_view(tmp_path, limit=100)
    assert [entry.get("time") for entry in view.entries][0] == "t1" and len(view.entries) == 2
    assert view.unreadable == 4 and view.total_lines == 6 and not view.older
    assert len(audit.read(tmp_path)) == 2


def test_table_rows_have_one_type_per_column_for_a_table_library():
    from core.runs import audit

    pyarrow = pytest.importorskip("pyarrow")
    entries = _entries() + [{"time": 5, "run_id": "run-c", "gate": {"passed": "yes"}, "confidence": "high",
                             "label": 3, "error": None}, {}]
    rows = audit.table_rows(entries)
    pyarrow.Table.from_pylist(rows)  # Raised "Could not convert '' ... gate_passed" with mixed types.
    for column in audit.AUDIT_COLUMNS:
        kinds = {type(row[column]) for row in rows} - {type(None)}
        assert len(kinds) == 1, (column, kinds)


def test_a_big_log_is_viewed_from_its_tail_and_rotates_at_its_size(tmp_path, monkeypatch):
    from core.runs import audit

    line = json.dumps({"time": "t", "sha256": "a" * 64, "run_id": "run-a", "label": "Normal"}).encode() + b"\n"
    (tmp_path / "audit.jsonl").write_bytes(line * 400_000)
    started = time.perf_counter()
    view = audit.read_view(tmp_path, limit=200)
    assert time.perf_counter() - started < 1.0
    assert len(view.entries) == 200 and view.older and view.total_lines == 400_000 and view.unreadable == 0

    monkeypatch.setenv("PARU_AUDIT_MAX_BYTES", "4096")
    for number in range(40):
        audit.record(bytes([number]), "run-b", _prediction(), tmp_path)
    rotated = audit.rotated_logs(tmp_path)
    assert rotated and (tmp_path / "audit.jsonl").stat().st_size <= 4096
    lines = sum(len(path.read_bytes().splitlines()) for path in [*rotated, tmp_path / "audit.jsonl"])
    assert lines == 400_000 + 40  # Nothing lost: the old log is kept beside the new one.


def test_concurrent_writers_lose_no_line(tmp_path, monkeypatch):
    from core.runs import audit

    monkeypatch.setenv("PARU_AUDIT_MAX_BYTES", "20000")  # Rotations happen while they write.
    prediction = _prediction()

    def write(worker):
        for number in range(25):
            audit.record(f"{worker}-{number}".encode(), "run-1", prediction, tmp_path)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = [entry for path in [*audit.rotated_logs(tmp_path), audit.audit_path(tmp_path)]
               for entry in map(audit.parse_line, path.read_bytes().splitlines())]
    assert None not in entries and len(entries) == 200
    assert len({entry["sha256"] for entry in entries}) == 200


def test_audit_csv_neutralises_spreadsheet_formulas():
    from core.runs import audit

    rows = audit.table_rows([{"time": "t", "file_name": "=HYPERLINK(\"http://x\")", "run_id": "r"}])
    assert "'=HYPERLINK" in audit.to_csv(rows).decode()
    # The same rule as the Predict page's CSV: a leading tab or carriage return too, control characters dropped.
    for name, cell in (("\t=1+1.png", "'\t=1+1.png"), ("\r=1.png", "'=1.png"), ("a\x07b.png", "ab.png")):
        text = audit.to_csv(audit.table_rows([{"time": "t", "file_name": name, "run_id": "r"}])).decode()
        assert next(csv.DictReader(io.StringIO(text)))["file_name"] == cell, name
