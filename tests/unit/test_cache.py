"""core.training.cache: the decoded films of a training live in a file read by rows, not in memory."""

from __future__ import annotations

import numpy as np

from conftest import make_dataset
from core.data.scan import scan_dataset
from core.training.cache import FILM_CACHE_FILE_NAME, FilmCache, decode_to_disk, remove_film_cache


def test_films_are_decoded_once_into_a_memory_mapped_file_that_a_decoding_scan_agrees_with(tmp_path):
    root = make_dataset(tmp_path / "films", per_class=3)
    (root / "Normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    quick = scan_dataset(root, image_size=32, decode=False)
    assert not quick.skipped  # Its header is a PNG's: only decoding finds it broken.
    scan = decode_to_disk(quick, tmp_path, 32)
    reference = scan_dataset(root, image_size=32, decode=True)
    assert isinstance(scan.images, FilmCache) and scan.images.shape == (12, 32, 32, 1)
    assert [r.path for r in scan.records] == [r.path for r in reference.records]
    np.testing.assert_array_equal(scan.images, reference.images)
    rows = np.array([5, 0, 11, 5])
    np.testing.assert_array_equal(scan.images[rows], reference.images[rows])
    np.testing.assert_array_equal(scan.images[3], reference.images[3])
    np.testing.assert_array_equal(scan.images[2:7], reference.images[2:7])
    assert "Normal/broken.png" in {item["path"] for item in scan.skipped}
    assert (tmp_path / FILM_CACHE_FILE_NAME).exists()
    remove_film_cache(tmp_path)
    assert not (tmp_path / FILM_CACHE_FILE_NAME).exists()
