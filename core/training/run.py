"""Training a run: dataset check -> split -> fit -> evaluation -> model card and gates -> heatmap check -> a run.

`train_run` is what `python -m core train` and the app's background job call. It decodes every film once
(the integrity check and the training cache are the same pass), fits the model (core.training.fit: with
EarlyStopping, ModelCheckpoint on the lowest validation loss and a LearningRateScheduler, progress written
while it trains, a stop request honoured between batches), evaluates it, writes the model card and the
gate's statistics, checks its heatmaps (explain_check.json, when config.explain_check_films is above 0), and
only then renames the staging folder into `models/<run_id>/`. The staging folder's
status.json says "running", then "finished", "cancelled" or "failed" with the error.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from core.config import TrainConfig
from core.data.listing import check_dataset_root
from core.data.scan import assign_subsets, scan_dataset
from core.data.split import split_summary
from core.evaluation.evaluate import LITE_WORTH_FILMS, write_run_evaluation
from core.explain.faithfulness import check_run
from core.runs import jobs
from core.runs.artifacts import (
    CLASSES_FILE_NAME,
    CONFIG_FILE_NAME,
    DATA_REPORT_FILE_NAME,
    PROGRESS_FILE_NAME,
    SPLIT_FILE_NAME,
    STATUS_FILE_NAME,
    STOP_FILE_NAME,
    dataset_name,
    now_iso,
    read_json,
    write_json_atomic,
    write_split_csv,
)
from core.runs.card import write_model_card
from core.runs.registry import Run, check_writable, new_run_id, staging_dir_for
from core.runs.staging import clean_staging
from core.serving.gate import fit_gate, save_gate
from core.serving.population_fit import fit_population_for_run
from core.serving.similar import MAX_INDEX_FILMS, save_similar_index
from core.settings import default_models_dir, job_log
from core.training.cache import decode_to_disk, remove_film_cache
from core.training.distributed import checkpoint_folder, cluster_role
from core.training.fit import fit, write_progress
from core.training.outputs import ModelOutputs, even_sample

CANCELLED_MESSAGE = "Training was cancelled by the user; no model was registered."


class TrainingCancelled(RuntimeError):
    """The user asked the training to stop."""


def train_run(
    data_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> Path | None:
    """Train a model on a dataset folder and register it as a finished run.

    Args:
        data_dir: dataset folder (class folders, or train/val/test folders of class folders).
        config: the recipe; defaults to the paper's (`TrainConfig()`).
        out_dir: the run folder to create; default `models_dir/<run_id>`. It must not exist yet.
        models_dir: where runs and the training lock live; default `models/` (or $PARU_MODELS_DIR).
        log: receives one line per step.

    Returns:
        The path of the finished run folder; None on a worker other than the chief of a multi-worker
        cluster (`--distribute multiworker`): such a worker trains but writes no run, progress or lock.

    Raises:
        ValueError: bad dataset, impossible split, unwritable output; nothing was trained.
        jobs.TrainingBusyError: another training is running.
        TrainingCancelled: a stop was requested; the staging folder is kept, marked "cancelled".
    """
    config = config or TrainConfig()
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    data_root = check_dataset_root(data_dir)
    is_chief = cluster_role()[0] if config.distribute == "multiworker" else True
    checkpoints = checkpoint_folder(models_dir, data_root, config) if config.distribute == "multiworker" else None
    if not is_chief:
        return _train_as_worker(data_root, config, checkpoints, log)
    run_dir = Path(out_dir) if out_dir else models_dir / new_run_id(data_root, config.preset)
    run_dir = run_dir.resolve()
    if run_dir.exists():
        raise ValueError(f"{run_dir} already exists; Paru never overwrites a run. Choose another --out.")
    check_writable(run_dir.parent)
    check_writable(models_dir)
    staging = staging_dir_for(run_dir)
    lock_info = {"run_id": run_dir.name, "staging_dir": str(staging), "run_dir": str(run_dir),
                 "log": job_log(), "data_dir": str(data_root)}
    jobs.acquire_lock(models_dir, lock_info)
    stop = {"flag": False}
    previous_handler = None
    try:
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    except ValueError:
        pass  # Not the main thread (for example inside a test runner thread): rely on the STOP file.

    def stop_requested() -> bool:
        return stop["flag"] or (staging / STOP_FILE_NAME).exists()

    outcome = {"run_id": run_dir.name, "run_dir": str(run_dir), "state": "failed"}
    try:
        # Under the lock no other training runs here: what earlier failed or killed ones left is cleaned.
        clean_staging(models_dir, log=log, keep=staging)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        write_json_atomic(staging / STATUS_FILE_NAME, {"state": "running", "started": now_iso(), "pid": os.getpid()})
        _train_into(staging, data_root, config, log, stop_requested, checkpoints, run_id=run_dir.name)
        if stop_requested():  # Asked during the evaluation: the run must not be registered after all.
            raise TrainingCancelled(CANCELLED_MESSAGE)
        remove_film_cache(staging)
        # progress.json describes a training under way; a finished run is described by its status.json.
        (staging / PROGRESS_FILE_NAME).unlink(missing_ok=True)
        write_json_atomic(staging / STATUS_FILE_NAME, {
            **(_read(staging / STATUS_FILE_NAME)), "state": "finished", "finished": now_iso()})
        os.replace(staging, run_dir)
        outcome["state"] = "finished"
        log(f"Finished run: {run_dir}")
        return run_dir
    except TrainingCancelled as error:
        outcome.update(state="cancelled", error=str(error))
        _mark(staging, "cancelled", str(error))
        raise
    except BaseException as error:
        message = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        outcome.update(state="failed", error=message)
        _mark(staging, "failed", message, traceback.format_exc())
        raise
    finally:
        remove_film_cache(staging)
        jobs.record_last_job(models_dir, outcome)
        jobs.release_lock(models_dir)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _train_as_worker(data_root: Path, config: TrainConfig, checkpoints: Path, log) -> None:
    """A non-chief worker of a cluster: the same dataset check, split and fit as the chief, in a scratch
    folder deleted afterwards. A stop requested on the chief reaches it through the training loop."""
    scratch = Path(tempfile.mkdtemp(prefix="paru-worker-"))
    try:
        _train_into(scratch, data_root, config, log, lambda: False, checkpoints, chief=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log("This worker's share of the training is done; the chief (worker 0) registers the run.")
    return None


def _read(path: Path) -> dict:
    return read_json(path, {}) or {}


def _mark(staging: Path, state: str, message: str, details: str = "") -> None:
    if staging.is_dir():
        write_json_atomic(staging / STATUS_FILE_NAME, {**_read(staging / STATUS_FILE_NAME), "state": state,
                                                    "ended": now_iso(), "error": message, "traceback": details})


def _train_into(staging: Path, data_root: Path, config: TrainConfig, log, stop_requested,
                checkpoints: Path | None = None, chief: bool = True, run_id: str | None = None) -> None:
    """Check, split, fit, evaluate into `staging`; a non-chief worker (chief=False) stops after the fit and
    writes nothing there but the decoded-film cache."""
    started = time.monotonic()
    writes = write_progress if chief else (lambda *_: None)
    state = {"phase": "checking", "epoch": 0, "epochs": config.warmup_epochs + config.epochs, "batch": 0,
             "batches": 0, "started": now_iso(), "pid": os.getpid()}
    if chief:
        config.save(staging / CONFIG_FILE_NAME)
    writes(staging, state)

    log(f"Checking and decoding every film in {data_root} ...")

    def check_stop(*_):
        if stop_requested():
            raise TrainingCancelled("Training was cancelled while the dataset was being checked.")

    def decode_progress(done, total):
        state.update(files_done=done, files_total=total)
        writes(staging, state)
        check_stop()

    # Two passes, each film decoded once: the scan hashes every file (duplicates, sizes, headers); the
    # decode into the staging folder's film cache finds the films that do not decode.
    scan = scan_dataset(data_root, image_size=config.image_size, decode=False, progress=check_stop)
    scan = decode_to_disk(scan, staging, config.image_size, progress=decode_progress)
    decode_seconds = time.monotonic() - started
    subsets = assign_subsets(scan, fractions=config.split, seed=config.seed)
    labels = scan.labels
    class_names = scan.class_names
    # The dataset is recorded by its name under the data root, never a folder of this machine.
    report = {**scan.report(config.split), "root": dataset_name(data_root),
              "subsets": split_summary(labels, subsets, class_names), "decode_seconds": round(decode_seconds, 2),
              "split_fractions": list(config.split), "seed": config.seed}
    if chief:
        write_json_atomic(staging / CLASSES_FILE_NAME, class_names)
        write_split_csv(staging / SPLIT_FILE_NAME, scan, subsets)
        write_json_atomic(staging / DATA_REPORT_FILE_NAME, report)
    log(f"{len(scan.records)} films usable, {len(scan.skipped)} skipped; classes {class_names}; "
        f"split {report['subsets']} (decoded once in {decode_seconds:.1f} s)")
    for item in scan.skipped[:20]:
        log(f"  skipped {item['path']}: {item['reason']}")

    index = {s: np.flatnonzero(subsets == s) for s in ("train", "val", "test")}
    if len(index["val"]) == 0:
        raise ValueError("The split left no validation films; use a split with a validation fraction above 0.")
    fitted = fit(staging, scan.images, labels, index, class_names, config, state, log, stop_requested,
                 checkpoints)
    if fitted is None:
        raise TrainingCancelled(CANCELLED_MESSAGE)
    if not chief:
        return
    model, history_rows, best_epoch = fitted.model, fitted.history, fitted.best_epoch
    train_seconds = time.monotonic() - started

    state.update(phase="evaluating")
    write_progress(staging, state)
    # One forward pass a film serves the evaluation, both gates and similar cases (core.training.outputs).
    # The first gate and similar cases read an even sample of at most MAX_INDEX_FILMS training (and as many
    # validation) films: similar cases keep no more, and the gate's mean and few principal directions of the
    # pooled features are estimated as well from that many films as from all of a large dataset's.
    # TensorFlow Lite from as many films as evaluate_folder converts for: the conversion is repaid.
    outputs = ModelOutputs(model, scan.images, engine="lite" if len(scan.records) >= LITE_WORTH_FILMS else "keras")
    gate_rows = index if fitted.features else {s: even_sample(index[s], MAX_INDEX_FILMS) for s in ("train", "val")}
    if not fitted.features:  # Features first, so no film is pushed through the model twice.
        outputs.compute(np.concatenate([gate_rows["train"], gate_rows["val"]]))
    metrics = write_run_evaluation(
        staging, model, scan, subsets, class_names, config,
        training={"best_epoch": best_epoch, "epochs_run": len(history_rows),
                  "stopped_early": len(history_rows) < config.warmup_epochs + config.epochs,
                  "wall_time_seconds": round(train_seconds, 1), "decode_seconds": round(decode_seconds, 2)},
        probabilities_of=outputs.probabilities,
    )
    # The card summarises the evaluation, so it is written after it (and rewritten on review changes).
    write_model_card(staging, config, metrics, report)
    # The "is this a chest film?" gate's statistics: fitted on training films, threshold on validation.
    # A head trained on features hands back the ones it computed (the backbone did not change since).
    features = fitted.features or {subset: outputs.pooled(gate_rows[subset]) for subset in ("train", "val")}
    # The gates' decompositions and classifier on one BLAS thread: OpenBLAS's threads wait for each other
    # by spinning, and on two cores shared with TensorFlow's thread pools (or other processes) two threads
    # measured several times slower than one. TensorFlow's own ops do not use OpenBLAS.
    with threadpool_limits(limits=1, user_api="blas"):
        save_gate(staging, fit_gate(features["train"], features["val"]))
        # The population gate: distances at several depths and the mis-preparation check (the depth features
        # of the same forward pass, and one more pass, on the same engine, over a mis-prepared copy of each of
        # its training films).
        fit_population_for_run(staging, model, scan.images, labels, index, features_of_rows=outputs.depth,
                               features_of_films=outputs.depth_of_films)
    # Similar cases: the training films a new film lies nearest to, in the same pooled features.
    save_similar_index(staging, features["train"], [scan.records[i].path for i in gate_rows["train"]],
                       [scan.records[i].label for i in gate_rows["train"]])
    log(f"Test accuracy {metrics['accuracy']:.4f} (95% CI {metrics['ci95']['accuracy'][0]:.3f}-"
        f"{metrics['ci95']['accuracy'][1]:.3f}), macro-F1 {metrics['macro']['f1']:.4f}, mean one-vs-rest "
        f"accuracy {metrics['mean_ovr_accuracy']:.4f}; best epoch {best_epoch}")
    _check_heatmaps(staging, run_id or staging.name, data_root, model, class_names, config, state, log,
                    stop_requested)
    state.update(phase="done")
    write_progress(staging, state)


def _check_heatmaps(staging: Path, run_id: str, data_root: Path, model, class_names, config: TrainConfig,
                    state: dict, log, stop_requested) -> None:
    """The heatmap faithfulness report (core.explain.faithfulness, default method) of the trained model on
    `config.explain_check_films` test films, into the staging folder's explain_check.json, the model card
    refreshed with it. Progress phase "heatmaps"; a stop asked meanwhile ends it between two films
    (TrainingCancelled, no report written). A check that cannot run (no readable test film) is logged and
    the run is registered without a report, as `python -m core explain-check` can make it later."""
    if not config.explain_check_films:
        return
    state.update(phase="heatmaps", heatmaps_step=None)
    write_progress(staging, state)

    def progress(stage: str, done: int, total: int) -> None:
        if stop_requested():
            raise TrainingCancelled(CANCELLED_MESSAGE)
        state.update(heatmaps_step=f"{stage} {done}/{total}")
        write_progress(staging, state)

    run = Run(staging, config.to_dict(), list(class_names), {})
    try:
        report = check_run(run, data_root, films=config.explain_check_films, model=model, run_id=run_id,
                           log=lambda line: log(f"Checking the heatmaps: {line}"), progress=progress)
    except ValueError as error:
        log(f"The heatmaps were not checked ({error}); `python -m core explain-check` can check them later.")
        return
    log(report["verdict"]["text"])
