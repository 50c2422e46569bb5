"""Tests for core.data.listing: every file's real path is confined to the dataset folder and the data
roots, nothing is dropped unlisted (stray folders, films outside class folders, FIFOs), and the quick folder
check never reads a film whole. The hostile layouts are built here."""

from __future__ import annotations

import os
import threading

import pytest

from conftest import make_dataset


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("PARU_DATA_ROOT", str(root))
    return root


def reasons_of(scan) -> dict[str, str]:
    return {item["path"]: item["reason"] for item in scan.skipped}


def test_links_that_resolve_outside_the_data_roots_are_skipped_with_the_reason(tmp_path, data_root):
    from core.data.scan import scan_dataset

    dataset = make_dataset(data_root / "ds", per_class=4, class_folders=("Normal", "Pneumonia"))
    outside = make_dataset(tmp_path / "outside", per_class=3, class_folders=("Cardiomegaly", "Normal"), seed=5)
    (dataset / "Cardiomegaly").symlink_to(outside / "Cardiomegaly")           # a class folder leading out
    (dataset / "Normal" / "passwd.png").symlink_to(outside / "Normal" / "Nor_000.png")  # a film leading out
    scan = scan_dataset(dataset, image_size=64)
    reasons = reasons_of(scan)
    assert "outside the dataset folder and the data folders" in reasons["Cardiomegaly/"]
    assert "none of its files were used" in reasons["Cardiomegaly/"]
    assert "it was not read" in reasons["Normal/passwd.png"]
    assert sorted(scan.class_counts().items()) == [("Normal", 4), ("Pneumonia", 4)]
    assert all(str(outside) not in str(dataset / record.path) for record in scan.records)


def test_links_into_a_data_root_are_used_so_core_split_layouts_keep_working(tmp_path, data_root):
    from core.data.scan import scan_dataset

    dataset = make_dataset(data_root / "ds", per_class=3, class_folders=("Normal", "Pneumonia"))
    layout = tmp_path / "layout"  # outside the data root, but every link resolves inside it
    for subset in ("train", "test"):
        for label in ("Normal", "Pneumonia"):
            (layout / subset / label).mkdir(parents=True)
    for label in ("Normal", "Pneumonia"):
        films = sorted((dataset / label).iterdir())
        for film in films[:2]:
            (layout / "train" / label / film.name).symlink_to(film)
        (layout / "test" / label / films[2].name).symlink_to(films[2])
    scan = scan_dataset(layout, image_size=64)
    assert scan.layout == "presplit" and not scan.skipped and len(scan.records) == 6


def test_a_stray_folder_and_films_outside_class_folders_are_listed_as_skipped(data_root):
    from core.data.scan import scan_dataset

    root = data_root / "kaggle"
    make_dataset(root / "train", per_class=4, class_folders=("NORMAL", "PNEUMONIA"), seed=1)
    make_dataset(root / "test", per_class=2, class_folders=("NORMAL", "PNEUMONIA"), seed=2)
    make_dataset(root / "extra", per_class=2, class_folders=("NORMAL",), seed=3)
    make_dataset(root, per_class=1, class_folders=("CARDIOMEGALY",), seed=4)
    os.replace(root / "CARDIOMEGALY" / "CAR_000.png", root / "loose.png")
    os.replace(root / "train" / "NORMAL" / "NOR_003.png", root / "train" / "loose.png")
    (root / "CARDIOMEGALY").rmdir()
    scan = scan_dataset(root, image_size=64, decode=False)
    reasons = reasons_of(scan)
    assert "beside the train/, val/ and test/ folders" in reasons["extra/"]
    assert "in the dataset folder itself, outside any class folder" in reasons["loose.png"]
    assert "in train/ itself, outside any class folder" in reasons["train/loose.png"]
    assert scan.report()["skipped"] == scan.skipped and len(scan.records) == 11


def test_a_fifo_in_a_class_folder_is_skipped_with_a_reason_and_never_opened(data_root):
    from core.data.scan import scan_dataset

    dataset = make_dataset(data_root / "ds", per_class=3, class_folders=("Normal", "Pneumonia"))
    fifo = dataset / "Normal" / "pipe.png"
    os.mkfifo(fifo)
    scans = []
    thread = threading.Thread(target=lambda: scans.extend(scan_dataset(dataset, image_size=64, decode=decode)
                                                          for decode in (False, True)), daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # the old scan blocks in open(); a writer releases it so the test can end
        for _ in range(2):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("scanning a folder with a FIFO blocked")
    for scan in scans:
        assert "a named pipe (FIFO), not a film file; it was not opened" in reasons_of(scan)["Normal/pipe.png"]


def test_the_quick_check_refuses_a_huge_file_by_size_and_a_text_file_by_its_header(data_root):
    from core.data.scan import scan_dataset

    dataset = make_dataset(data_root / "ds", per_class=3, class_folders=("Normal", "Pneumonia"))
    with open(dataset / "Normal" / "huge.dcm", "wb") as handle:
        handle.truncate(2 * 2**30)  # a sparse 2 GiB file: reading it whole would take 2 GiB of memory
    (dataset / "Pneumonia" / "passwd.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    scan = scan_dataset(dataset, decode=False)
    reasons = reasons_of(scan)
    assert "Paru reads films of at most 256 MiB" in reasons["Normal/huge.dcm"]
    assert "is not an image: it looks like a text file" in reasons["Pneumonia/passwd.png"]
    assert len(scan.records) == 6


def test_an_overlong_folder_name_gives_a_clear_message_not_a_traceback(data_root):
    from core.data.listing import check_dataset_root
    from core.data.paths import confined_data_folder
    from core.data.scan import scan_dataset

    typed = data_root / ("x" * 300)
    with pytest.raises(ValueError, match="at most 255 characters"):
        check_dataset_root(typed)
    with pytest.raises(ValueError, match="at most 255 characters"):
        scan_dataset(confined_data_folder(typed / "Normal"), decode=False)  # what the page's check calls
