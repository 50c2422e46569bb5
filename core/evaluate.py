"""Evaluation of a run: on its own test split at training time, and on any external dataset folder.

Every figure is computed by `core.metrics.classification_report` (schema documented there), so the run's
`metrics.json`, `python -m core evaluate --json` and the app all show the same numbers.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.metrics import apply_temperature, classification_report, expected_calibration_error, fit_temperature
from core.registry import Run, load_run, now_iso, read_json, write_json_atomic

PREDICT_BATCH_SIZE = 64


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
    predictions.csv (validation and test films) and model_card.md. Returns the metrics dict.
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
    from core.card import write_model_card

    write_model_card(run_dir, config, metrics, read_json(run_dir / "data_report.json", {}))
    return metrics


def evaluate_folder(run: Run | str | os.PathLike, data_dir: str | os.PathLike, *,
                    batch_size: int = PREDICT_BATCH_SIZE, chunk_size: int = 256, progress=None) -> dict:
    """Evaluate a run on a whole external dataset folder, streaming from disk in bounded memory.

    Folder classes are matched to the run's classes by name (aliases such as NORMAL -> Normal apply);
    films of classes the model does not know are skipped and listed. Before the figures, the data are
    checked against the run's own split: films with identical bytes and patients (from labels.csv) that
    the model saw in training are counted under "overlap".

    Returns the metrics.json schema plus "data_dir", "skipped", "overlap" and "predictions" (one dict per
    film: file, label, predicted, probabilities).
    """
    from core.data import decode_in_chunks, list_candidate_files, read_patient_ids
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
    model = load_model(run.model_path)
    label_of = {path: class_names.index(label) for path, label in known}
    y_true, scores, files, digests = [], [], [], []
    done = 0
    for paths, images, errors, chunk_digests in decode_in_chunks([p for p, _ in known], image_size, chunk_size):
        skipped.extend({"path": p.relative_to(root).as_posix(), "reason": r} for p, r in errors.items())
        scores.append(predict_probabilities(model, images, batch_size))
        y_true.extend(label_of[p] for p in paths)
        files.extend(p.relative_to(root).as_posix() for p in paths)
        digests.extend(chunk_digests)
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
        overlap=check_overlap(run, files, digests, read_patient_ids(root)),
        predictions=[{"file": f, "label": class_names[t], "predicted": class_names[int(s.argmax())],
                      "probabilities": {c: float(p) for c, p in zip(class_names, s)}}
                     for f, t, s in zip(files, y_true, y_score)],
    )
    return metrics


def check_overlap(run: Run, files: list[str], digests: list[str], patients: dict[str, str]) -> dict:
    """Count evaluated films whose bytes, or whose patient, were in the run's training or validation set.

    files: paths relative to the evaluated folder; digests: their SHA-256 (from decoding, so no file is
    read twice); patients: labels.csv patient ids of the evaluated folder.
    """
    from core.data import read_split_csv

    split_path = run.path / "split.csv"
    if not split_path.exists():
        return {"checked": False, "reason": "the run has no split.csv"}
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
    return {"checked": True, "identical_files": len(same_bytes), "shared_patients": len(same_patient),
            "examples": (same_bytes + same_patient)[:20],
            "note": "Patient overlap assumes both datasets use the same patient id scheme."}
