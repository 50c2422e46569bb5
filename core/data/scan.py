"""Dataset discovery and integrity check: which films a dataset folder holds, and which subset each gets.

The folder layouts and what folder names mean are in `core.data.layout`. Every file is checked: it is
read, hashed (SHA-256) and, with ``decode=True``, decoded by the one image loader (`core.imaging.loader`).
A file that fails is skipped and listed with its reason; it is never fatal. An optional ``labels.csv``
beside the class folders with a ``patient_id`` column makes the split patient-aware.

The loader is called through its module (``loader.load_image``), so that a measurement that wraps
`core.imaging.loader.load_image` counts every decode made here.
"""

from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.data.layout import canonical_class_name, detect_layout, is_hidden, order_classes
from core.data.split import group_ids, stratified_group_split
from core.imaging import loader

IGNORED_FILE_NAMES = {"labels.csv", "thumbs.db", "desktop.ini", "readme.md", "readme.txt", "license"}
"""Lower-cased names of files that sit in dataset folders without being films; they are not listed."""
PATH_COLUMNS = ("file", "path", "filename", "image", "image index", "image_index")
"""labels.csv columns (lower-cased, first match wins) that hold the film's path or file name."""
PATIENT_COLUMNS = ("patient_id", "patient id", "patient", "patientid")
"""labels.csv columns (lower-cased, first match wins) that hold the patient id."""


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
    identical bytes (kept, but always placed in one subset by the split).
    """

    root: Path
    layout: str
    class_names: list[str]
    records: list[FilmRecord]
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    images: np.ndarray | None = None
    image_size: int | None = None

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

    def report(self) -> dict:
        """A JSON-ready summary: layout, counts per class, skipped files with reasons, duplicates."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.class_names,
            "n_files_usable": len(self.records),
            "class_counts": self.class_counts(),
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "has_patient_ids": any(record.patient_id for record in self.records),
        }


def read_patient_ids(root: Path) -> dict[str, str]:
    """Map relative path (and bare file name) to patient id from root/labels.csv, if it has one."""
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        return {}
    with labels_csv.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        path_column = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
        patient_column = next((columns[c] for c in PATIENT_COLUMNS if c in columns), None)
        if path_column is None or patient_column is None:
            return {}
        patients = {}
        for row in reader:
            rel_path, patient = (row.get(path_column) or "").strip(), (row.get(patient_column) or "").strip()
            if rel_path and patient:
                patients[rel_path.replace("\\", "/")] = patient
                patients.setdefault(Path(rel_path).name, patient)
        return patients


def check_dataset_root(root: str | os.PathLike) -> Path:
    """The dataset folder, resolved; ValueError with a next step when it is missing or is a file."""
    root = Path(root).expanduser()
    if root.is_dir():
        return root.resolve()
    if root.exists():
        raise ValueError(f"{root} is a file, not a folder. Choose the folder that holds the class folders.")
    raise ValueError(
        f"Dataset folder {root} does not exist. Choose a folder with one subfolder per class "
        "(for example Normal/, Pneumonia/), or with train/, val/ and test/ folders of class folders."
    )


def list_candidate_files(root: str | os.PathLike) -> tuple[str, list[tuple[Path, str, str | None]], list[dict]]:
    """Find every file of a dataset with its class and given subset, without reading it.

    Returns (layout, [(absolute path, canonical class, given subset or None)], skipped). Files whose
    extension no loader handles are skipped with a reason.
    """
    root = check_dataset_root(root)
    layout, folders = detect_layout(root)
    candidates, skipped = [], []
    for subset, class_dirs in folders.items():
        for class_dir in class_dirs:
            label = canonical_class_name(class_dir.name)
            for path in sorted(class_dir.rglob("*")):
                if not path.is_file() or any(is_hidden(part) for part in path.relative_to(root).parts):
                    continue
                if path.name.lower() in IGNORED_FILE_NAMES:
                    continue
                suffix = path.suffix.lower()
                if suffix and suffix not in loader.SUPPORTED_EXTENSIONS:
                    skipped.append({
                        "path": path.relative_to(root).as_posix(),
                        "reason": f"unsupported file type '{suffix}' (Paru reads "
                                  f"{', '.join(sorted(loader.SUPPORTED_EXTENSIONS))})",
                    })
                    continue
                candidates.append((path, label, subset))
    if not candidates and not skipped:
        if not any(folders.values()):
            raise ValueError(
                f"{root} has no class folders. Put each class's films in a subfolder named after the "
                "class (for example Normal/ and Pneumonia/)."
            )
        raise ValueError(f"The class folders in {root} are empty. Add films (PNG, JPEG or DICOM) to them.")
    return layout, candidates, skipped


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
    patients = read_patient_ids(root)
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
                       image_size if decode else None)


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


def assign_subsets(scan: DatasetScan, fractions=(0.70, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """Give every usable film of a scan a subset ("train", "val" or "test").

    Class-folder datasets get a stratified split by `fractions`, reproducible from `seed`. Pre-split
    datasets keep their given subsets; when they have no validation films, a stratified validation
    share (fractions[1] of the whole) is taken from the training films. The split is patient- and
    duplicate-aware: films sharing a patient id or identical bytes always land in the same subset.

    Raises:
        ValueError: a class has too few films (or patients) for the split; the message says how many.
    """
    counts = scan.class_counts()
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise ValueError(
            f"Class folder(s) {empty} have no usable films. Add films to them or remove the folder(s)."
        )
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
        return stratified_group_split(labels, groups, fractions=fractions, seed=seed)

    subsets = np.array([record.given_subset for record in scan.records], dtype=object)
    missing = [s for s in ("train", "test") if s not in set(subsets)]
    if missing:
        raise ValueError(
            f"The pre-split dataset {scan.root} has no usable {' or '.join(missing)} films. "
            "Add them, or arrange the films as one folder per class and let Paru split them."
        )
    if "val" not in set(subsets):
        in_train = np.flatnonzero(subsets == "train")
        val_share = fractions[1] / (fractions[0] + fractions[1])
        carved = stratified_group_split(
            labels[in_train], groups[in_train], fractions=(1 - val_share, val_share, 0.0), seed=seed
        )
        subsets[in_train] = carved
    return subsets.astype(str)


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
    """(sha256 hex digest, model input or None, why the file is unusable or None) for one file, read once.

    The bytes are hashed and, when `decode`, decoded from memory by the shared loader. One bad file must
    not stop a folder of thousands, so every failure, a loader bug included, becomes a reason.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, None, f"could not be read: {error.strerror or error}"
    digest = hashlib.sha256(data).hexdigest()
    if not decode:
        return digest, None, None if data else "the file is empty (0 bytes)"
    try:
        return digest, loader.load_image(data, image_size), None
    except loader.ImageLoadError as error:
        return digest, None, str(error)
    except Exception as error:
        return digest, None, f"could not be decoded ({type(error).__name__}: {error})"


def _thread_pool(workers: int | None) -> ThreadPoolExecutor:
    """Threads for reading and decoding (the decoders release the GIL); default: one per CPU."""
    return ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2)
