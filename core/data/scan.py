"""Dataset discovery, integrity check and the reproducible split.

A dataset is a folder in one of the layouts people download:

- class folders: ``root/<class>/*.png`` (one subfolder per class; the folder name is the label);
- pre-split (Kaggle style): ``root/{train,val,test}/<class>/*`` — the given split is kept; when there is no
  validation folder, one is carved out of ``train`` (stratified, patient-aware).

Folder names are matched to the paper's classes case- and punctuation-insensitively, so ``NORMAL``,
``No Finding`` and ``normal`` all become ``Normal``. Other folder names are kept as they are.

Every file is checked: it is read, hashed (SHA-256) and, with ``decode=True``, decoded by the one image
loader (`core.imaging.loader`). A file that fails is skipped and listed with its reason; it is never fatal.
An optional ``labels.csv`` beside the class folders with a ``patient_id`` column makes the split
patient-aware.
"""

from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core import PAPER_CLASSES

SUBSETS = ("train", "val", "test")
# Folder names that mean a subset in pre-split datasets, lower-cased.
SUBSET_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "holdout": "test",
}
# Folder names that mean one of the paper's classes, after `_normalise_name`.
CLASS_ALIASES = {
    "normal": "Normal", "no finding": "Normal", "nofinding": "Normal", "healthy": "Normal",
    "pneumonia": "Pneumonia",
    "cardiomegaly": "Cardiomegaly",
    "pneumothorax": "Pneumothorax",
}
IGNORED_FILE_NAMES = {"labels.csv", "thumbs.db", "desktop.ini", "readme.md", "readme.txt", "license"}
PATH_COLUMNS = ("file", "path", "filename", "image", "image index", "image_index")
PATIENT_COLUMNS = ("patient_id", "patient id", "patient", "patientid")


def _normalise_name(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def canonical_class_name(folder_name: str) -> str:
    """The class a folder name stands for: 'NORMAL' and 'No Finding' -> 'Normal'; unknown names unchanged."""
    return CLASS_ALIASES.get(_normalise_name(folder_name), folder_name)


def order_classes(class_names: Iterable[str]) -> list[str]:
    """The paper's classes first, in the paper's order, then any others alphabetically."""
    names = set(class_names)
    known = [name for name in PAPER_CLASSES if name in names]
    return known + sorted(names - set(known))


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


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p.name))


def detect_layout(root: Path) -> tuple[str, dict[str | None, list[Path]]]:
    """Return ("class_folders" | "presplit", {subset or None: [class folders]})."""
    subdirs = _class_dirs(root)
    subset_dirs = {SUBSET_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SUBSET_ALIASES}
    if subset_dirs and "train" in subset_dirs and all(_class_dirs(d) for d in subset_dirs.values()):
        return "presplit", {subset: _class_dirs(d) for subset, d in subset_dirs.items()}
    return "class_folders", {None: subdirs}


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
    if not root.exists():
        raise ValueError(
            f"Dataset folder {root} does not exist. Choose a folder with one subfolder per class "
            "(for example Normal/, Pneumonia/), or with train/, val/ and test/ folders of class folders."
        )
    if not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder. Choose the folder that holds the class folders.")
    return root.resolve()


def list_candidate_files(root: str | os.PathLike) -> tuple[str, list[tuple[Path, str, str | None]], list[dict]]:
    """Find every file of a dataset with its class and given subset, without reading it.

    Returns (layout, [(absolute path, canonical class, given subset or None)], skipped). Files whose
    extension no loader handles are skipped with a reason.
    """
    from core.imaging.loader import SUPPORTED_EXTENSIONS

    root = check_dataset_root(root)
    layout, folders = detect_layout(root)
    candidates, skipped = [], []
    for subset, class_dirs in folders.items():
        for class_dir in class_dirs:
            label = canonical_class_name(class_dir.name)
            for path in sorted(class_dir.rglob("*")):
                if not path.is_file() or any(_is_hidden(part) for part in path.relative_to(root).parts):
                    continue
                if path.name.lower() in IGNORED_FILE_NAMES:
                    continue
                suffix = path.suffix.lower()
                if suffix and suffix not in SUPPORTED_EXTENSIONS:
                    skipped.append({
                        "path": path.relative_to(root).as_posix(),
                        "reason": f"unsupported file type '{suffix}' (Paru reads "
                                  f"{', '.join(sorted(SUPPORTED_EXTENSIONS))})",
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
        root: the dataset folder (see the module docstring for the layouts).
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
    from core.imaging.loader import ImageLoadError, load_image

    root = check_dataset_root(root)
    layout, candidates, skipped = list_candidate_files(root)
    patients = read_patient_ids(root)
    total = len(candidates)

    def process(item):
        path, _, _ = item
        try:
            data = path.read_bytes()
        except OSError as error:
            return None, None, f"could not be read: {error.strerror or error}"
        digest = hashlib.sha256(data).hexdigest()
        if not decode:
            return digest, None, None if data else "the file is empty (0 bytes)"
        try:
            return digest, load_image(data, image_size), None
        except ImageLoadError as error:
            return digest, None, str(error)
        except Exception as error:  # A loader bug must not sink the whole dataset: report the file.
            return digest, None, f"could not be decoded ({type(error).__name__}: {error})"

    records: list[FilmRecord] = []
    kept_images: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for done, (item, (digest, image, reason)) in enumerate(
            zip(candidates, pool.map(process, candidates)), start=1
        ):
            path, label, subset = item
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
    from core.data.split import group_ids, stratified_group_split

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


def write_split_csv(path: str | os.PathLike, scan: DatasetScan, subsets: np.ndarray) -> None:
    """Write split.csv: path, label, subset, patient_id, sha256 (one row per usable film)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "subset", "patient_id", "sha256"])
        for record, subset in zip(scan.records, subsets):
            writer.writerow([record.path, record.label, subset, record.patient_id or "", record.sha256])


def read_split_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a run's split.csv as dicts."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def materialise_split(
    scan: DatasetScan, subsets: np.ndarray, out_dir: str | os.PathLike, mode: str = "link"
) -> Path:
    """Lay the split out as out_dir/{train,val,test}/<class>/<file>, as the paper did.

    `mode` is "link" (symbolic links, no extra disk) or "copy". Existing files are left untouched.
    """
    _check_mode(mode)
    out_dir = Path(out_dir)
    for record, subset in zip(scan.records, subsets):
        _place(scan.root / record.path, out_dir / subset / record.label / record.path.replace("/", "__"), mode)
    return out_dir


def run_dataset_root(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding a run's films (the paths of its split.csv are relative to it).

    That is `data_dir` when given (the dataset has moved), else the folder recorded in data_report.json.
    Raises ValueError, saying what to do, when the run has no split.csv or the folder is unknown or absent.
    """
    import json

    run_dir = Path(run_dir)
    if not (run_dir / "split.csv").is_file():
        raise ValueError(f"{run_dir} has no split.csv; choose a finished run folder (models/<run_id>).")
    if data_dir is None:
        try:
            data_dir = json.loads((run_dir / "data_report.json").read_text())["root"]
        except (OSError, ValueError, KeyError):
            raise ValueError(f"{run_dir} does not say where its dataset is; pass the dataset folder (--data).") from None
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"The run's dataset folder {root} does not exist on this machine; pass the folder "
                         "where the same films are now (--data).")
    return root


def materialise_run_split(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, mode: str = "link", data_dir: str | os.PathLike | None = None
) -> dict:
    """Lay out the exact split a run was trained with (its split.csv) as out_dir/{train,val,test}/<class>/.

    The films are taken from the run's dataset folder (data_report.json), or from `data_dir` when the
    dataset has moved. The result is a pre-split dataset that `scan_dataset` reads back with the same
    subsets. Films missing from the dataset folder are listed, not fatal; existing files are left untouched.

    Returns:
        {"out_dir", "counts": {subset: {class: n}}, "missing": [relative paths]}.

    Raises:
        ValueError: the run has no split.csv, or no dataset folder is known or it does not exist.
    """
    _check_mode(mode)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    root = run_dataset_root(run_dir, data_dir)
    counts: dict[str, dict[str, int]] = {}
    missing = []
    for row in read_split_csv(run_dir / "split.csv"):
        source = root / row["path"]
        if not source.is_file():
            missing.append(row["path"])
            continue
        _place(source, out_dir / row["subset"] / row["label"] / row["path"].replace("/", "__"), mode)
        by_class = counts.setdefault(row["subset"], {})
        by_class[row["label"]] = by_class.get(row["label"], 0) + 1
    return {"out_dir": str(out_dir), "counts": counts, "missing": missing}


def _check_mode(mode: str) -> None:
    if mode not in ("link", "copy"):
        raise ValueError(f"Got mode={mode!r}; must be 'link' or 'copy'.")


def _place(source: Path, target: Path, mode: str) -> None:
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        return
    if mode == "link":
        target.symlink_to(source.resolve())
    else:
        shutil.copy2(source, target)


def decode_in_chunks(paths: list[Path], image_size: int, chunk_size: int = 256, workers: int | None = None):
    """Decode films with the shared loader in parallel, a chunk at a time, so memory stays bounded.

    Each file is read once: its bytes are hashed and decoded from memory.
    Yields (chunk_paths, images uint8 (m, S, S, 1), errors {path: reason}, sha256 hex digests) where
    chunk_paths, images and digests hold only the films that decoded, in chunk order.
    """
    from core.imaging.loader import ImageLoadError, load_image

    def decode(path):
        try:
            data = path.read_bytes()
        except OSError as error:
            return None, None, f"could not be read: {error.strerror or error}"
        try:
            return load_image(data, image_size), hashlib.sha256(data).hexdigest(), None
        except ImageLoadError as error:
            return None, None, str(error)
        except Exception as error:  # One bad file must not stop a folder of thousands.
            return None, None, f"could not be decoded ({type(error).__name__}: {error})"

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for start in range(0, len(paths), chunk_size):
            chunk = paths[start:start + chunk_size]
            results = list(pool.map(decode, chunk))
            decoded = [(path, image, digest) for path, (image, digest, _) in zip(chunk, results) if image is not None]
            errors = {path: reason for path, (_, _, reason) in zip(chunk, results) if reason is not None}
            images = (np.stack([image for _, image, _ in decoded]) if decoded
                      else np.zeros((0, image_size, image_size, 1), np.uint8))
            yield [path for path, _, _ in decoded], images, errors, [digest for _, _, digest in decoded]


# --------------------------------------------------------------------------------------------------
# Perceptual hashes: the same film resized or re-encoded
# --------------------------------------------------------------------------------------------------

PERCEPTUAL_HASH_METHOD = "phash-dct32-16x16"
"""Name stored with saved hashes, so hashes made by another method are never compared with these."""
PERCEPTUAL_HASH_BITS = 256
NEAR_DUPLICATE_DISTANCE = 32
"""Largest Hamming distance (of 256 bits) at which two films count as the same film.

Chosen on real films (the test in tests/test_beyond.py measures it on ../shared/data/nih-cxr4). At 224 px,
a 512 px PNG saved as a 300 px JPEG (quality 85) lies at most 8 bits from its original, a 1024 px JPEG
(q95) at most 4 and a 128 px JPEG (q50) at most 14 (the same at 64 px). Distinct films lie far apart:
closest pair 62 bits among the 26,565 nih-cxr4 pairs, 50 among 322,803 pediatric-pneumonia pairs and 74
among 185,724 cross pairs, so 0 false matches in 535,092 pairs. 32 sits in the middle of that gap. The
256 px `samples` set (a subset of nih-cxr4) against the demo run: all 33 of its training/validation films
found, none of its 7 test films."""

_DCT_SIDE, _DCT_KEEP = 32, 16
_DCT_MATRIX: np.ndarray | None = None


def _dct_matrix(side: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (side, side): dct(x) = M @ x."""
    frequency = np.arange(side)[:, np.newaxis]
    position = np.arange(side)[np.newaxis, :]
    matrix = np.cos(np.pi * (2 * position + 1) * frequency / (2 * side)) * np.sqrt(2.0 / side)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def perceptual_hash(image: np.ndarray) -> str:
    """A 256-bit perceptual hash (pHash) of one decoded film, as 64 hex characters.

    The film is shrunk to 32 x 32 (box filter: the mean of each cell, so noise and JPEG blocks average
    out), transformed with a 2-D DCT, and the 16 x 16 lowest frequencies are compared with their median
    (the DC term, overall brightness, is left out and its bit is always 0). A film resized, re-encoded as
    JPEG or slightly brightened keeps nearly the same bits; two different films differ in about half.
    Compare hashes with `hamming_distances`; `NEAR_DUPLICATE_DISTANCE` is the match threshold.

    Args:
        image: decoded film, 2-D (height, width) or (height, width, 1), uint8 0..255, such as one film
            of `DatasetScan.images` or of `decode_in_chunks` (hash the arrays you already decoded).

    Returns:
        64 lowercase hex characters (256 bits).

    Raises:
        ValueError: the image is not a 2-D grayscale array of at least 8 x 8 pixels.

    Example::

        hashes = [perceptual_hash(film) for film in scan.images]
    """
    from PIL import Image

    global _DCT_MATRIX
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 or min(array.shape) < 8:
        raise ValueError(
            f"Got an image of shape {array.shape}; expected one decoded grayscale film (height, width) or "
            "(height, width, 1) of at least 8 x 8 pixels, such as core.imaging.loader.load_image output."
        )
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float64)), 0, 255).astype(np.uint8)
    small = np.asarray(Image.fromarray(array).resize((_DCT_SIDE, _DCT_SIDE), Image.Resampling.BOX), np.float64)
    if _DCT_MATRIX is None:
        _DCT_MATRIX = _dct_matrix(_DCT_SIDE)
    low = (_DCT_MATRIX @ small @ _DCT_MATRIX.T)[:_DCT_KEEP, :_DCT_KEEP].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False
    return np.packbits(bits).tobytes().hex()


def perceptual_hashes(images: np.ndarray) -> list[str]:
    """`perceptual_hash` of every film of a stack (n, S, S, 1) or (n, S, S)."""
    return [perceptual_hash(image) for image in images]


def _hash_words(hashes: list[str]) -> np.ndarray:
    """Hex hashes as (n, 4) uint64 words; ValueError for a hash that is not 64 hex characters."""
    words = np.zeros((len(hashes), PERCEPTUAL_HASH_BITS // 64), dtype=np.uint64)
    for row, value in enumerate(hashes):
        try:
            raw = bytes.fromhex(value)
        except (TypeError, ValueError):
            raw = b""
        if len(raw) != PERCEPTUAL_HASH_BITS // 8:
            raise ValueError(f"Got perceptual hash {value!r}; expected {PERCEPTUAL_HASH_BITS // 4} hex characters "
                             "from core.data.scan.perceptual_hash.")
        words[row] = np.frombuffer(raw, dtype=">u8")
    return words


def hamming_distances(hashes_a: list[str], hashes_b: list[str]) -> np.ndarray:
    """All pairwise Hamming distances (int, 0..256) between two lists of perceptual hashes: (len_a, len_b)."""
    words_a, words_b = _hash_words(hashes_a), _hash_words(hashes_b)
    return np.bitwise_count(words_a[:, np.newaxis, :] ^ words_b[np.newaxis, :, :]).sum(axis=-1, dtype=np.int64)


def nearest_hashes(query: list[str], reference: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the distance to and index of the closest reference hash.

    Computed in slices, so memory stays small for thousands x thousands of films. Returns
    (distances (n_query,) int, indices (n_query,) int); with no reference hashes the distances are
    PERCEPTUAL_HASH_BITS + 1 (farther than any real pair) and the indices -1.
    """
    distances = np.full(len(query), PERCEPTUAL_HASH_BITS + 1, dtype=np.int64)
    indices = np.full(len(query), -1, dtype=np.int64)
    if not query or not reference:
        return distances, indices
    words_reference = _hash_words(reference)
    step = max(1, 250_000 // len(reference))
    for start in range(0, len(query), step):
        words_query = _hash_words(query[start:start + step])
        pairwise = np.bitwise_count(words_query[:, np.newaxis, :] ^ words_reference[np.newaxis, :, :]).sum(
            axis=-1, dtype=np.int64)
        indices[start:start + step] = pairwise.argmin(axis=1)
        distances[start:start + step] = pairwise.min(axis=1)
    return distances, indices
