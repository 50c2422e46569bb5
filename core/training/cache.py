"""The decoded-film cache of a training: one memory-mapped uint8 file in the staging folder.

Training decodes every film once and reads the decoded films every epoch. Held in memory they cost
S x S bytes a film for the whole run (50 KB at 224 px: 630 MB for the paper's 12,539 films, 5.6 GB for
NIH's 112,120). Written to a memory-mapped file instead, only the pages being read are resident, and the
operating system drops them again under pressure, so a training's peak memory no longer grows with the
number of films (bench/train_memory.py measures it).

The dataset check hashes every file first (`scan_dataset(decode=False)`: sizes, headers, duplicates); the
decode here is the rest of the integrity check: a film that does not decode is moved to the scan's skipped
list with its reason, exactly as a decoding scan would list it. Each film is decoded exactly once.
The file is deleted before the staging folder becomes the run folder (`remove_film_cache`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from core.data.scan import DatasetScan, decode_in_chunks

FILM_CACHE_FILE_NAME = "films.cache.u8"
"""The staging folder's decoded films, (n, S, S, 1) uint8 rows in the scan's record order."""
CHUNK_FILMS = 256


def decode_to_disk(scan: DatasetScan, folder: Path, image_size: int,
                   progress: Callable[[int, int], None] | None = None) -> DatasetScan:
    """Decode a scan's films into `folder/FILM_CACHE_FILE_NAME`; the scan with `images` memory-mapped.

    Films that fail to decode leave the returned scan's records and join its `skipped` list. The returned
    images are a read-only np.memmap of shape (m, S, S, 1) aligned with the returned records.

    Raises:
        ValueError: no film of the scan decodes.
    """
    path = Path(folder) / FILM_CACHE_FILE_NAME
    total = len(scan.records)
    paths = [scan.root / record.path for record in scan.records]
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(max(total, 1), image_size, image_size, 1))
    kept: list[int] = []
    skipped = list(scan.skipped)
    done = 0
    for chunk_paths, images, errors, _ in decode_in_chunks(paths, image_size, CHUNK_FILMS):
        start = done
        decoded = set(chunk_paths)
        rows[len(kept):len(kept) + len(images)] = images
        for offset in range(start, start + len(chunk_paths) + len(errors)):
            if paths[offset] in decoded:
                kept.append(offset)
            else:
                skipped.append({"path": scan.records[offset].path, "reason": errors[paths[offset]]})
        done = start + len(chunk_paths) + len(errors)
        if progress is not None:
            progress(done, total)
    rows.flush()
    del rows
    if not kept:
        raise ValueError(f"None of the {total} films in {scan.root} could be decoded; see the reasons listed "
                         "for each file. Paru reads PNG, JPEG, BMP, TIFF and DICOM films.")
    images = np.load(path, mmap_mode="r")[:len(kept)]
    records = [scan.records[i] for i in kept]
    return dataclasses.replace(scan, records=records, skipped=skipped, images=images, image_size=image_size)


def remove_film_cache(folder: Path) -> None:
    """Delete a staging folder's decoded films (they can be gigabytes; the run folder never keeps them)."""
    (Path(folder) / FILM_CACHE_FILE_NAME).unlink(missing_ok=True)

