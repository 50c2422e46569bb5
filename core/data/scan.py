"""Dataset discovery and integrity check: which films a dataset folder holds, and which subset each gets.

The folder layouts and what folder names mean are in `core.data.layout`; which files are candidates, and
why the others are skipped, in `core.data.listing`; labels.csv in `core.data.labels`. Every file is
checked: it is hashed (SHA-256) and, with ``decode=True``, decoded by the one image loader
(`core.imaging.loader`); without, only its size and header are checked. A file that fails is skipped and
listed with its reason; it is never fatal. An optional ``labels.csv`` beside the class folders with a
``patient_id`` column makes the split patient-aware.

The loader is called through its module (``loader.load_image``), so that a measurement that wraps
`core.imaging.loader.load_image` counts every decode made here.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.data.labels import read_patient_ids_and_placeholders
from core.data.layout import order_classes
from core.data.listing import check_dataset_root, list_candidate_files
from core.data.split import SUBSETS, check_split_feasible, group_ids, stratified_group_split
from core.imaging import loader

DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
"""The (train, val, test) split of `assign_subsets` and of the folder check when none is given."""
# Files are hashed in pieces of this size, so checking a folder never holds a whole file in memory.
_HASH_CHUNK_BYTES = 1 << 20
# The loader's format sniff needs at most this many bytes from the start of a file.
_HEADER_BYTES = 4096


@dataclass
class FilmRecord:
    """One usable film of a dataset.

    Fields:
        path: POSIX path relative to the dataset root.
        label: canonical class name (see `canonical_class_name`).
        given_subset: "train", "val" or "test" in a pre-split dataset; None otherwise.
        patient_id: from labels.csv when present; None means unknown.
        sha256: hex digest of the file's bytes (exact-duplicate detection).
    """

    path: str
    label: str
    given_subset: str | None = None
    patient_id: str | None = None
    sha256: str = ""


@dataclass
class DatasetScan:
    """What a dataset folder holds, and what could not be used.

    `images`, when decoded, is a uint8 array (n, image_size, image_size, 1) aligned with `records`.
    `skipped` lists {"path", "reason"} for every file left out. `duplicates` lists groups of paths with
    identical bytes (kept, but always placed in one subset by the split). `placeholder_patient_ids` counts
    the films whose labels.csv id is a placeholder ("unknown", "0", empty...), read as no patient id.
    """

    root: Path
    layout: str
    class_names: list[str]
    records: list[FilmRecord]
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    images: np.ndarray | None = None
    image_size: int | None = None
    placeholder_patient_ids: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """Integer labels (indices into class_names) aligned with records."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[record.label] for record in self.records], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in self.class_names}
        for record in self.records:
            counts[record.label] += 1
        return counts

    def warnings(self) -> list[str]:
        """Things about the dataset a person should know before training on it (placeholder patient ids)."""
        if not self.placeholder_patient_ids:
            return []
        total = sum(self.placeholder_patient_ids.values())
        shown = ", ".join(f"'{value}' ({count})" for value, count in sorted(
            self.placeholder_patient_ids.items(), key=lambda item: -item[1])[:5])
        return [f"{total} of {len(self.records)} films have a placeholder patient id in labels.csv ({shown}). "
                "It was read as 'no patient id', so each of those films is its own group in the split (identical "
                "files still stay together); fill in the real patient ids to keep each patient's films together."]

    def report(self, fractions=DEFAULT_FRACTIONS) -> dict:
        """A JSON-ready summary: layout, counts per class, skipped files with reasons, duplicates, warnings,
        and `split_problem`: why `assign_subsets(self, fractions)` would fail, or None."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.class_names,
            "n_files_usable": len(self.records),
            "class_counts": self.class_counts(),
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "has_patient_ids": any(record.patient_id for record in self.records),
            "placeholder_patient_ids": self.placeholder_patient_ids,
            "warnings": self.warnings(),
            "split_problem": split_problem(self, fractions),
        }


def scan_dataset(
    root: str | os.PathLike,
    *,
    image_size: int = 224,
    decode: bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetScan:
    """Check every file of a dataset folder; optionally keep the decoded films.

    Args:
        root: the dataset folder (see core.data.layout for the layouts).
        image_size: side of the decoded square films (only with decode=True).
        decode: decode every film with the shared loader. With False only the bytes are read and hashed
            (a quick look for the app); undecodable files are then found at training time.
        workers: decoding threads (default: number of CPUs).
        progress: called as progress(done, total) while files are processed.

    Returns:
        A DatasetScan. Files that cannot be used are in `skipped` with a reason; the same bytes found
        under two different classes are skipped too (their label is ambiguous).

    Raises:
        ValueError: the folder does not exist, has no class folders, or holds no usable film.
    """
    root = check_dataset_root(root)
    layout, candidates, skipped = list_candidate_files(root)
    patients, placeholders = read_patient_ids_and_placeholders(root)
    placeholder_counts: dict[str, int] = {}
    total = len(candidates)

    records: list[FilmRecord] = []
    kept_images: list[np.ndarray] = []
    with _thread_pool(workers) as pool:
        results = pool.map(lambda candidate: _read_film_file(candidate[0], image_size, decode), candidates)
        for done, ((path, label, subset), (digest, image, reason)) in enumerate(zip(candidates, results), start=1):
            rel_path = path.relative_to(root).as_posix()
            if progress is not None and (done % 50 == 0 or done == total):
                progress(done, total)
            if reason is not None:
                skipped.append({"path": rel_path, "reason": reason})
                continue
            patient = patients.get(rel_path) or patients.get(path.name)
            placeholder = None if patient else placeholders.get(rel_path) or placeholders.get(path.name)
            if placeholder:
                placeholder_counts[placeholder] = placeholder_counts.get(placeholder, 0) + 1
            records.append(FilmRecord(rel_path, label, subset, patient, digest))
            if image is not None:
                kept_images.append(image)

    records, kept_images, duplicates = _resolve_duplicates(records, kept_images, skipped)
    class_names = order_classes({label for _, label, _ in candidates})
    images = np.stack(kept_images) if decode and kept_images else None
    if not records:
        raise ValueError(
            f"None of the {total} files in {root} could be used; see the reasons listed for each file. "
            "Paru reads PNG, JPEG, BMP, TIFF and DICOM films."
        )
    return DatasetScan(root, layout, class_names, records, skipped, duplicates, images,
                       image_size if decode else None, placeholder_counts)


def _resolve_duplicates(records, images, skipped):
    """Group identical files; skip every copy whose bytes also appear under another class."""
    by_hash: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_hash.setdefault(record.sha256, []).append(index)
    drop, duplicates = set(), []
    for indices in by_hash.values():
        if len(indices) < 2:
            continue
        paths = [records[i].path for i in indices]
        duplicates.append(paths)
        labels = sorted({records[i].label for i in indices})
        if len(labels) > 1:
            for i in indices:
                drop.add(i)
                skipped.append({
                    "path": records[i].path,
                    "reason": f"the same image is filed under several classes ({', '.join(labels)}), "
                              "so its label is ambiguous",
                })
    keep = [i for i in range(len(records)) if i not in drop]
    kept_images = [images[i] for i in keep] if images else images
    return [records[i] for i in keep], kept_images, duplicates


def assign_subsets(scan: DatasetScan, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> np.ndarray:
    """Give every usable film of a scan a subset ("train", "val" or "test").

    Class-folder datasets get a stratified split by `fractions`, reproducible from `seed`. Pre-split
    datasets keep their given subsets; when they have no validation films, a stratified validation
    share (fractions[1] of the whole) is taken from the training films. The split is patient- and
    duplicate-aware: films sharing a patient id or identical bytes always land in the same subset.

    Raises:
        ValueError: the split is impossible (see `split_problem`); the message says why and what to do.
    """
    labels, groups, subsets, carve = _split_plan(scan, fractions)
    if subsets is None:
        return stratified_group_split(labels, groups, fractions=fractions, seed=seed)
    if carve is not None:
        in_train = np.flatnonzero(subsets == "train")
        subsets[in_train] = stratified_group_split(labels[in_train], groups[in_train], fractions=carve, seed=seed)
    return subsets.astype(str)


def split_problem(scan: DatasetScan, fractions=DEFAULT_FRACTIONS) -> str | None:
    """Why `assign_subsets(scan, fractions)` would fail, or None: the folder check shows it before training.

    Cheap (no split is made): empty or single classes, a pre-split dataset without train or test films or
    whose val/ or test/ lacks a class (its figures would be undefined and macro-F1 would count it as 0),
    and a class with fewer patient groups than subsets (`core.data.split.check_split_feasible`).
    """
    try:
        _split_plan(scan, fractions)
    except ValueError as error:
        return str(error)
    return None


def _split_plan(scan: DatasetScan, fractions):
    """(labels, groups, given subsets or None, fractions to carve val from train or None), after every
    check of `split_problem`; ValueError with the message otherwise."""
    empty = [name for name, count in scan.class_counts().items() if count == 0]
    if empty:
        raise ValueError(f"Class folder(s) {empty} have no usable films. Add films to them or remove the folder(s).")
    if len(scan.class_names) < 2:
        raise ValueError(
            f"Only one class ({scan.class_names[0]!r}) was found in {scan.root}; a classifier needs at "
            "least two class folders (for example Normal/ and Pneumonia/)."
        )
    labels = np.array([record.label for record in scan.records])
    groups = group_ids(
        len(scan.records),
        patient_ids=[record.patient_id for record in scan.records],
        content_hashes=[record.sha256 for record in scan.records],
    )
    if scan.layout == "class_folders":
        _raise_problem(check_split_feasible(labels, groups, fractions))
        return labels, groups, None, None

    subsets = np.array([record.given_subset for record in scan.records], dtype=object)
    missing = [s for s in ("train", "test") if s not in set(subsets)]
    if missing:
        raise ValueError(
            f"The pre-split dataset {scan.root} has no usable {' or '.join(missing)} films. "
            "Add them, or arrange the films as one folder per class and let Paru split them."
        )
    for subset in SUBSETS:
        present = set(labels[subsets == subset])
        lacking = [name for name in scan.class_names if name not in present]
        if present and lacking:
            raise ValueError(
                f"The {subset}/ folder of the pre-split dataset {scan.root} has no usable films of "
                f"{', '.join(map(repr, lacking))}. Its {subset} figures for that class would be undefined and "
                f"macro-F1 would count it as 0. Add films of it to {subset}/, or arrange the films as one folder "
                "per class and let Paru split them."
            )
    carve = None
    if "val" not in set(subsets):
        in_train = np.flatnonzero(subsets == "train")
        val_share = fractions[1] / (fractions[0] + fractions[1])
        carve = (1 - val_share, val_share, 0.0)
        _raise_problem(check_split_feasible(labels[in_train], groups[in_train], carve))
    return labels, groups, subsets, carve


def _raise_problem(problem: str | None) -> None:
    if problem:
        raise ValueError(problem)


def decode_in_chunks(paths: list[Path], image_size: int, chunk_size: int = 256, workers: int | None = None):
    """Decode films with the shared loader in parallel, a chunk at a time, so memory stays bounded.

    Each file is read once: its bytes are hashed and decoded from memory.
    Yields (chunk_paths, images uint8 (m, S, S, 1), errors {path: reason}, sha256 hex digests) where
    chunk_paths, images and digests hold only the films that decoded, in chunk order.
    """
    with _thread_pool(workers) as pool:
        for start in range(0, len(paths), chunk_size):
            chunk = paths[start:start + chunk_size]
            results = list(pool.map(lambda path: _read_film_file(path, image_size), chunk))
            decoded = [(path, image, digest) for path, (digest, image, _) in zip(chunk, results) if image is not None]
            errors = {path: reason for path, (_, _, reason) in zip(chunk, results) if reason is not None}
            images = (np.stack([image for _, image, _ in decoded]) if decoded
                      else np.zeros((0, image_size, image_size, 1), np.uint8))
            yield [path for path, _, _ in decoded], images, errors, [digest for _, _, digest in decoded]


def _read_film_file(
    path: Path, image_size: int, decode: bool = True
) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256 hex digest, model input or None, why the file is unusable or None) for one file.

    With `decode` the file is read once (the loader refuses non-regular and over-large files before opening
    them), hashed and decoded from memory. Without it (the quick folder check) the file is never held whole:
    its size is checked first, its header is sniffed by the loader and its bytes are hashed in pieces. One bad
    file must not stop a folder of thousands, so every failure, a loader bug included, becomes a reason.
    """
    try:
        if not decode:
            return _check_without_decoding(path)
        data = loader.read_file_bytes(path, path.name)
    except loader.ImageLoadError as error:
        return None, None, str(error)
    digest = hashlib.sha256(data).hexdigest()
    try:
        return digest, loader.load_image(data, image_size), None
    except loader.ImageLoadError as error:
        return digest, None, str(error)
    except Exception as error:
        return digest, None, f"could not be decoded ({type(error).__name__}: {error})"


def _check_without_decoding(path: Path) -> tuple[str | None, None, str | None]:
    """(digest, None, reason) of one file from its size, its header and its bytes hashed in pieces."""
    try:
        loader.check_file(path, path.name)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            head = handle.read(_HEADER_BYTES)
            if not head:
                return None, None, "the file is empty (0 bytes)"
            loader.check_header(head, path.name)
            digest.update(head)
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    except loader.ImageLoadError as error:
        return None, None, str(error)
    except OSError as error:
        return None, None, f"could not be read: {error.strerror or error}"
    return digest.hexdigest(), None, None


def _thread_pool(workers: int | None) -> ThreadPoolExecutor:
    """Threads for reading and decoding (the decoders release the GIL); default: one per CPU."""
    return ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2)
