"""Tests for core.data.labels: placeholder patient ids are read as missing and counted for the data report,
and a labels.csv that is not UTF-8 or not a CSV table gets a message naming the file. Files built here."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_dataset


def write_labels(root, rows, placeholder="unknown", every=10):
    """labels.csv giving every `every`-th film a real patient id and the others `placeholder`."""
    lines = ["file,patient_id"] + [f"{path},{f'p{i}' if i % every == 0 else placeholder}" for i, path in enumerate(rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("placeholder", ["unknown", "", "0", "NA"])
def test_a_placeholder_patient_id_on_most_films_does_not_collapse_the_split(tmp_path, placeholder):
    from core.data.scan import assign_subsets, scan_dataset

    make_dataset(tmp_path, per_class=30, class_folders=("Normal", "Pneumonia"))
    films = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.glob("*/*.png"))
    write_labels(tmp_path, films, placeholder)
    scan = scan_dataset(tmp_path, decode=False)
    subsets = assign_subsets(scan, seed=0)
    shares = {subset: float(np.mean(subsets == subset)) for subset in ("train", "val", "test")}
    assert 0.6 <= shares["train"] <= 0.8 and shares["test"] >= 0.1, shares
    report = scan.report()
    assert report["placeholder_patient_ids"] == {placeholder or "(empty)": 54}
    assert any("54 of 60 films have a placeholder patient id" in warning and "its own group" in warning
               for warning in report["warnings"])


def test_placeholders_are_missing_in_the_pure_grouping_too():
    from core.data.split import group_ids

    groups = group_ids(4, patient_ids=["unknown", "UNKNOWN ", "p1", "p1"])
    assert groups.tolist() == [0, 1, 2, 2]


def test_a_labels_csv_that_is_not_utf8_names_the_file_and_what_to_do(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=3, class_folders=("Normal", "Pneumonia"))
    (tmp_path / "labels.csv").write_bytes("file,patient_id\nNormal/Nor_000.png,Müller\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"labels\.csv is not UTF-8 text \(byte 0xfc at position \d+\)\. Save it "
                                         r"again as UTF-8 CSV"):
        scan_dataset(tmp_path, decode=False)


def test_a_labels_csv_with_a_giant_field_gives_a_clear_message(tmp_path):
    from core.data.scan import scan_dataset

    make_dataset(tmp_path, per_class=3, class_folders=("Normal", "Pneumonia"))
    (tmp_path / "labels.csv").write_text("file,patient_id\nNormal/Nor_000.png," + "x" * 200_000 + "\n")
    with pytest.raises(ValueError, match=r"labels\.csv could not be read as a CSV table .*longer than 131,072 "
                                         r"characters"):
        scan_dataset(tmp_path, decode=False)
