"""Overlap of an evaluated folder with a run's own training and validation films.

A figure measured on films the model learnt from is optimistic. `check_overlap` counts the evaluated films
whose bytes (SHA-256), picture (a perceptual hash within NEAR_DUPLICATE_DISTANCE bits: a resized or
re-encoded copy) or patient (labels.csv) the run saw in training or validation. The seen films' perceptual
hashes are stored in <run>/perceptual_hashes.json at training time (`write_run_hashes`), or computed once
from the run's dataset folder for a run trained before that file existed (`run_hashes`).
"""

from __future__ import annotations

from pathlib import Path

from core.data.hashes import NEAR_DUPLICATE_DISTANCE, PERCEPTUAL_HASH_METHOD, nearest_hashes, perceptual_hashes
from core.data.scan import decode_in_chunks
from core.runs.artifacts import HASHES_FILE_NAME, SPLIT_FILE_NAME, now_iso, read_json, read_split_csv, write_json_atomic
from core.runs.registry import Run


def check_overlap(run: Run, files: list[str], digests: list[str], patients: dict[str, str],
                  film_hashes: list[str] | None = None) -> dict:
    """Count evaluated films whose bytes, picture or patient the run saw in training or validation.

    Args:
        run: the evaluated run (its split.csv lists the training and validation films).
        files: paths relative to the evaluated folder.
        digests: their SHA-256 (from decoding, so no file is read twice).
        patients: labels.csv patient ids of the evaluated folder.
        film_hashes: their perceptual hashes (core.data.hashes.perceptual_hash of the decoded films), or None
            to skip the perceptual check.

    Returns:
        {"checked", "identical_files", "shared_patients", "near_duplicates", "examples", "note",
        "perceptual"}: near_duplicates counts films whose bytes differ from every seen film but whose
        picture lies within NEAR_DUPLICATE_DISTANCE bits of one (a resized or re-encoded copy).
        "perceptual" is {"checked": True, "threshold", "bits", "near_duplicates", "matches": [{"file",
        "seen_file", "distance"}]} or {"checked": False, "reason"} when the seen films' hashes are neither
        stored in the run nor computable (dataset folder missing). {"checked": False, "reason"} overall
        when the run has no split.csv.
    """
    split_path = run.path / SPLIT_FILE_NAME
    if not split_path.exists():
        return {"checked": False, "reason": f"the run has no {SPLIT_FILE_NAME}",
                "perceptual": {"checked": False, "reason": f"the run has no {SPLIT_FILE_NAME}"}}
    seen = [row for row in read_split_csv(split_path) if row["subset"] in ("train", "val")]
    seen_hashes = {row["sha256"] for row in seen}
    seen_patients = {row["patient_id"] for row in seen if row.get("patient_id")}
    same_bytes, same_patient = [], []
    for rel_path, digest in zip(files, digests):
        if digest in seen_hashes:
            same_bytes.append(rel_path)
        patient = patients.get(rel_path) or patients.get(Path(rel_path).name)
        if patient and patient in seen_patients:
            same_patient.append(rel_path)
    if film_hashes is None:
        perceptual = {"checked": False, "reason": "no perceptual hashes of the evaluated films were given"}
    else:
        perceptual = _perceptual_overlap(run, files, digests, film_hashes, seen_hashes)
    near = [match["file"] for match in perceptual.get("matches", [])]
    return {"checked": True, "identical_files": len(same_bytes), "shared_patients": len(same_patient),
            "near_duplicates": perceptual.get("near_duplicates", 0),
            "examples": (same_bytes + near + same_patient)[:20],
            "note": "Patient overlap assumes both datasets use the same patient id scheme.",
            "perceptual": perceptual}


def _perceptual_overlap(run: Run, files, digests, film_hashes, seen_digests) -> dict:
    """The perceptual part of check_overlap: films within the threshold of a seen film, bytes differing."""
    stored, reason = run_hashes(run)
    if stored is None:
        return {"checked": False, "reason": reason}
    seen_files, seen_film_hashes = list(stored["films"]), [entry["phash"] for entry in stored["films"].values()]
    distances, nearest = nearest_hashes(list(film_hashes), seen_film_hashes)
    matches = [
        {"file": file, "seen_file": seen_files[index], "distance": int(distance)}
        for file, digest, distance, index in zip(files, digests, distances, nearest)
        # Byte-identical films are already counted as identical_files.
        if distance <= NEAR_DUPLICATE_DISTANCE and digest not in seen_digests
    ]
    return {"checked": True, "method": PERCEPTUAL_HASH_METHOD, "threshold": NEAR_DUPLICATE_DISTANCE,
            "bits": 256, "seen_films": len(seen_files), "near_duplicates": len(matches),
            "matches": matches[:50]}


def write_run_hashes(run_dir: Path, files: list[str], digests: list[str], film_hashes: list[str],
                     image_size: int) -> Path:
    """Write <run>/perceptual_hashes.json: {"method", "image_size", "films": {path: {"sha256", "phash"}}}.

    Holds the training and validation films only (the films the model learnt from or was tuned on).
    """
    path = Path(run_dir) / HASHES_FILE_NAME
    write_json_atomic(path, {
        "method": PERCEPTUAL_HASH_METHOD, "image_size": int(image_size), "created": now_iso(),
        "films": {file: {"sha256": digest, "phash": value}
                  for file, digest, value in zip(files, digests, film_hashes)},
    })
    return path


def run_hashes(run: Run, progress=None) -> tuple[dict | None, str | None]:
    """The perceptual hashes of a run's training and validation films, and why they are missing.

    Read from <run>/perceptual_hashes.json (written at training time). For a run trained before that file
    existed, the films listed in split.csv are decoded from the run's dataset folder at the run's image
    size, hashed, and the file is written so this happens once. A film whose bytes changed since training
    (SHA-256 differs from split.csv) is left out.

    Returns:
        (hashes, None) with the perceptual_hashes.json content, or (None, reason) when they cannot be had
        (no split.csv, or the dataset folder is not on this machine).
    """
    stored = read_json(run.path / HASHES_FILE_NAME)
    image_size = int(run.config.get("image_size", 224))
    if (isinstance(stored, dict) and stored.get("method") == PERCEPTUAL_HASH_METHOD
            and stored.get("image_size") == image_size and isinstance(stored.get("films"), dict)):
        return stored, None
    split_path = run.path / SPLIT_FILE_NAME
    if not split_path.exists():
        return None, f"the run has no {SPLIT_FILE_NAME}"
    root = run.dataset_root()
    if root is None:
        recorded = (run.data_report or {}).get("root", "?")
        return None, (f"the run's dataset folder {recorded} is not on this machine and the run has no "
                      f"{HASHES_FILE_NAME}, so resized or re-encoded copies of its training films could not "
                      "be looked for")
    rows = {str(root / row["path"]): row for row in read_split_csv(split_path) if row["subset"] in ("train", "val")}
    files, digests, film_hashes = [], [], []
    for paths, images, _, chunk_digests in decode_in_chunks([Path(p) for p in rows], image_size):
        for path, digest, value in zip(paths, chunk_digests, perceptual_hashes(images)):
            row = rows[str(path)]
            if digest == row["sha256"]:
                files.append(row["path"])
                digests.append(digest)
                film_hashes.append(value)
        if progress is not None:
            progress(len(files), len(rows))
    try:
        write_run_hashes(run.path, files, digests, film_hashes, image_size)
    except OSError:
        pass  # A read-only run folder: the hashes are simply computed again next time.
    return {"method": PERCEPTUAL_HASH_METHOD, "image_size": image_size,
            "films": {f: {"sha256": d, "phash": h} for f, d, h in zip(files, digests, film_hashes)}}, None
