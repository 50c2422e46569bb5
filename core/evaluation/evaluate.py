"""Evaluation of a run: on its own test split at training time, and on any external dataset folder.

Every figure is computed by `core.evaluation.metrics.classification_report`, so the run's `metrics.json`,
`python -m core evaluate --json` and the app all show the same numbers. The schemas of what is written and
returned are core.runs.schema.RunMetrics and ExternalMetrics. The model card is not written here: training
writes it once the run has been evaluated (core.training.run), so evaluation depends on no card or review code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.data.hashes import perceptual_hashes
from core.data.labels import read_patient_ids
from core.data.listing import list_candidate_files
from core.data.scan import decode_in_chunks
from core.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature
from core.evaluation.conformal import run_conformal
from core.evaluation.metrics import classification_report
from core.evaluation.overlap import check_overlap, write_run_hashes
from core.runs.artifacts import (
    EXTERNAL_FILE_NAME,
    METRICS_FILE_NAME,
    PREDICTIONS_FILE_NAME,
    now_iso,
    read_json,
    write_json_atomic,
    write_predictions_csv,
)
from core.runs.registry import Run, added_file_path, load_run, load_run_model
from core.runs.schema import ExternalMetrics, RunMetrics
from core.serving.batch import PREDICT_BATCH_SIZE, predict_probabilities, rows_in_chunks
from core.serving.lite import cached_path, load_engine

ENGINES = ("auto", "lite", "keras")
"""evaluate_folder's engine choices (the CLI's --engine of `evaluate` reads them from here)."""
HASH_CHUNK = 512


def write_run_evaluation(run_dir: Path, model, scan, subsets, class_names, config: TrainConfig,
                         training: dict, probabilities_of=None) -> RunMetrics:
    """Evaluate the best model on validation and test films of a training run; write the run's files.

    Writes metrics.json (test metrics + "training", "validation", "calibration" and "conformal" sections),
    predictions.csv (validation and test films) and perceptual_hashes.json (training and validation films,
    for the overlap check of later external evaluations). Returns the metrics dict. The caller writes the
    model card from it (core.runs.card.write_model_card).

    probabilities_of: rows -> the model's probabilities (n, k) of those films, when the caller computes
    them anyway (core.training.outputs.ModelOutputs: one forward pass a film for every consumer); by default
    `model` predicts them here.
    """
    labels = scan.labels
    index = {s: np.flatnonzero(subsets == s) for s in ("val", "test")}
    if probabilities_of is None:
        # A chunk of films at a time: training's films may be an on-disk cache larger than memory.
        def probabilities_of(rows):
            return rows_in_chunks(lambda films: predict_probabilities(model, films), scan.images, rows)
    probabilities = {s: probabilities_of(i) for s, i in index.items()}
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
        # On the raw softmax: the temperature was fitted on the same validation films.
        conformal=run_conformal(probabilities["val"], labels[index["val"]], probabilities["test"],
                                labels[index["test"]], class_names, level=config.set_level),
    )
    write_json_atomic(run_dir / METRICS_FILE_NAME, metrics)
    order = np.concatenate([index["val"], index["test"]])
    write_predictions_csv(
        run_dir / PREDICTIONS_FILE_NAME,
        [scan.records[i].path for i in order], [scan.records[i].label for i in order],
        np.concatenate([probabilities["val"], probabilities["test"]]), class_names,
        ["val"] * len(index["val"]) + ["test"] * len(index["test"]),
    )
    seen = np.flatnonzero(np.isin(subsets, ("train", "val")))
    # Read a chunk of rows at a time (one film at a time costs a call each on the on-disk cache).
    hashes = [h for start in range(0, len(seen), HASH_CHUNK) for h in perceptual_hashes(
        scan.images[seen[start:start + HASH_CHUNK]])]
    write_run_hashes(run_dir, [scan.records[i].path for i in seen],
                     [scan.records[i].sha256 for i in seen], hashes, image_size=int(scan.images.shape[1]))
    return metrics


LITE_WORTH_FILMS = 1000
"""From this many films on, evaluate_folder(engine="auto") converts the model to TensorFlow Lite first: the
one-off conversion is repaid by the faster engine's throughput (both measured in bench/results/)."""


def evaluate_folder(run: Run | str | os.PathLike, data_dir: str | os.PathLike, *,
                    batch_size: int = PREDICT_BATCH_SIZE, chunk_size: int = 256, progress=None,
                    engine: str = "auto") -> ExternalMetrics:
    """Evaluate a run on a whole external dataset folder, streaming from disk in bounded memory.

    Folder classes are matched to the run's classes by name (aliases such as NORMAL -> Normal apply);
    films of classes the model does not know are skipped and listed. Before the figures, the data are
    checked against the run's own split: films with identical bytes, films that are resized or re-encoded
    copies (perceptual hash) and patients (from labels.csv) that the model saw in training or validation
    are counted under "overlap" (see `check_overlap`).

    engine: "keras", "lite" (core.serving.lite: the same probabilities within 1e-5, more films per second;
    see bench/results/) or "auto" (lite when a converted copy is cached or the folder holds at least
    LITE_WORTH_FILMS films; Keras when the fast engine cannot serve the model).

    Returns core.runs.schema.ExternalMetrics: the metrics.json report plus "data_dir", "skipped",
    "overlap" (core.evaluation.overlap.check_overlap), "engine" and "predictions" (one dict per film: file,
    label, predicted, probabilities).
    """
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
    if engine not in ENGINES:
        raise ValueError(f"Got engine={engine!r}; must be one of {ENGINES}.")
    model = load_run_model(run)
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
        if engine == "lite" or n_films >= LITE_WORTH_FILMS or cached_path(run.model_path).is_file():
            lite, _ = load_engine(model, run.model_path)  # None: Keras below, which serves any model.
            if lite is not None:
                return lite.probabilities, lite.name
    return (lambda images: predict_probabilities(model, images, batch_size)), "Keras"


def external_result_path(run_dir: str | os.PathLike) -> Path:
    """Where a run's last external validation is kept: its run folder, or the user data dir for a shipped run
    (its tracked files stay as shipped, as review tags do)."""
    return added_file_path(run_dir, EXTERNAL_FILE_NAME, "external")


def save_external_result(run_dir: str | os.PathLike, external: ExternalMetrics) -> Path:
    """Keep `evaluate_folder`'s result as the run's last external validation (replacing the previous one);
    OSError when the place cannot be written."""
    path = external_result_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, external)
    return path


def load_external_result(run_dir: str | os.PathLike) -> ExternalMetrics | None:
    """The run's last kept external validation, or None when there is none, it cannot be read, or it is not
    this run's."""
    result = read_json(external_result_path(run_dir))
    if not isinstance(result, dict) or result.get("run_id") != Path(run_dir).name or "per_class" not in result:
        return None
    return result
