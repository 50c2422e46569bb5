"""Beyond the paper (issue #6): perceptual-hash overlap, Grad-CAM regions, reliability before/after
temperature scaling, the audit log's tables and the model card's review section."""

from __future__ import annotations

import csv
import glob
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT, SHARED_DATA, film_with_blob

NIH = SHARED_DATA / "nih-cxr4"


def _jpeg_copy(source: Path, target: Path, side: int, quality: int = 85) -> Path:
    """A resized, re-encoded copy of a film: the near-duplicate that byte hashes cannot see."""
    image = Image.open(source).convert("L")
    image = image.resize((side, max(1, side * image.height // image.width)), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, "JPEG", quality=quality)
    return target


def _encoded(image: Image.Image, side: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.resize((side, max(1, side * image.height // image.width)), Image.Resampling.LANCZOS).save(
        buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


# --------------------------------------------------------------------------------------------------
# Perceptual hash
# --------------------------------------------------------------------------------------------------


def test_perceptual_hash_is_256_bits_and_rejects_non_images():
    from core.data.scan import PERCEPTUAL_HASH_BITS, hamming_distances, perceptual_hash

    film = film_with_blob(0, np.random.default_rng(0))
    value = perceptual_hash(film)
    assert len(value) == PERCEPTUAL_HASH_BITS // 4 and int(value, 16) >= 0
    assert perceptual_hash(film[:, :, np.newaxis]) == value
    assert hamming_distances([value], [value])[0, 0] == 0
    with pytest.raises(ValueError, match="expected one decoded grayscale film"):
        perceptual_hash(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="hex characters"):
        hamming_distances(["abc"], [value])


def test_hamming_distances_count_differing_bits_and_nearest_finds_the_closest():
    from core.data.scan import PERCEPTUAL_HASH_BITS, hamming_distances, nearest_hashes

    zero = "0" * 64
    one_bit = "0" * 63 + "1"
    five_bits = "f" + "0" * 62 + "1"
    all_bits = "f" * 64
    assert hamming_distances([zero], [one_bit, five_bits, all_bits]).tolist() == [[1, 5, 256]]
    distances, indices = nearest_hashes([all_bits, zero], [one_bit, five_bits])
    assert distances.tolist() == [251, 1] and indices.tolist() == [1, 0]
    distances, indices = nearest_hashes([zero], [])
    assert distances.tolist() == [PERCEPTUAL_HASH_BITS + 1] and indices.tolist() == [-1]


@pytest.mark.skipif(not NIH.is_dir(), reason="needs the real films in ../shared/data/nih-cxr4")
def test_threshold_catches_resized_copies_and_never_matches_distinct_real_films():
    """The threshold's evidence: every resized/re-encoded copy matches, no two distinct films do.

    Measured (224 px, threshold 32 of 256 bits): copies 300 px JPEG q85 at most 8 bits from their
    original, 128 px JPEG q50 at most 14; the closest distinct nih-cxr4 pair 62 bits apart, so 0 false
    matches in 26,565 pairs (and 0 in 322,803 pediatric-pneumonia pairs, closest 50 bits).
    """
    from core.data.scan import NEAR_DUPLICATE_DISTANCE, hamming_distances, perceptual_hashes
    from core.imaging.loader import load_image

    files = sorted(glob.glob(str(NIH / "*" / "*.png")))
    assert len(files) >= 200
    originals = perceptual_hashes(np.stack([load_image(file, 224) for file in files]))
    pairwise = hamming_distances(originals, originals)[np.triu_indices(len(files), 1)]
    false_match_rate = float(np.mean(pairwise <= NEAR_DUPLICATE_DISTANCE))
    print(f"\n{len(pairwise)} distinct pairs: closest {pairwise.min()} bits, false-match rate {false_match_rate}")
    assert false_match_rate == 0.0
    assert pairwise.min() > NEAR_DUPLICATE_DISTANCE + 16  # A wide margin, not a lucky one.
    for side, quality, margin in ((300, 85, 16), (128, 50, 8)):
        copies = perceptual_hashes(np.stack([load_image(_encoded(Image.open(file).convert("L"), side, quality), 224)
                                             for file in files]))
        distances = np.diag(hamming_distances(originals, copies))
        print(f"copies {side} px q{quality}: largest distance {distances.max()}")
        assert distances.max() <= NEAR_DUPLICATE_DISTANCE - margin


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir(), reason="needs the real films in ../shared/data/samples")
def test_demo_run_finds_its_training_films_among_the_256_px_samples():
    """samples/ holds 256 px copies of 40 nih-cxr4 films: no byte is identical to the demo run's 512 px
    originals, yet every one the run trained or validated on is found, and none of its test films."""
    from core.data.scan import decode_in_chunks, perceptual_hashes, read_split_csv
    from core.evaluation.evaluate import check_overlap
    from core.runs.registry import load_run

    run = load_run(PROJECT_ROOT / "models" / "demo-nih-cxr4-paper")
    subset_of = {row["path"]: row["subset"] for row in read_split_csv(run.path / "split.csv")}
    root = SHARED_DATA / "samples"
    files, digests, film_hashes = [], [], []
    for paths, images, _, chunk_digests in decode_in_chunks(sorted(root.glob("*/*.png")), 224):
        files += [path.relative_to(root).as_posix() for path in paths]
        digests += chunk_digests
        film_hashes += perceptual_hashes(images)
    overlap = check_overlap(run, files, digests, {}, film_hashes)
    seen = sorted(file for file in files if subset_of.get(file) in ("train", "val"))
    assert overlap["identical_files"] == 0
    assert overlap["near_duplicates"] == len(seen) == 33
    assert sorted(match["file"] for match in overlap["perceptual"]["matches"]) == seen
    assert all(match["file"] == match["seen_file"] for match in overlap["perceptual"]["matches"])


@pytest.fixture(scope="module")
def copies_folder(tmp_path_factory, tiny_run):
    """Resized JPEG copies of 6 training films and 4 test films of the tiny run, in class folders."""
    from core.data.scan import read_split_csv

    root = Path(json.loads((tiny_run / "data_report.json").read_text())["root"])
    rows = read_split_csv(tiny_run / "split.csv")
    folder = tmp_path_factory.mktemp("external") / "copies"
    train = [row for row in rows if row["subset"] == "train"][:6]
    test = [row for row in rows if row["subset"] == "test"][:4]
    for row in train + test:
        _jpeg_copy(root / row["path"], folder / row["label"] / (Path(row["path"]).stem + ".jpg"), 72)
    return folder, [row["path"] for row in train]


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
    from core.evaluation.evaluate import HASHES_FILE_NAME, run_hashes
    from core.runs.registry import load_run

    stored = json.loads((tiny_run / HASHES_FILE_NAME).read_text())
    copy = _copy_run(tiny_run, tmp_path)
    (copy / HASHES_FILE_NAME).unlink()
    computed, reason = run_hashes(load_run(copy))
    assert reason is None
    assert computed["films"] == stored["films"]  # Same films, same hashes as at training time.
    assert (copy / HASHES_FILE_NAME).is_file()  # Cached for next time.


def test_overlap_says_when_the_perceptual_check_could_not_run(tiny_run, tmp_path):
    from core.evaluation.evaluate import HASHES_FILE_NAME, check_overlap
    from core.runs.registry import load_run

    copy = _copy_run(tiny_run, tmp_path)
    (copy / HASHES_FILE_NAME).unlink()
    report = json.loads((copy / "data_report.json").read_text())
    report["root"] = str(tmp_path / "gone")
    (copy / "data_report.json").write_text(json.dumps(report))
    overlap = check_overlap(load_run(copy), ["a.png"], ["0" * 64], {}, ["0" * 64])
    assert overlap["checked"] and overlap["near_duplicates"] == 0
    assert not overlap["perceptual"]["checked"]
    assert "not on this machine" in overlap["perceptual"]["reason"]


def test_cli_evaluate_prints_the_perceptual_check(tiny_run, copies_folder):
    folder, _ = copies_folder
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", "--model", str(tiny_run), "--data", str(folder)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6 resized or re-encoded copies of them (perceptual hash)" in result.stdout
    assert "perceptual check: 6 near-duplicates" in result.stdout


# --------------------------------------------------------------------------------------------------
# Grad-CAM regions
# --------------------------------------------------------------------------------------------------


def _rows(n_right: int, n_wrong: int) -> list[dict]:
    rows = [{"file": f"r{i}.png", "label": "Normal", "predicted": "Normal", "confidence": 0.9, "subset": "test"}
            for i in range(n_right)]
    rows += [{"file": f"w{i}.png", "label": "Normal", "predicted": "Pneumonia", "confidence": 0.5 + i / 100,
              "subset": "test"} for i in range(n_wrong)]
    return rows + [{"file": "v.png", "label": "Normal", "predicted": "Normal", "confidence": 0.9, "subset": "val"}]


def test_select_cam_films_is_bounded_and_balanced():
    from core.runs.review import select_cam_films

    assert len(select_cam_films(_rows(5, 2), max_films=10)) == 7  # Small test set: every test film.
    chosen = select_cam_films(_rows(100, 8), max_films=10)
    assert len(chosen) == 10
    wrong = [row for row in chosen if row["label"] != row["predicted"]]
    assert [row["file"] for row in wrong] == ["w3.png", "w4.png", "w5.png", "w6.png", "w7.png"]  # Most confident.
    assert select_cam_films(_rows(100, 8), max_films=10) == chosen  # Seeded.
    assert len(select_cam_films(_rows(100, 0), max_films=10)) == 10
    with pytest.raises(ValueError, match="at least 2"):
        select_cam_films(_rows(3, 3), max_films=1)


def test_summarise_cam_regions_means_and_flags():
    from core.runs.review import summarise_cam_regions

    films = [
        {"file": "a", "label": "N", "predicted": "N", "central": 0.8, "border": 0.2, "corners": 0.0},
        {"file": "b", "label": "N", "predicted": "N", "central": 0.6, "border": 0.4, "corners": 0.1},
        {"file": "c", "label": "N", "predicted": "P", "central": 0.1, "border": 0.9, "corners": 0.5},
    ]
    summary = summarise_cam_regions(films)
    assert summary["correct"]["n"] == 2 and summary["correct"]["mean_border"] == pytest.approx(0.3)
    assert summary["wrong"]["mean_corners"] == pytest.approx(0.5)
    assert [film["file"] for film in summary["flagged"]] == ["c"] and summary["n_flagged"] == 1
    assert summarise_cam_regions([])["wrong"]["mean_border"] is None


def test_compute_cam_regions_writes_the_cache_and_the_card(tiny_run, tmp_path):
    from core.runs.registry import load_run
    from core.runs.review import CAM_REGIONS_FILE_NAME, compute_cam_regions, load_cam_regions

    copy = _copy_run(tiny_run, tmp_path)
    run = load_run(copy)
    assert load_cam_regions(copy) is None
    result = compute_cam_regions(run, run.dataset_root(), max_films=6)
    assert 2 <= result["n"] <= 6 and not result["missing"]  # Bounded: at most 3 wrong and as many right.
    for film in result["films"]:
        assert film["central"] + film["border"] == pytest.approx(1.0) or film["border"] == 0.0
        assert 0.0 <= film["corners"] <= film["border"] + 1e-9
    assert result["uniform"]["border"] == pytest.approx(0.51, abs=0.03)
    assert load_cam_regions(copy)["films"] == json.loads((copy / CAM_REGIONS_FILE_NAME).read_text())["films"]
    assert "Grad-CAM mass on the image border" in (copy / "model_card.md").read_text()


# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------


def test_reliability_before_after_by_hand():
    from core.evaluation.metrics import reliability_before_after

    probabilities = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    curves = reliability_before_after([0, 1, 1, 0], probabilities, temperature=1.0, n_bins=5)
    assert curves["before"]["count"] == curves["after"]["count"]
    assert curves["before"]["ece"] == pytest.approx(curves["after"]["ece"])  # T = 1 changes nothing.
    # Bins (0.4, 0.6], (0.6, 0.8], (0.8, 1]: confidences 0.6 | 0.8, 0.7 | 0.9; right: yes | no, yes | yes.
    assert curves["before"]["count"] == [0, 0, 1, 2, 1]
    assert curves["before"]["accuracy"][2:] == [1.0, 0.5, 1.0]
    assert curves["before"]["ece"] == pytest.approx((0.4 + 2 * 0.25 + 0.1) / 4)
    softened = reliability_before_after([0, 1, 1, 0], probabilities, temperature=2.0, n_bins=5)
    assert softened["after"]["ece"] < softened["before"]["ece"]
    assert sum(softened["after"]["count"]) == 4


# --------------------------------------------------------------------------------------------------
# Audit log tables
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Model card: failure modes seen in review
# --------------------------------------------------------------------------------------------------


def test_review_tags_rewrite_the_model_card(tiny_run, tmp_path):
    from core.runs.review import save_tag

    copy = _copy_run(tiny_run, tmp_path)
    before = (copy / "model_card.md").read_text()
    assert "Failure modes seen in review" not in before
    save_tag(copy, "Normal/Nor_001.png", "label error", "Looks like  pneumonia\nto me",
             label="Normal", predicted="Pneumonia")
    save_tag(copy, "Cardiomegaly/Car_002.png", "label error", "", label="Cardiomegaly", predicted="Normal")
    save_tag(copy, "Pneumonia/Pne_003.png", "image quality", "", label="Pneumonia", predicted="Normal")
    card = (copy / "model_card.md").read_text()
    assert card.startswith(before.rstrip("\n"))  # The rest of the card is rewritten unchanged.
    assert "## Failure modes seen in review" in card
    assert "| label error | 2 | Cardiomegaly -> Normal (1), Normal -> Pneumonia (1) |" in card
    assert "| image quality | 1 | Pneumonia -> Normal (1) |" in card
    assert "- `Normal/Nor_001.png` (label error): Looks like pneumonia to me" in card
    # Untagging every film removes the section again.
    for file in ("Normal/Nor_001.png", "Cardiomegaly/Car_002.png", "Pneumonia/Pne_003.png"):
        save_tag(copy, file, "untagged", "")
    assert "Failure modes seen in review" not in (copy / "model_card.md").read_text()


def test_save_tag_without_a_run_still_saves(tmp_path):
    from core.runs.review import load_tags, save_tag

    save_tag(tmp_path, "a.png", "ambiguous", "unclear")
    assert load_tags(tmp_path)["a.png"]["tag"] == "ambiguous"
    assert not (tmp_path / "model_card.md").exists()
