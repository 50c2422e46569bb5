"""Overlap with the training films: resized copies found by perceptual hash, hashes recomputed from the
split, and a clear reason when the perceptual check cannot run."""

from __future__ import annotations

import json

from conftest import copy_run


def test_evaluate_folder_counts_resized_copies_of_training_films(tiny_run, copies_folder):
    from core.evaluation.evaluate import evaluate_folder

    folder, train_paths = copies_folder
    overlap = evaluate_folder(tiny_run, folder)["overlap"]
    assert overlap["identical_files"] == 0
    assert overlap["near_duplicates"] == 6
    perceptual = overlap["perceptual"]
    assert perceptual["checked"] and perceptual["threshold"] == 32 and perceptual["bits"] == 256
    assert sorted(match["seen_file"] for match in perceptual["matches"]) == sorted(train_paths)
    assert all(match["distance"] <= 32 for match in perceptual["matches"])


def test_run_hashes_are_computed_from_the_split_when_missing(tiny_run, tmp_path):
    from core.evaluation.overlap import run_hashes
    from core.runs.artifacts import HASHES_FILE_NAME
    from core.runs.registry import load_run

    stored = json.loads((tiny_run / HASHES_FILE_NAME).read_text())
    copy = copy_run(tiny_run, tmp_path)
    (copy / HASHES_FILE_NAME).unlink()
    computed, reason = run_hashes(load_run(copy))
    assert reason is None
    assert computed["films"] == stored["films"]  # Same films, same hashes as at training time.
    assert (copy / HASHES_FILE_NAME).is_file()  # Cached for next time.


def test_overlap_says_when_the_perceptual_check_could_not_run(tiny_run, tmp_path):
    from core.evaluation.overlap import check_overlap
    from core.runs.artifacts import HASHES_FILE_NAME
    from core.runs.registry import load_run

    copy = copy_run(tiny_run, tmp_path)
    (copy / HASHES_FILE_NAME).unlink()
    report = json.loads((copy / "data_report.json").read_text())
    report["root"] = str(tmp_path / "gone")
    (copy / "data_report.json").write_text(json.dumps(report))
    overlap = check_overlap(load_run(copy), ["a.png"], ["0" * 64], {}, ["0" * 64])
    assert overlap["checked"] and overlap["near_duplicates"] == 0
    assert not overlap["perceptual"]["checked"]
    assert "not on this machine" in overlap["perceptual"]["reason"]
