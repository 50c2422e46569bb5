"""The run registry under damage: a damaged run folder is listed as damaged with its reason and never hides
or breaks another run; each damaged file gets a message naming the file, what was expected and what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.runs import artifacts
from core.runs.registry import check_model_outputs, list_runs, load_run, scan_runs

METRICS = {"classes": ["Normal", "Pneumonia"], "n": 4, "accuracy": 0.75, "macro": {"f1": 0.7},
           "ci95": {"accuracy": [0.5, 1.0], "macro_f1": [0.4, 0.9]}, "calibration": {"temperature": 1.3},
           "per_class": {"Normal": {"f1": 0.7}, "Pneumonia": {"f1": 0.7}}}


def _run(models_dir: Path, name: str, finished: str = "2026-01-01T00:00:00+00:00") -> Path:
    run_dir = models_dir / name
    run_dir.mkdir(parents=True)
    (run_dir / artifacts.MODEL_FILE_NAME).write_bytes(b"")
    artifacts.write_json_atomic(run_dir / artifacts.CONFIG_FILE_NAME, {"image_size": 64, "preset": "paper"})
    artifacts.write_json_atomic(run_dir / artifacts.CLASSES_FILE_NAME, ["Normal", "Pneumonia"])
    artifacts.write_json_atomic(run_dir / artifacts.STATUS_FILE_NAME, {"state": "finished", "finished": finished})
    artifacts.write_json_atomic(run_dir / artifacts.METRICS_FILE_NAME, METRICS)
    return run_dir


DAMAGES = {
    "truncated classes.json": (artifacts.CLASSES_FILE_NAME, b'["Normal", "Pneu', "not valid JSON"),
    "non-UTF-8 status.json": (artifacts.STATUS_FILE_NAME, b'{"state": "finished\xff\xfe"}', "not UTF-8"),
    "list status.json": (artifacts.STATUS_FILE_NAME, b'["finished"]', "holds a JSON list"),
    "list config.json": (artifacts.CONFIG_FILE_NAME, b"[64, 64]", "holds a JSON list"),
    "one class": (artifacts.CLASSES_FILE_NAME, b'["Normal"]', "at least two distinct"),
    "repeated classes": (artifacts.CLASSES_FILE_NAME, b'["Normal", "Normal"]', "at least two distinct"),
    "negative temperature": (artifacts.METRICS_FILE_NAME,
                             json.dumps({**METRICS, "calibration": {"temperature": -1}}).encode(), "temperature"),
    "warm temperature": (artifacts.METRICS_FILE_NAME,
                         json.dumps({**METRICS, "calibration": {"temperature": "warm"}}).encode(), "temperature"),
    "ci95 strings": (artifacts.METRICS_FILE_NAME,
                     json.dumps({**METRICS, "ci95": {"accuracy": ["low", "high"]}}).encode(), "ci95.accuracy"),
    "accuracy a string": (artifacts.METRICS_FILE_NAME, json.dumps({**METRICS, "accuracy": "75%"}).encode(),
                          "accuracy"),
    "metrics a list": (artifacts.METRICS_FILE_NAME, b"[]", "holds a JSON list"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_one_damaged_run_is_listed_as_damaged_and_the_good_runs_stay(tmp_path, damage):
    file_name, content, reason = DAMAGES[damage]
    good_old = _run(tmp_path, "good-old", "2026-01-01T00:00:00+00:00")
    good_new = _run(tmp_path, "good-new", "2026-02-01T00:00:00+00:00")
    broken = _run(tmp_path, "broken", "2026-03-01T00:00:00+00:00")
    (broken / file_name).write_bytes(content)

    runs, damaged = scan_runs(tmp_path)
    assert [run.path for run in runs] == [good_new.resolve(), good_old.resolve()]
    assert [run.path for run in list_runs(tmp_path)] == [good_new.resolve(), good_old.resolve()]
    assert [item.run_id for item in damaged] == ["broken"]
    assert reason in damaged[0].reason and file_name in damaged[0].reason
    assert "expected" in damaged[0].reason  # What it should hold, and a next step after it.
    with pytest.raises(ValueError, match="expected"):
        load_run(broken)


def test_folders_that_are_not_runs_and_staging_folders_are_not_listed(tmp_path):
    _run(tmp_path, "good")
    (tmp_path / "notes").mkdir()
    (tmp_path / ".run.partial").mkdir()
    (tmp_path / "audit.jsonl").write_text("{}\n")
    runs, damaged = scan_runs(tmp_path)
    assert [run.run_id for run in runs] == ["good"] and damaged == []
    assert scan_runs(tmp_path / "missing") == ([], [])


def test_a_run_missing_a_required_file_is_damaged_with_the_file_named(tmp_path):
    broken = _run(tmp_path, "broken")
    (broken / artifacts.MODEL_FILE_NAME).unlink()
    _, damaged = scan_runs(tmp_path)
    assert "model.keras" in damaged[0].reason


def test_a_finished_time_of_another_type_does_not_break_the_order(tmp_path):
    _run(tmp_path, "a")
    odd = _run(tmp_path, "b")
    artifacts.write_json_atomic(odd / artifacts.STATUS_FILE_NAME, {"state": "finished", "finished": 12})
    assert sorted(run.run_id for run in list_runs(tmp_path)) == ["a", "b"]


def test_classes_that_do_not_match_the_model_outputs_are_refused(tmp_path):
    run = load_run(_run(tmp_path, "good"))
    check_model_outputs(run, 2)
    with pytest.raises(ValueError, match="names 2 classes but the model has 3 output units"):
        check_model_outputs(run, 3)
