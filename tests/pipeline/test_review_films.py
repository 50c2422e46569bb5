"""core.runs.review_films on the session's tiny run: the packer, its command, and the Grad-CAM region analysis
read from the packed films when the dataset is gone."""

from __future__ import annotations

import json

from PIL import Image

from conftest import copy_run, dataset_of
from core.cli import main
from core.explain.regions import compute_cam_regions
from core.runs import artifacts
from core.runs.artifacts import misclassified_test_rows, read_predictions_csv
from core.runs.registry import load_run
from core.runs.review_films import pack_review_films, read_review_manifest, run_film


def test_the_packer_copies_every_misclassified_test_film_and_a_few_right_ones_downsized(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    run = load_run(run_dir)
    rows = read_predictions_csv(run_dir / artifacts.PREDICTIONS_FILE_NAME, run.classes)
    wrong = {row["file"] for row in misclassified_test_rows(rows)}
    right = [row for row in rows if row["subset"] == "test" and row["label"] == row["predicted"]]
    manifest = pack_review_films(run_dir, max_side=64, correct=2)
    assert manifest == read_review_manifest(run_dir)
    kinds = {film["path"]: film["kind"] for film in manifest["films"]}
    assert {path for path, kind in kinds.items() if kind == "misclassified"} == wrong
    assert sum(kind == "correct" for kind in kinds.values()) == min(2, len(right))
    assert manifest["missing"] == [] and manifest["max_side"] == 64
    assert manifest["dataset"] == str(dataset_of(tiny_run)) and manifest["attribution"] is None
    for film in manifest["films"]:
        copy = run_dir / artifacts.REVIEW_FILMS_DIR_NAME / film["path"]  # The path predictions.csv gives it.
        with Image.open(copy) as image:
            assert image.format == "PNG" and max(image.size) == 64 and image.mode == "L"
        assert film["bytes"] == copy.stat().st_size
        assert run_film(run_dir, None, film["path"]) == copy.resolve()
        # With the dataset here, its full-size film is read, not the copy.
        assert run_film(run_dir, dataset_of(tiny_run), film["path"]) == (dataset_of(tiny_run) / film["path"]).resolve()
    assert manifest["total_bytes"] == sum(film["bytes"] for film in manifest["films"])
    # Packing again replaces the folder whole.
    again = pack_review_films(run_dir, max_side=64, correct=0)
    assert len(list((run_dir / artifacts.REVIEW_FILMS_DIR_NAME).rglob("*.png"))) == len(again["films"]) == len(wrong)


def test_pack_review_command_and_the_regions_read_from_the_packed_films(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path)
    assert main(["pack-review", "--model", str(run_dir), "--max-side", "64"]) == 0
    out = capsys.readouterr().out
    manifest = read_review_manifest(run_dir)
    assert f"{len(manifest['films'])} review films" in out and artifacts.REVIEW_FILMS_DIR_NAME in out
    assert main(["pack-review", "--model", str(run_dir), "--max-side", "8"]) == 2
    assert "max_side >= 64" in capsys.readouterr().err
    # The dataset is gone: the analysis explains the packed films and says the others are missing.
    report = json.loads((run_dir / artifacts.DATA_REPORT_FILE_NAME).read_text())
    report["root"] = "moved-away"
    (run_dir / artifacts.DATA_REPORT_FILE_NAME).write_text(json.dumps(report))
    run = load_run(run_dir)
    regions = compute_cam_regions(run, None)
    packed = {film["path"] for film in manifest["films"]}
    tested = {row["file"] for row in read_predictions_csv(run_dir / artifacts.PREDICTIONS_FILE_NAME, run.classes)
              if row["subset"] == "test"}
    assert {film["file"] for film in regions["films"]} == packed and set(regions["missing"]) == tested - packed
