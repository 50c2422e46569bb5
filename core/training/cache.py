"""The decoded-film cache of a training: one file of uint8 rows in the staging folder.

Training decodes every film once and reads the decoded films every epoch. Held in memory they cost
S x S bytes a film for the whole run (50 KB at 224 px: 630 MB for the paper's 12,539 films, 5.6 GB for
NIH's 112,120). Written to a file instead and read back a batch of rows at a time (`FilmCache`), only the
batches in flight are in the process; the file's pages sit in the operating system's page cache, which it
drops under pressure, so a training's peak memory no longer grows with the number of films
(bench/train_memory.py measures it).

The dataset check hashes every file first (`scan_dataset(decode=False)`: sizes, headers, duplicates); the
decode here is the rest of the integrity check: a film that does not decode is moved to the scan's skipped
list with its reason, exactly as a decoding scan would list it. Each film is decoded exactly once.
The file is deleted before the staging folder becomes the run folder (`remove_film_cache`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np

from core.data.scan import DatasetScan, decode_in_chunks

FILM_CACHE_FILE_NAME = "films.cache.u8"
"""The staging folder's decoded films, (n, S, S, 1) uint8 rows in the scan's record order."""
CHUNK_FILMS = 256


class FilmCache:
    """Read-only decoded films (n, S, S, 1) uint8 in a file of raw rows, read with `pread` when asked for.

    Nothing stays mapped into the process: `cache[rows]` reads those rows into a new array, and the file's
    pages live in the operating system's page cache, which it drops under memory pressure (mapped pages
    that were touched would count in the process's resident memory, so a whole epoch would map them all).
    Indexing takes an int (one film (S, S, 1)), a slice or an array of row numbers, in any order.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, path: Path, count: int, image_size: int):
        self.path = Path(path)
        self.shape = (count, image_size, image_size, 1)
        self._row_bytes = image_size * image_size
        self._descriptor = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"film rows {rows.min()}..{rows.max()} are outside 0..{len(self) - 1}")
        films = np.empty((len(rows),) + self.shape[1:], dtype=np.uint8)
        for film, row in zip(films, rows % max(len(self), 1)):
            os.preadv(self._descriptor, [memoryview(film).cast("B")], int(row) * self._row_bytes)
        return films

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        films = self[np.arange(len(self))]
        return films if dtype is None else films.astype(dtype)

    def __del__(self):
        try:
            os.close(self._descriptor)
        except (OSError, AttributeError):
            pass


def decode_to_disk(scan: DatasetScan, folder: Path, image_size: int,
                   progress: Callable[[int, int], None] | None = None) -> DatasetScan:
    """Decode a scan's films into `folder/FILM_CACHE_FILE_NAME`; the scan with `images` a FilmCache over it.

    Films that fail to decode leave the returned scan's records and join its `skipped` list; the cache's
    rows are aligned with the returned records.

    Raises:
        ValueError: no film of the scan decodes.
    """
    path = Path(folder) / FILM_CACHE_FILE_NAME
    total = len(scan.records)
    paths = [scan.root / record.path for record in scan.records]
    kept: list[int] = []
    skipped = list(scan.skipped)
    done = 0
    with path.open("wb") as handle:
        for chunk_paths, images, errors, _ in decode_in_chunks(paths, image_size, CHUNK_FILMS):
            handle.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
            decoded = set(chunk_paths)
            for offset in range(done, done + len(chunk_paths) + len(errors)):
                if paths[offset] in decoded:
                    kept.append(offset)
                else:
                    skipped.append({"path": scan.records[offset].path, "reason": errors[paths[offset]]})
            done += len(chunk_paths) + len(errors)
            if progress is not None:
                progress(done, total)
    if not kept:
        raise ValueError(f"None of the {total} films in {scan.root} could be decoded; see the reasons listed "
                         "for each file. Paru reads PNG, JPEG, BMP, TIFF and DICOM films.")
    records = [scan.records[i] for i in kept]
    return dataclasses.replace(scan, records=records, skipped=skipped, images=FilmCache(path, len(kept), image_size),
                               image_size=image_size)


def remove_film_cache(folder: Path) -> None:
    """Delete a staging folder's decoded films (they can be gigabytes; the run folder never keeps them)."""
    (Path(folder) / FILM_CACHE_FILE_NAME).unlink(missing_ok=True)

