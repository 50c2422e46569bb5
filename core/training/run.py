"""Training: dataset check -> split -> tf.data -> MobileNetV2 fine-tuning -> evaluation -> a finished run.

`train_run` is what `python -m core train` and the app's background job call. It decodes every film once
(the integrity check and the training cache are the same pass), trains with EarlyStopping, ModelCheckpoint
on the lowest validation loss and a LearningRateScheduler, writes progress after every batch, honours a
stop request between batches, and only then renames the staging folder into `models/<run_id>/`.
"""

from __future__ import annotations

import csv
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from core.runs import jobs
from core.config import TrainConfig
from core.runs.registry import check_writable, new_run_id, now_iso, staging_dir_for, write_json_atomic
from core.settings import default_models_dir


class TrainingCancelled(RuntimeError):
    """The user asked the training to stop."""


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """sklearn's "balanced" weights n / (k * count_c), for the classes present in `labels`."""
    counts = np.bincount(labels, minlength=num_classes)
    return {c: float(len(labels) / (num_classes * counts[c])) for c in range(num_classes) if counts[c]}


def affine_transforms(batch_size, height: int, width: int, config: TrainConfig, generator):
    """One projective transform per film (b, 8) combining flip, rotation and zoom about the centre.

    Rotation is uniform in ±rotation_degrees, the zoom factor uniform in 1 ± zoom (as Keras's RandomZoom
    with one factor: both zoom in and out, aspect kept), the flip horizontal with probability 0.5. The
    transform maps each output pixel to the input position it samples, as ImageProjectiveTransformV3 wants.
    """
    import math

    import tensorflow as tf

    angle = generator.uniform([batch_size], -1.0, 1.0) * (config.rotation_degrees * math.pi / 180.0)
    scale = 1.0 + generator.uniform([batch_size], -1.0, 1.0) * config.zoom
    flip = (tf.where(generator.uniform([batch_size]) < 0.5, -1.0, 1.0) if config.horizontal_flip
            else tf.ones([batch_size]))
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    a2 = centre_x - a0 * centre_x - a1 * centre_y
    b2 = centre_y - b0 * centre_x - b1 * centre_y
    zeros = tf.zeros([batch_size])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def build_augmentation(config: TrainConfig):
    """The training-only augmentation on raw [0, 255] pixels (b, S, S, 1), or None when there is none.

    Rotation, zoom and flip are composed into one affine transform per film and applied in a single
    resampling pass (the three Keras layers RandomRotation, RandomZoom and RandomFlip resample three times,
    which cost about twice as much CPU on this 2-core machine); brightness then adds one offset per film
    of up to ±brightness x 255, as Keras's RandomBrightness does. Pixels leaving the film are filled black.
    """
    import tensorflow as tf

    geometric = bool(config.rotation_degrees or config.zoom or config.horizontal_flip)
    if not geometric and not config.brightness:
        return None
    generator = tf.random.Generator.from_seed(config.seed)

    def augment(images):
        shape = tf.shape(images)
        batch_size, height, width = shape[0], shape[1], shape[2]
        if geometric:
            transforms = affine_transforms(batch_size, tf.cast(height, tf.float32), tf.cast(width, tf.float32),
                                           config, generator)
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images, transforms=transforms, output_shape=tf.stack([height, width]),
                fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
            )
        if config.brightness:
            offsets = generator.uniform([batch_size, 1, 1, 1], -1.0, 1.0) * (config.brightness * 255.0)
            images = images + offsets
        return tf.clip_by_value(images, 0.0, 255.0)

    return augment


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, config: TrainConfig,
                 training: bool):
    """A batched tf.data pipeline over decoded films: shuffle and augment only when training, prefetch.

    images: uint8 (n, S, S, 1), already decoded once for the whole run; labels: int (n,).
    Yields (float32 raw pixels (b, S, S, 1), one-hot float32 (b, k)).
    """
    import tensorflow as tf

    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    dataset = tf.data.Dataset.from_tensor_slices((images, one_hot))
    if training:
        dataset = dataset.shuffle(len(images), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    augmentation = build_augmentation(config) if training else None
    if augmentation is not None:
        dataset = dataset.map(lambda x, y: (augmentation(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _progress_callback(staging: Path, state: dict, stop_requested: Callable[[], bool]):
    """A Keras callback writing progress.json after every batch and stopping on request."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started = time.monotonic()
            self.last_write = -np.inf
            self.batches_done = 0
            self.timings = {}

        def on_epoch_begin(self, epoch, logs=None):
            state.update(epoch=epoch + 1, batch=0)
            self.epoch_started = self.last_batch_ended = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            self.last_batch_ended = time.monotonic()
            self.batches_done += 1
            state["total_batches_done"] = state.get("total_batches_done", 0) + 1
            per_batch = (time.monotonic() - self.started) / self.batches_done
            remaining = state["batches"] * (state["epochs"] - state["epoch"]) + state["batches"] - batch - 1
            state.update(batch=batch + 1, eta_seconds=round(per_batch * max(remaining, 0), 1),
                         **{k: float(v) for k, v in (logs or {}).items()})
            # At most 5 writes a second: a head trained on features takes well under a millisecond a batch.
            if self.last_batch_ended - self.last_write >= 0.2:
                write_progress(staging, state)
                self.last_write = self.last_batch_ended
            if stop_requested():
                self.model.stop_training = True
                state["cancelled"] = True

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            # train_seconds spans the training batches only (validation excluded), so films per second
            # of the input pipeline plus train step can be read from history.csv.
            timing = {"train_seconds": round(self.last_batch_ended - self.epoch_started, 3),
                      "epoch_seconds": round(time.monotonic() - self.epoch_started, 3)}
            state.setdefault("history", []).append({"epoch": epoch + 1, "phase": state["phase"], **logs,
                                                    **timing})
            self.timings[epoch + 1] = timing
            write_progress(staging, state)

    return Progress()


def write_progress(staging: Path, state: dict) -> None:
    write_json_atomic(staging / "progress.json", {**state, "updated": now_iso()})


def train_run(
    data_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train a model on a dataset folder and register it as a finished run.

    Args:
        data_dir: dataset folder (class folders, or train/val/test folders of class folders).
        config: the recipe; defaults to the paper's (`TrainConfig()`).
        out_dir: the run folder to create; default `models_dir/<run_id>`. It must not exist yet.
        models_dir: where runs and the training lock live; default `models/` (or $PARU_MODELS_DIR).
        log: receives one line per step.

    Returns:
        The path of the finished run folder.

    Raises:
        ValueError: bad dataset, impossible split, unwritable output; nothing was trained.
        jobs.TrainingBusyError: another training is running.
        TrainingCancelled: a stop was requested; the staging folder is kept, marked "cancelled".
    """
    config = config or TrainConfig()
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    from core.data.scan import check_dataset_root

    data_root = check_dataset_root(data_dir)
    run_dir = Path(out_dir) if out_dir else models_dir / new_run_id(data_root, config.preset)
    run_dir = run_dir.resolve()
    if run_dir.exists():
        raise ValueError(f"{run_dir} already exists; Paru never overwrites a run. Choose another --out.")
    check_writable(run_dir.parent)
    check_writable(models_dir)
    staging = staging_dir_for(run_dir)
    lock_info = {"run_id": run_dir.name, "staging_dir": str(staging), "run_dir": str(run_dir),
                 "log": os.environ.get("PARU_JOB_LOG"), "data_dir": str(data_root)}
    jobs.acquire_lock(models_dir, lock_info)
    stop = {"flag": False}
    previous_handler = None
    try:
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    except ValueError:
        pass  # Not the main thread (for example inside a test runner thread): rely on the STOP file.

    def stop_requested() -> bool:
        return stop["flag"] or (staging / jobs.STOP_FILE_NAME).exists()

    outcome = {"run_id": run_dir.name, "run_dir": str(run_dir), "state": "failed"}
    try:
        if staging.exists():
            import shutil

            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        write_json_atomic(staging / "status.json", {"state": "running", "started": now_iso(), "pid": os.getpid()})
        _train_into(staging, data_root, config, log, stop_requested)
        write_json_atomic(staging / "status.json", {
            **(_read(staging / "status.json")), "state": "finished", "finished": now_iso()})
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
        jobs.record_last_job(models_dir, outcome)
        jobs.release_lock(models_dir)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _read(path: Path) -> dict:
    from core.runs.registry import read_json

    return read_json(path, {}) or {}


def _mark(staging: Path, state: str, message: str, details: str = "") -> None:
    if staging.is_dir():
        write_json_atomic(staging / "status.json", {**_read(staging / "status.json"), "state": state,
                                                    "ended": now_iso(), "error": message, "traceback": details})


def _train_into(staging: Path, data_root: Path, config: TrainConfig, log, stop_requested) -> None:
    from core.data.scan import assign_subsets, scan_dataset, write_split_csv
    from core.data.split import split_summary

    started = time.monotonic()
    config.save(staging / "config.json")
    state = {"phase": "checking", "epoch": 0, "epochs": config.warmup_epochs + config.epochs, "batch": 0,
             "batches": 0, "started": now_iso(), "pid": os.getpid()}
    write_progress(staging, state)

    log(f"Checking and decoding every film in {data_root} ...")

    def scan_progress(done, total):
        state.update(files_done=done, files_total=total)
        write_progress(staging, state)
        if stop_requested():
            raise TrainingCancelled("Training was cancelled while the dataset was being checked.")

    scan = scan_dataset(data_root, image_size=config.image_size, decode=True, progress=scan_progress)
    decode_seconds = time.monotonic() - started
    subsets = assign_subsets(scan, fractions=config.split, seed=config.seed)
    labels = scan.labels
    class_names = scan.class_names
    write_json_atomic(staging / "classes.json", class_names)
    write_split_csv(staging / "split.csv", scan, subsets)
    report = {**scan.report(), "subsets": split_summary(labels, subsets, class_names),
              "decode_seconds": round(decode_seconds, 2), "split_fractions": list(config.split),
              "seed": config.seed}
    write_json_atomic(staging / "data_report.json", report)
    log(f"{len(scan.records)} films usable, {len(scan.skipped)} skipped; classes {class_names}; "
        f"split {report['subsets']} (decoded once in {decode_seconds:.1f} s)")
    for item in scan.skipped[:20]:
        log(f"  skipped {item['path']}: {item['reason']}")

    index = {s: np.flatnonzero(subsets == s) for s in ("train", "val", "test")}
    if len(index["val"]) == 0:
        raise ValueError("The split left no validation films; use a split with a validation fraction above 0.")
    fit = _fit_head_on_features if config.head_on_features else _fit
    model, history_rows, best_epoch, features = fit(staging, scan.images, labels, index, class_names, config,
                                                    state, log, stop_requested)
    train_seconds = time.monotonic() - started

    state.update(phase="evaluating")
    write_progress(staging, state)
    from core.evaluation.evaluate import write_run_evaluation

    metrics = write_run_evaluation(
        staging, model, scan, subsets, class_names, config,
        training={"best_epoch": best_epoch, "epochs_run": len(history_rows),
                  "stopped_early": len(history_rows) < config.warmup_epochs + config.epochs,
                  "wall_time_seconds": round(train_seconds, 1), "decode_seconds": round(decode_seconds, 2)},
    )
    from core.serving.gate import fit_gate, pooled_features, save_gate

    # The "is this a chest film?" gate's statistics: fitted on training films, threshold on validation.
    # A head trained on features hands back the ones it computed (the backbone did not change since).
    features = features or {subset: pooled_features(model, scan.images[index[subset]]) for subset in ("train", "val")}
    save_gate(staging, fit_gate(features["train"], features["val"]))
    log(f"Test accuracy {metrics['accuracy']:.4f} (95% CI {metrics['ci95']['accuracy'][0]:.3f}-"
        f"{metrics['ci95']['accuracy'][1]:.3f}), macro-F1 {metrics['macro']['f1']:.4f}, mean one-vs-rest "
        f"accuracy {metrics['mean_ovr_accuracy']:.4f}; best epoch {best_epoch}")
    state.update(phase="done")
    write_progress(staging, state)


def _fit(staging, images, labels, index, class_names, config, state, log, stop_requested):
    import keras

    from core.model import build_model, set_trainable_layers

    num_classes = len(class_names)
    train_ds = make_dataset(images[index["train"]], labels[index["train"]], num_classes, config, training=True)
    val_ds = make_dataset(images[index["val"]], labels[index["val"]], num_classes, config, training=False)
    class_weight = (balanced_class_weights(labels[index["train"]], num_classes)
                    if config.class_weight == "balanced" else None)
    strategy = _strategy(config.distribute)
    if config.distribute != "none":
        log(f"Distributed training ({config.distribute}): {strategy.num_replicas_in_sync} replicas, "
            f"global batch {config.batch_size}")
    state["replicas"] = int(strategy.num_replicas_in_sync)
    with strategy.scope():
        model = build_model(config, num_classes)
    checkpoint_path = staging / "model.keras"
    # One checkpoint callback across both phases keeps the best validation loss over the whole run.
    checkpoint = keras.callbacks.ModelCheckpoint(checkpoint_path, monitor="val_loss", save_best_only=True,
                                                 mode="min", verbose=0)
    history_path = staging / "history.csv"
    state["batches"] = int(np.ceil(len(index["train"]) / config.batch_size))
    rows = []
    phases = []
    if config.warmup_epochs:
        phases.append(("warmup", 0, config.warmup_epochs, config.warmup_learning_rate, 0))
    phases.append(("fine-tune", config.warmup_epochs, config.warmup_epochs + config.epochs,
                   config.learning_rate, config.fine_tune_layers))
    for phase, first_epoch, last_epoch, learning_rate, trainable in phases:
        # Only the head learns during the warm-up; then the last layers of the backbone join it, at a low
        # rate. Recompiling after changing `trainable` is what makes the change take effect.
        set_trainable_layers(model, trainable)
        with strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                metrics=["accuracy"],
            )
        state.update(phase=phase)
        log(f"Phase {phase}: epochs {first_epoch + 1}-{last_epoch}, learning rate {learning_rate:g}, "
            f"{sum(1 for w in model.trainable_weights)} trainable weight tensors")
        schedule = keras.callbacks.LearningRateScheduler(
            lambda epoch, _lr, start=first_epoch, base=learning_rate: base * config.lr_decay ** max(0, epoch - start)
        )
        progress = _progress_callback(staging, state, stop_requested)
        callbacks = [
            checkpoint, schedule,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience,
                                          mode="min", restore_best_weights=False)
            if config.early_stopping_patience else None,
            progress,
        ]
        history = model.fit(train_ds, validation_data=val_ds, epochs=last_epoch, initial_epoch=first_epoch,
                            class_weight=class_weight, callbacks=[c for c in callbacks if c], verbose=2,
                            shuffle=False)  # The dataset reshuffles itself every epoch.
        for offset, epoch in enumerate(history.epoch):
            rows.append({"epoch": epoch + 1, "phase": phase,
                         **{key: float(values[offset]) for key, values in history.history.items()},
                         **progress.timings.get(epoch + 1, {})})
        _write_history(history_path, rows)
        if state.get("cancelled"):
            raise TrainingCancelled("Training was cancelled by the user; no model was registered.")
        if len(history.epoch) < last_epoch - first_epoch:
            break  # Early stopping ended this phase; a later phase would start from a worse point.
    if not checkpoint_path.exists():
        raise RuntimeError("No checkpoint was written (validation loss was never finite).")
    best = min(rows, key=lambda row: row.get("val_loss", np.inf))
    from core.model import load_model

    # Keep the best epoch's weights without the optimizer state: the file is for inference, and this
    # roughly halves it (the shipped demo run must stay small).
    model = load_model(checkpoint_path)
    model.save(checkpoint_path)
    return model, rows, best["epoch"], None


def _fit_head_on_features(staging, images, labels, index, class_names, config, state, log, stop_requested):
    """Train only the head, on pooled backbone features computed once (config.head_on_features).

    The head's BatchNormalization is set to standardise by the training features' mean and variance and
    frozen, so what Adam fits is the Dense layer: a class-weighted, L2-regularised (head_l2) logistic
    regression. The Dense layer is the full model's own, so the returned model is the usual film-to-class
    model; the best epoch is the one with the lowest validation loss, as in `_fit`. Returns what `_fit`
    returns, but with the training and validation films' pooled features in place of its None: the backbone
    did not change, so the gate statistics are fitted on them without a second forward pass.
    """
    import keras
    import tensorflow as tf

    from core.serving.gate import pooled_features
    from core.model import build_model

    num_classes = len(class_names)
    model = build_model(config, num_classes)
    state.update(phase="features")
    write_progress(staging, state)
    train_images, train_labels = images[index["train"]], labels[index["train"]]
    log(f"Computing the pooled features of {len(train_images)} training and {len(index['val'])} validation "
        "films once" + (", and of the training films' mirror images" if config.horizontal_flip else ""))
    train_x = pooled_features(model, train_images)
    gate_features = {"train": train_x}
    if config.horizontal_flip:
        train_x = np.concatenate([train_x, pooled_features(model, train_images[:, :, ::-1])])
        train_labels = np.concatenate([train_labels, train_labels])
    val_x = gate_features["val"] = pooled_features(model, images[index["val"]])
    if stop_requested():
        raise TrainingCancelled("Training was cancelled by the user; no model was registered.")

    standardise = model.get_layer("head_bn")
    gamma, beta, _, _ = standardise.get_weights()
    standardise.set_weights([np.ones_like(gamma), np.zeros_like(beta), train_x.mean(axis=0),
                             train_x.var(axis=0)])
    standardise.trainable = False  # A frozen BatchNormalization layer runs in inference mode.
    features = keras.Input((train_x.shape[1],), name="pooled_features")
    head = keras.Model(features, model.get_layer("predictions")(model.get_layer("head_dropout")(
        standardise(features))))
    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                 loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                 metrics=["accuracy"])

    def dataset(x, y, training):
        data = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), np.eye(num_classes, dtype=np.float32)[y]))
        if training:
            data = data.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
        return data.batch(config.batch_size)

    class_weight = (balanced_class_weights(train_labels, num_classes)
                    if config.class_weight == "balanced" else None)
    state.update(phase="head", batches=int(np.ceil(len(train_x) / config.batch_size)))
    log(f"Phase head: up to {config.epochs} epochs on {len(train_x)} feature rows, learning rate "
        f"{config.learning_rate:g}, L2 {config.head_l2:g}")
    best_weights = staging / "best-head.weights.h5"
    progress = _progress_callback(staging, state, stop_requested)
    callbacks = [
        keras.callbacks.ModelCheckpoint(best_weights, monitor="val_loss", save_best_only=True, mode="min",
                                        save_weights_only=True, verbose=0),
        keras.callbacks.LearningRateScheduler(lambda epoch, _lr: config.learning_rate * config.lr_decay ** epoch),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience, mode="min")
        if config.early_stopping_patience else None,
        progress,
    ]
    history = head.fit(dataset(train_x, train_labels, True), validation_data=dataset(val_x, labels[index["val"]], False),
                       epochs=config.epochs, class_weight=class_weight, callbacks=[c for c in callbacks if c],
                       verbose=0, shuffle=False)
    rows = [{"epoch": epoch + 1, "phase": "head",
             **{key: float(values[offset]) for key, values in history.history.items()},
             **progress.timings.get(epoch + 1, {})} for offset, epoch in enumerate(history.epoch)]
    _write_history(staging / "history.csv", rows)
    if state.get("cancelled"):
        raise TrainingCancelled("Training was cancelled by the user; no model was registered.")
    if not best_weights.exists():
        raise RuntimeError("No checkpoint was written (validation loss was never finite).")
    head.load_weights(best_weights)
    best_weights.unlink()
    model.save(staging / "model.keras")
    best = min(rows, key=lambda row: row.get("val_loss", np.inf))
    log(f"Best epoch {best['epoch']} of {len(rows)}: validation loss {best['val_loss']:.4f}, accuracy "
        f"{best.get('val_accuracy', float('nan')):.4f}")
    return model, rows, best["epoch"], gate_features


def _write_history(path: Path, rows: list[dict]) -> None:
    columns = ["epoch", "phase"] + sorted({k for row in rows for k in row} - {"epoch", "phase"})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _strategy(name: str):
    """The tf.distribute strategy the config asks for; the default strategy for "none"."""
    import tensorflow as tf

    if name == "mirrored":
        # Every GPU of this host; with none, every logical CPU device (one unless configured otherwise,
        # which is how the tests exercise this path on two logical CPUs).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()
