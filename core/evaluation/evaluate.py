"""Evaluation of a run: on its own test split at training time, and on any external dataset folder.

Every figure is computed by `core.evaluation.metrics.classification_report` (schema documented there), so the run's
`metrics.json`, `python -m core evaluate --json` and the app all show the same numbers.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.data.scan import NEAR_DUPLICATE_DISTANCE, PERCEPTUAL_HASH_METHOD, nearest_hashes, perceptual_hashes
from core.evaluation.metrics import apply_temperature, classification_report, expected_calibration_error, fit_temperature
from core.runs.registry import Run, load_run, now_iso, read_json, write_json_atomic

PREDICT_BATCH_SIZE = 64
HASHES_FILE_NAME = "perceptual_hashes.json"


def predict_probabilities(model, images: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
    """Softmax probabilities (n, k) for raw-pixel films (n, S, S, 1), in inference mode."""
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)


def write_predictions_csv(path, files, labels, probabilities, class_names, subsets) -> None:
    """predictions.csv: file, label, predicted, one probability column per class, subset."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "predicted", *[f"p_{name}" for name in class_names], "subset"])
        for file, label, row, subset in zip(files, labels, probabilities, subsets):
            writer.writerow([file, label, class_names[int(np.argmax(row))],
                             *[f"{p:.6f}" for p in row], subset])


def read_predictions_csv(path: str | os.PathLike, class_names: list[str]) -> list[dict]:
    """Rows of predictions.csv with probabilities parsed into a `probabilities` dict."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            row["probabilities"] = {name: float(row.pop(f"p_{name}")) for name in class_names}
            row["confidence"] = row["probabilities"][row["predicted"]]
            rows.append(row)
    return rows


def write_run_evaluation(run_dir: Path, model, scan, subsets, class_names, config: TrainConfig,
                         training: dict) -> dict:
    """Evaluate the best model on validation and test films of a training run; write the run's files.

    Writes metrics.json (test metrics + "training", "validation" and "calibration" sections),
    predictions.csv (validation and test films), perceptual_hashes.json (training and validation films,
    for the overlap check of later external evaluations) and model_card.md. Returns the metrics dict.
    """
    labels = scan.labels
    index = {s: np.flatnonzero(subsets == s) for s in ("val", "test")}
    probabilities = {s: predict_probabilities(model, scan.images[i]) for s, i in index.items()}
    metrics = classification_report(labels[index["test"]], probabilities["test"].argmax(1), class_names,
                                     probabilities["test"], seed=config.seed)
    validation = classification_report(labels[index["val"]], probabilities["val"].argmax(1), class_names,
                                       probabilities["val"], n_bootstrap=0, seed=config.seed)
    temperature = fit_temperature(probabilities["val"], labels[index["val"]])
    calibration = {
        "temperature": float(temperature),
        "fitted_on": "validation split",
        "ece_val_before": expected_calibration_error(labels[index["val"]], probabilities["val"]),
        "ece_val_after": expected_calibration_error(labels[index["val"]],
                                                    apply_temperature(probabilities["val"], temperature)),
        "ece_test_before": expected_calibration_error(labels[index["test"]], probabilities["test"]),
        "ece_test_after": expected_calibration_error(labels[index["test"]],
                                                     apply_temperature(probabilities["test"], temperature)),
    }
    metrics.update(
        subset="test",
        evaluated=now_iso(),
        training=training,
        validation={"n": validation["n"], "accuracy": validation["accuracy"],
                    "macro_f1": validation["macro"]["f1"], "mean_ovr_accuracy": validation["mean_ovr_accuracy"]},
        calibration=calibration,
    )
    write_json_atomic(run_dir / "metrics.json", metrics)
    order = np.concatenate([index["val"], index["test"]])
    write_predictions_csv(
        run_dir / "predictions.csv",
        [scan.records[i].path for i in order], [scan.records[i].label for i in order],
        np.concatenate([probabilities["val"], probabilities["test"]]), class_names,
        ["val"] * len(index["val"]) + ["test"] * len(index["test"]),
    )
    seen = np.flatnonzero(np.isin(subsets, ("train", "val")))
    write_run_hashes(run_dir, [scan.records[i].path for i in seen],
                     [scan.records[i].sha256 for i in seen], perceptual_hashes(scan.images[seen]),
                     image_size=int(scan.images.shape[1]))
    from core.runs.card import write_model_card

    write_model_card(run_dir, config, metrics, read_json(run_dir / "data_report.json", {}))
    return metrics


LITE_WORTH_FILMS = 1000
"""From this many films on, evaluate_folder(engine="auto") converts the model to TensorFlow Lite first: the
conversion (about 12 s for alpha 1.0) is repaid by a throughput about 2.8x Keras's on these CPUs."""


def evaluate_folder(run: Run | str | os.PathLike, data_dir: str | os.PathLike, *,
                    batch_size: int = PREDICT_BATCH_SIZE, chunk_size: int = 256, progress=None,
                    engine: str = "auto") -> dict:
    """Evaluate a run on a whole external dataset folder, streaming from disk in bounded memory.

    Folder classes are matched to the run's classes by name (aliases such as NORMAL -> Normal apply);
    films of classes the model does not know are skipped and listed. Before the figures, the data are
    checked against the run's own split: films with identical bytes, films that are resized or re-encoded
    copies (perceptual hash) and patients (from labels.csv) that the model saw in training or validation
    are counted under "overlap" (see `check_overlap`).

    engine: "keras", "lite" (core.serving.lite: the same probabilities within 1e-5, about 2.8x the films per
    second here) or "auto" (lite when a converted copy is cached or the folder holds at least
    LITE_WORTH_FILMS films; Keras when the fast engine cannot serve the model).

    Returns the metrics.json schema plus "data_dir", "skipped", "overlap", "engine" and "predictions" (one
    dict per film: file, label, predicted, probabilities).
    """
    from core.data.scan import decode_in_chunks, list_candidate_files, read_patient_ids
    from core.model import load_model

    run = run if isinstance(run, Run) else load_run(run)
    class_names = run.classes
    image_size = int(run.config.get("image_size", 224))
    root = Path(data_dir).expanduser().resolve()
    _, candidates, skipped = list_candidate_files(root)
    known = [(path, label) for path, label, _ in candidates if label in class_names]
    for path, label, _ in candidates:
        if label not in class_names:
            skipped.append({"path": path.relative_to(root).as_posix(),
                            "reason": f"class '{label}' is not one of the model's classes {class_names}"})
    if not known:
        raise ValueError(
            f"No film in {root} belongs to a class this model knows ({', '.join(class_names)}). "
            "Name the class folders after the model's classes."
        )
    if engine not in ("auto", "lite", "keras"):
        raise ValueError(f"Got engine={engine!r}; must be 'auto', 'lite' or 'keras'.")
    model = load_model(run.model_path)
    score, engine_used = _scorer(model, run, engine, len(known), batch_size)
    label_of = {path: class_names.index(label) for path, label in known}
    y_true, scores, files, digests, film_hashes = [], [], [], [], []
    done = 0
    for paths, images, errors, chunk_digests in decode_in_chunks([p for p, _ in known], image_size, chunk_size):
        skipped.extend({"path": p.relative_to(root).as_posix(), "reason": r} for p, r in errors.items())
        scores.append(score(images))
        y_true.extend(label_of[p] for p in paths)
        files.extend(p.relative_to(root).as_posix() for p in paths)
        digests.extend(chunk_digests)
        # Hashed from the films just decoded for the model, so no file is decoded twice.
        film_hashes.extend(perceptual_hashes(images))
        done += len(paths) + len(errors)
        if progress is not None:
            progress(done, len(known))
    if not files:
        raise ValueError(f"None of the films in {root} could be decoded; see the skipped list.")
    y_true = np.array(y_true)
    y_score = np.concatenate(scores)
    metrics = classification_report(y_true, y_score.argmax(1), class_names, y_score,
                                    seed=int(run.config.get("seed", 0)))
    metrics.update(
        subset="external", data_dir=str(root), run_id=run.run_id, evaluated=now_iso(), skipped=skipped,
        engine=engine_used,
        overlap=check_overlap(run, files, digests, read_patient_ids(root), film_hashes),
        predictions=[{"file": f, "label": class_names[t], "predicted": class_names[int(s.argmax())],
                      "probabilities": {c: float(p) for c, p in zip(class_names, s)}}
                     for f, t, s in zip(files, y_true, y_score)],
    )
    return metrics


def _scorer(model, run: Run, engine: str, n_films: int, batch_size: int):
    """(images -> probabilities, engine name) for evaluate_folder."""
    if engine != "keras":
        from core.serving.lite import cached_path, load_engine

        if engine == "lite" or n_films >= LITE_WORTH_FILMS or cached_path(run.model_path).is_file():
            lite, _ = load_engine(model, run.model_path)  # None: Keras below, which serves any model.
            if lite is not None:
                return lite.probabilities, lite.name
    return (lambda images: predict_probabilities(model, images, batch_size)), "Keras"


def check_overlap(run: Run, files: list[str], digests: list[str], patients: dict[str, str],
                  film_hashes: list[str] | None = None) -> dict:
    """Count evaluated films whose bytes, picture or patient the run saw in training or validation.

    Args:
        run: the evaluated run (its split.csv lists the training and validation films).
        files: paths relative to the evaluated folder.
        digests: their SHA-256 (from decoding, so no file is read twice).
        patients: labels.csv patient ids of the evaluated folder.
        film_hashes: their perceptual hashes (core.data.scan.perceptual_hash of the decoded films), or None
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
    from core.data.scan import read_split_csv

    split_path = run.path / "split.csv"
    if not split_path.exists():
        return {"checked": False, "reason": "the run has no split.csv",
                "perceptual": {"checked": False, "reason": "the run has no split.csv"}}
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
    from core.data.scan import decode_in_chunks, read_split_csv

    stored = read_json(run.path / HASHES_FILE_NAME)
    image_size = int(run.config.get("image_size", 224))
    if (isinstance(stored, dict) and stored.get("method") == PERCEPTUAL_HASH_METHOD
            and stored.get("image_size") == image_size and isinstance(stored.get("films"), dict)):
        return stored, None
    split_path = run.path / "split.csv"
    if not split_path.exists():
        return None, "the run has no split.csv"
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
