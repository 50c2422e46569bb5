"""Tests for core.runs.artifacts: the run folder's file names, readers and writers, the metrics.json schema
(core.runs.schema), and the one answer to "where are this run's films?"."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.evaluation.metrics import classification_report
from core.runs import artifacts, checks, schema
from core.runs.artifacts import (
    find_dataset_root,
    misclassified_test_rows,
    read_history_csv,
    read_predictions_csv,
    read_split_csv,
    run_dataset_root,
    write_history_csv,
    write_predictions_csv,
    write_split_csv,
)
from core.runs.registry import load_run
from core.runs.schema import ExternalMetrics, Report, RunMetrics

SHIPPED_RUN = Path(__file__).resolve().parents[2] / "models" / "demo-nih-cxr4"


def _run_folder(tmp_path: Path, recorded_root: str | None) -> Path:
    """A finished run folder with a split, recording `recorded_root` as its dataset folder."""
    run_dir = tmp_path / "models" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / artifacts.MODEL_FILE_NAME).write_bytes(b"")
    artifacts.write_json_atomic(run_dir / artifacts.CONFIG_FILE_NAME, {"image_size": 64})
    artifacts.write_json_atomic(run_dir / artifacts.CLASSES_FILE_NAME, ["Normal", "Pneumonia"])
    artifacts.write_json_atomic(run_dir / artifacts.STATUS_FILE_NAME, {"state": "finished"})
    artifacts.write_json_atomic(run_dir / artifacts.DATA_REPORT_FILE_NAME,
                                {"root": recorded_root} if recorded_root else {})
    (run_dir / artifacts.SPLIT_FILE_NAME).write_text("path,label,subset,patient_id,sha256\n")
    return run_dir


# --------------------------------------------------------------------------------------------------
# Where the run's films are
# --------------------------------------------------------------------------------------------------


def test_a_dataset_moved_under_the_data_root_is_found_by_review_and_by_the_export_alike(tmp_path, monkeypatch):
    # The run recorded a folder that no longer exists; a folder of the same name sits under the data root.
    data_root = tmp_path / "data"
    (data_root / "chest-set").mkdir(parents=True)
    monkeypatch.setenv("PARU_DATA_ROOT", str(data_root))
    run_dir = _run_folder(tmp_path, str(tmp_path / "gone" / "chest-set"))
    expected = data_root / "chest-set"
    assert load_run(run_dir).dataset_root() == expected  # What Review uses.
    assert run_dataset_root(run_dir) == expected  # What the export parity check and `split` use.


def test_the_recorded_folder_comes_first_and_an_explicit_folder_wins(tmp_path, monkeypatch):
    recorded = tmp_path / "recorded" / "chest-set"
    recorded.mkdir(parents=True)
    (tmp_path / "data" / "chest-set").mkdir(parents=True)
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "data"))
    run_dir = _run_folder(tmp_path, str(recorded))
    assert find_dataset_root(run_dir) == recorded
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_dataset_root(run_dir, elsewhere) == elsewhere
    assert find_dataset_root(run_dir, tmp_path / "missing") is None  # A named folder is never second-guessed.


def test_unreachable_films_raise_with_the_next_step(tmp_path, monkeypatch):
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "data"))
    run_dir = _run_folder(tmp_path, str(tmp_path / "gone" / "chest-set"))
    assert load_run(run_dir).dataset_root() is None
    with pytest.raises(ValueError, match=r"does not exist on this machine; pass the folder .*\(--data\)"):
        run_dataset_root(run_dir)
    with pytest.raises(ValueError, match=r"does not exist on this machine"):
        run_dataset_root(run_dir, tmp_path / "missing")
    unrecorded = _run_folder(tmp_path / "other", None)
    with pytest.raises(ValueError, match=r"does not say where its dataset is"):
        run_dataset_root(unrecorded)
    (run_dir / artifacts.SPLIT_FILE_NAME).unlink()
    with pytest.raises(ValueError, match=r"has no split.csv"):
        run_dataset_root(run_dir)


def test_a_dataset_under_a_data_root_is_recorded_by_its_name_and_found_under_another_machines_root(
        tmp_path, monkeypatch):
    trained_on = tmp_path / "trainer" / "data"
    (trained_on / "chest-set").mkdir(parents=True)
    (trained_on / "group" / "set-b").mkdir(parents=True)
    monkeypatch.setenv("PARU_DATA_ROOT", str(trained_on))
    assert artifacts.dataset_name(trained_on / "chest-set") == "chest-set"
    assert artifacts.dataset_name(trained_on / "group" / "set-b") == "group/set-b"
    outside = tmp_path / "elsewhere" / "chest-set"
    assert artifacts.dataset_name(outside) == str(outside.resolve())  # Nothing else could find it again.
    assert artifacts.dataset_name(trained_on) == str(trained_on.resolve())  # The root itself has no name under it.
    # Another machine: the same name under its own data roots (the first that has it wins).
    run_dir = _run_folder(tmp_path, "group/set-b")
    first, second = tmp_path / "laptop" / "a", tmp_path / "laptop" / "b"
    (second / "group" / "set-b").mkdir(parents=True)
    monkeypatch.setenv("PARU_DATA_ROOT", f"{first}{os.pathsep}{second}")
    assert artifacts.dataset_root_candidates(run_dir)[:2] == [first / "group" / "set-b", second / "group" / "set-b"]
    assert find_dataset_root(run_dir) == second / "group" / "set-b"
    assert run_dataset_root(run_dir) == second / "group" / "set-b"
    (second / "group" / "set-b").rmdir()
    with pytest.raises(ValueError, match=r"group/set-b does not exist under any data root on this machine"):
        run_dataset_root(run_dir)


def test_a_recorded_name_that_climbs_out_of_the_data_root_is_never_looked_for(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "secret").mkdir()
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "data"))
    run_dir = _run_folder(tmp_path, "../secret")
    assert artifacts.dataset_root_candidates(run_dir) == []
    assert find_dataset_root(run_dir) is None


def test_an_old_run_recording_an_absolute_folder_still_finds_it(tmp_path, monkeypatch):
    recorded = tmp_path / "old-machine" / "chest-set"
    recorded.mkdir(parents=True)
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "data"))
    assert find_dataset_root(_run_folder(tmp_path, str(recorded))) == recorded


# --------------------------------------------------------------------------------------------------
# Readers and writers
# --------------------------------------------------------------------------------------------------


def test_split_csv_round_trip(tmp_path):
    records = [SimpleNamespace(path="Normal/a.png", label="Normal", patient_id="p1", sha256="0" * 64),
               SimpleNamespace(path="Pneumonia/b.png", label="Pneumonia", patient_id=None, sha256="1" * 64)]
    write_split_csv(tmp_path / "split.csv", SimpleNamespace(records=records), np.array(["train", "test"]))
    assert read_split_csv(tmp_path / "split.csv") == [
        {"path": "Normal/a.png", "label": "Normal", "subset": "train", "patient_id": "p1", "sha256": "0" * 64},
        {"path": "Pneumonia/b.png", "label": "Pneumonia", "subset": "test", "patient_id": "", "sha256": "1" * 64},
    ]


def test_predictions_csv_round_trip_and_the_wrong_rows_most_confident_first(tmp_path):
    path = tmp_path / "predictions.csv"
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.45, 0.55]], np.float32)
    write_predictions_csv(path, ["a", "b", "c", "d", "e"], ["Normal", "Normal", "Pneumonia", "Pneumonia", "Normal"],
                          probabilities, ["Normal", "Pneumonia"], ["val", "test", "test", "test", "test"])
    assert path.read_text().splitlines()[0] == "file,label,predicted,p_Normal,p_Pneumonia,subset"
    rows = read_predictions_csv(path, ["Normal", "Pneumonia"])
    assert [row["predicted"] for row in rows] == ["Normal", "Pneumonia", "Pneumonia", "Normal", "Pneumonia"]
    assert rows[2]["probabilities"] == {"Normal": 0.2, "Pneumonia": 0.8}
    assert rows[2]["confidence"] == pytest.approx(0.8)
    # Validation rows never count; d (0.7) before b (0.6) before e (0.55).
    assert [row["file"] for row in misclassified_test_rows(rows)] == ["d", "b", "e"]


def test_history_csv_round_trip(tmp_path):
    rows = [{"epoch": 1, "phase": "head", "loss": 0.9, "val_loss": 1.1},
            {"epoch": 2, "phase": "fine-tune", "loss": 0.5, "val_loss": 0.7, "learning_rate": 1e-4}]
    write_history_csv(tmp_path / "history.csv", rows)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "epoch,phase,learning_rate,loss,val_loss"
    assert read_history_csv(tmp_path / "history.csv") == rows


def test_json_is_written_atomically_and_read_back(tmp_path):
    artifacts.write_json_atomic(tmp_path / "x.json", {"value": np.float32(0.5), "shape": np.arange(2)})
    assert artifacts.read_json(tmp_path / "x.json") == {"value": 0.5, "shape": [0, 1]}
    assert [path.name for path in tmp_path.iterdir()] == ["x.json"]  # No temporary file left behind.
    (tmp_path / "broken.json").write_text("{")
    assert artifacts.read_json(tmp_path / "broken.json", {}) == {}
    assert artifacts.read_status(tmp_path) == {}


# --------------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------------


def test_every_file_name_is_documented_in_the_schema():
    names = {value for key, value in vars(artifacts).items() if key.endswith(("_FILE_NAME", "_DIR_NAME"))}
    assert {"split.csv", "metrics.json", "gate.npz", "perceptual_hashes.json", "exports"} <= names
    undocumented = sorted(name for name in names if name not in artifacts.__doc__)
    assert not undocumented


def test_the_report_typeddict_matches_classification_report():
    report = classification_report([0, 1, 1, 0], [0, 1, 0, 0], ["Normal", "Pneumonia"],
                                   [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]], n_bootstrap=10)
    assert set(report) == set(Report.__annotations__)
    assert set(report["per_class"]["Normal"]) == set(schema.ClassMetrics.__annotations__)
    assert set(report["ci95"]) == set(schema.ConfidenceIntervals.__annotations__)
    assert set(report["clinical_bar"]) == set(schema.ClinicalBar.__annotations__)
    assert set(ExternalMetrics.__annotations__) > set(Report.__annotations__)


@pytest.mark.skipif(not (SHIPPED_RUN / "metrics.json").is_file(), reason="the shipped demo run is not here")
def test_the_shipped_run_metrics_follow_the_run_metrics_typeddict():
    metrics = json.loads((SHIPPED_RUN / "metrics.json").read_text())
    # Sections added later (NotRequired) may be absent from a run evaluated before them.
    assert RunMetrics.__required_keys__ <= set(metrics) <= set(RunMetrics.__annotations__)
    for section, typed in (("training", schema.TrainingSummary), ("validation", schema.ValidationSummary),
                           ("calibration", schema.Calibration)):
        assert set(metrics[section]) == set(typed.__annotations__), section


# --------------------------------------------------------------------------------------------------
# Damaged run files: a clear ValueError (the file, what was expected, what to do), never a traceback
# --------------------------------------------------------------------------------------------------


def _predictions(tmp_path: Path) -> Path:
    path = tmp_path / "predictions.csv"
    write_predictions_csv(path, ["a", "b"], ["Normal", "Pneumonia"], np.array([[0.9, 0.1], [0.3, 0.7]]),
                          ["Normal", "Pneumonia"], ["test", "test"])
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[:text.rindex(",")], "cut short"),  # Cut mid-row.
    (lambda text: text.replace("0.700000", "lots"), "not a number"),
    (lambda text: text.replace("0.700000", "7.0"), "outside [0, 1]"),
    (lambda text: text.replace("p_Pneumonia", "p_Other"), "lacks the columns"),
    (lambda text: text.replace(",Pneumonia,", ",Cat,"), "class this run does not know"),
])
def test_a_damaged_predictions_csv_raises_a_clear_message(tmp_path, damage, message):
    path = _predictions(tmp_path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(ValueError, match="expected") as raised:
        read_predictions_csv(path, ["Normal", "Pneumonia"])
    assert message in str(raised.value) and "predictions.csv" in str(raised.value)


def test_binary_predictions_and_history_files_raise_a_clear_message(tmp_path):
    for name, reader in (("predictions.csv", lambda path: read_predictions_csv(path, ["Normal", "Pneumonia"])),
                         ("history.csv", read_history_csv)):
        path = tmp_path / name
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 50)
        with pytest.raises(ValueError, match=f"{name} is not"):
            reader(path)
    (tmp_path / "history.csv").write_text("epoch,phase,loss\n1,head,0.5\n2,head,lots\n")
    with pytest.raises(ValueError, match="not a number on line 3"):
        read_history_csv(tmp_path / "history.csv")
    (tmp_path / "history.csv").write_text("epoch,phase,loss\n1,head,0.5\x00\n")
    with pytest.raises(ValueError, match="history.csv"):
        read_history_csv(tmp_path / "history.csv")


def test_a_gate_file_that_is_not_an_archive_or_lacks_a_key_raises_a_clear_message(tmp_path):
    path = tmp_path / artifacts.GATE_FILE_NAME
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="gate.npz is not a readable .npz archive"):
        checks.read_npz(path, ["mean", "threshold"])
    np.save(tmp_path / "bare.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a readable"):
        checks.read_npz(tmp_path / "bare.npy", ["mean"])
    np.savez(path, mean=np.zeros(3))
    with pytest.raises(ValueError, match="lacks threshold"):
        checks.read_npz(path, ["mean", "threshold"])
    assert list(checks.read_npz(path, ["mean"])) == ["mean"]


def test_read_json_tolerates_non_utf8_and_the_strict_reader_says_what_is_wrong(tmp_path):
    (tmp_path / "x.json").write_bytes(b'{"a": "\xff"}')
    assert artifacts.read_json(tmp_path / "x.json", {}) == {}
    with pytest.raises(ValueError, match="x.json is not UTF-8 text; expected an object"):
        checks.read_json_strict(tmp_path / "x.json", dict, "an object")
    with pytest.raises(ValueError, match="missing.json is missing"):
        checks.read_json_strict(tmp_path / "missing.json", dict, "an object")
