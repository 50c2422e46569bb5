"""Tests for core.runs.review_films without a model: which films are packed, where a film is looked up, and
what the shipped runs carry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.runs import artifacts
from core.runs.artifacts import misclassified_test_rows, read_predictions_csv
from core.runs.registry import load_run
from core.runs.review_films import (
    ATTRIBUTIONS,
    choose_review_rows,
    pack_review_films,
    read_review_manifest,
    review_films_dir,
    run_film,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RUNS = sorted((PROJECT_ROOT / "models").glob("demo-*"))


def _row(file, label, predicted, confidence, subset="test"):
    return {"file": file, "label": label, "predicted": predicted, "confidence": confidence, "subset": subset}


def test_every_misclassified_test_film_and_the_most_confident_right_answer_of_each_class_in_turn():
    rows = [
        _row("N/1.png", "Normal", "Normal", 0.99), _row("N/2.png", "Normal", "Normal", 0.95),
        _row("P/1.png", "Pneumonia", "Pneumonia", 0.90), _row("P/2.png", "Pneumonia", "Pneumonia", 0.97),
        _row("N/3.png", "Normal", "Pneumonia", 0.60), _row("P/3.png", "Pneumonia", "Normal", 0.80),
        _row("N/4.png", "Normal", "Pneumonia", 0.99, subset="val"),  # Not a test film: never packed.
    ]
    chosen = choose_review_rows(rows, correct=3)
    assert [(row["file"], row["kind"]) for row in chosen] == [
        ("P/3.png", "misclassified"), ("N/3.png", "misclassified"),  # Most confident mistake first.
        ("N/1.png", "correct"), ("P/2.png", "correct"), ("N/2.png", "correct")]
    assert [row["file"] for row in choose_review_rows(rows, correct=0)] == ["P/3.png", "N/3.png"]
    assert len(choose_review_rows(rows, correct=10)) == 6  # Never more right answers than there are.


def _film(path: Path, side: int = 40, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (side, side), value).save(path)
    return path


def test_a_film_is_read_from_the_dataset_first_then_from_the_run_s_review_films_and_never_outside(tmp_path):
    run_dir, dataset = tmp_path / "run", tmp_path / "data" / "set"
    packed = _film(review_films_dir(run_dir) / "Normal" / "a.png")
    only_packed = _film(review_films_dir(run_dir) / "Normal" / "b.png")
    in_dataset = _film(dataset / "Normal" / "a.png")
    _film(tmp_path / "secret.png")
    assert run_film(run_dir, dataset, "Normal/a.png") == in_dataset.resolve()
    assert run_film(run_dir, dataset, "Normal/b.png") == only_packed.resolve()
    assert run_film(run_dir, None, "Normal/a.png") == packed.resolve()
    assert run_film(run_dir, None, "Normal/c.png") is None
    assert run_film(run_dir, None, "../../secret.png") is None
    assert run_film(tmp_path / "no-films", None, "Normal/a.png") is None
    assert read_review_manifest(run_dir) is None  # Films without a manifest are not a packed folder.


@pytest.mark.skipif(not SHIPPED_RUNS, reason="no shipped run is here")
def test_a_shipped_run_is_never_packed_again_in_place():
    with pytest.raises(ValueError, match="shipped with Paru"):
        pack_review_films(SHIPPED_RUNS[0])


@pytest.mark.skipif(not SHIPPED_RUNS, reason="no shipped run is here")
@pytest.mark.parametrize("run_dir", SHIPPED_RUNS, ids=lambda path: path.name)
def test_a_shipped_run_records_its_dataset_by_name_and_carries_its_misclassified_test_films(run_dir):
    run = load_run(run_dir)
    recorded = run.data_report["root"]
    assert not Path(recorded).is_absolute() and recorded in ATTRIBUTIONS
    assert run.status.get("demo") is True
    assert not (run_dir / artifacts.EXPORTS_DIR_NAME).exists()
    manifest = read_review_manifest(run_dir)
    assert manifest is not None and manifest["attribution"] == ATTRIBUTIONS[recorded] and not manifest["missing"]
    rows = read_predictions_csv(run_dir / artifacts.PREDICTIONS_FILE_NAME, run.classes)
    packed = {film["path"]: film for film in manifest["films"]}
    assert {row["file"] for row in misclassified_test_rows(rows)} <= set(packed)
    assert sum(film["kind"] == "correct" for film in packed.values()) >= 1
    for path, film in packed.items():
        copy = run_film(run_dir, None, path)
        assert copy is not None and copy.stat().st_size == film["bytes"]
        with Image.open(copy) as image:
            assert max(image.size) <= manifest["max_side"] and image.format == film["format"]
    assert json.loads((run_dir / artifacts.DATA_REPORT_FILE_NAME).read_text())["root"] == recorded
