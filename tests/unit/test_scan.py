"""Dataset scanning: folder-name aliases, the Kaggle pre-split layout, skipped files with reasons,
impossible datasets, and the perceptual hash that finds resized copies."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import film_with_blob, make_dataset


def test_folder_names_people_download_map_to_the_paper_classes(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=3, class_folders=("NORMAL", "PNEUMONIA", "No Finding_extra"))
    # "No Finding_extra" is not an alias: it stays its own class, so aliases must be exact.
    scan = scan_dataset(tmp_path, image_size=64)
    assert scan.class_names == ["Normal", "Pneumonia", "No Finding_extra"]
    (tmp_path / "No Finding_extra").rename(tmp_path / "No Finding")
    scan = scan_dataset(tmp_path, image_size=64)
    # NORMAL and No Finding both mean Normal; the generated films differ, so nothing is ambiguous.
    assert scan.class_counts()["Normal"] == 6


def test_kaggle_presplit_layout_keeps_test_and_carves_validation_from_train(tmp_path):
    from core.data.scan import assign_subsets, scan_dataset

    make_dataset(tmp_path / "train", per_class=10, class_folders=("NORMAL", "PNEUMONIA"), seed=1)
    make_dataset(tmp_path / "test", per_class=4, class_folders=("NORMAL", "PNEUMONIA"), seed=2)
    scan = scan_dataset(tmp_path, image_size=64)
    assert scan.layout == "presplit"
    subsets = assign_subsets(scan, seed=0)
    given = np.array([record.given_subset for record in scan.records])
    assert set(subsets[given == "test"]) == {"test"}
    assert set(subsets[given == "train"]) == {"train", "val"}
    assert (subsets == "val").sum() >= 2


def test_corrupt_and_unsupported_files_are_skipped_with_a_reason_not_fatal(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=4, class_folders=("Normal", "Pneumonia"))
    (tmp_path / "Normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (tmp_path / "Normal" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Pneumonia" / "notes.txt").write_text("not a film")
    scan = scan_dataset(tmp_path, image_size=64)
    reasons = {item["path"]: item["reason"] for item in scan.skipped}
    assert set(reasons) == {"Normal/broken.png", "Normal/empty.jpg", "Pneumonia/notes.txt"}
    assert "unsupported file type '.txt'" in reasons["Pneumonia/notes.txt"]
    assert "empty" in reasons["Normal/empty.jpg"]
    assert len(scan.records) == 8 and scan.images.shape == (8, 64, 64, 1)


def test_the_same_bytes_under_two_classes_are_skipped_as_ambiguous(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=4, class_folders=("Normal", "Pneumonia"))
    source = tmp_path / "Normal" / "Nor_000.png"
    (tmp_path / "Pneumonia" / "copy.png").write_bytes(source.read_bytes())
    scan = scan_dataset(tmp_path, image_size=64)
    ambiguous = [item["path"] for item in scan.skipped if "several classes" in item["reason"]]
    assert sorted(ambiguous) == ["Normal/Nor_000.png", "Pneumonia/copy.png"]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "has no class folders"),
        (lambda root: [(root / c).mkdir(parents=True) for c in ("Normal", "Pneumonia")], "are empty"),
        (lambda root: make_dataset(root, per_class=5, class_folders=("Normal",)), "Only one class"),
        (lambda root: make_dataset(root, per_class=2, class_folders=("Normal", "Pneumonia")), "at least 3"),
    ],
    ids=["missing", "no-class-folders", "empty-class-folders", "single-class", "too-few-for-split"],
)
def test_impossible_datasets_fail_before_training_with_a_clear_message(tmp_path, build, message):
    from core.data.scan import assign_subsets, scan_dataset

    root = tmp_path / "data"
    build(root)
    with pytest.raises(ValueError, match=message):
        assign_subsets(scan_dataset(root, image_size=64))


def test_perceptual_hash_is_256_bits_and_rejects_non_images():
    from core.data.hashes import PERCEPTUAL_HASH_BITS, hamming_distances, perceptual_hash

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
    from core.data.hashes import PERCEPTUAL_HASH_BITS, hamming_distances, nearest_hashes

    zero = "0" * 64
    one_bit = "0" * 63 + "1"
    five_bits = "f" + "0" * 62 + "1"
    all_bits = "f" * 64
    assert hamming_distances([zero], [one_bit, five_bits, all_bits]).tolist() == [[1, 5, 256]]
    distances, indices = nearest_hashes([all_bits, zero], [one_bit, five_bits])
    assert distances.tolist() == [251, 1] and indices.tolist() == [1, 0]
    distances, indices = nearest_hashes([zero], [])
    assert distances.tolist() == [PERCEPTUAL_HASH_BITS + 1] and indices.tolist() == [-1]


def test_the_folder_check_reports_an_impossible_split_before_training(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=6, class_folders=("Normal", "Pneumonia"))
    for film in sorted((tmp_path / "Pneumonia").iterdir())[2:]:
        film.unlink()
    report = scan_dataset(tmp_path, decode=False).report()
    assert report["split_problem"].startswith(
        "Class 'Pneumonia' has only 2 patient groups (2 images); a 70/15/15 split needs at least 3 groups")
    make_dataset(tmp_path, per_class=4, class_folders=("Pneumonia",), seed=4)
    assert scan_dataset(tmp_path, decode=False).report()["split_problem"] is None


def test_a_presplit_dataset_whose_test_lacks_a_class_is_refused_before_training(tmp_path):
    from core.data.scan import assign_subsets, scan_dataset

    make_dataset(tmp_path / "train", per_class=8, class_folders=("NORMAL", "PNEUMONIA", "CARDIOMEGALY"), seed=1)
    make_dataset(tmp_path / "test", per_class=3, class_folders=("NORMAL", "PNEUMONIA"), seed=2)
    scan = scan_dataset(tmp_path, decode=False)
    problem = scan.report()["split_problem"]
    assert "The test/ folder of the pre-split dataset" in problem and "'Cardiomegaly'" in problem
    assert "macro-F1 would count it as 0" in problem
    with pytest.raises(ValueError, match="macro-F1 would count it as 0"):
        assign_subsets(scan)
