"""Fitting a run's model: the Keras fit of the whole network, or of its head alone on pooled features.

Both fits write progress.json while they run (at most `PROGRESS_WRITES_PER_SECOND` times a second), stop
between batches when a stop is requested, keep the epoch with the lowest validation loss, and write
history.csv. Neither raises on a stop: it returns None, and core.training.run turns that into
TrainingCancelled, so the orchestration alone decides what a cancelled run leaves behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.config import TrainConfig
from core.model import (
    HEAD_BN_LAYER_NAME,
    HEAD_DROPOUT_LAYER_NAME,
    PREDICTIONS_LAYER_NAME,
    build_model,
    load_model,
    set_trainable_layers,
)
from core.runs.artifacts import (
    HISTORY_FILE_NAME,
    MODEL_FILE_NAME,
    PROGRESS_FILE_NAME,
    now_iso,
    write_history_csv,
    write_json_atomic,
)
from core.serving.batch import rows_in_chunks
from core.serving.gate import pooled_features_function
from core.training.distributed import cluster_role, fit_multiworker, gathered_features, multiworker_strategy
from core.training.pipeline import balanced_class_weights, make_dataset

PROGRESS_WRITES_PER_SECOND = 5
# An ETA is given only from what this run has measured, once there is enough of it: batches after the first
# (which also traces and compiles the step), for at least this many batches and seconds. Until then
# progress.json's eta_seconds is None and the page says "estimating...".
ETA_MIN_BATCHES, ETA_MIN_SECONDS = 3, 1.0
# The pooled features are computed this many films at a time, so their progress can be shown.
FEATURE_CHUNK = 128
"""A head trained on features runs far more batches a second than anyone reads progress."""


@dataclass
class Fitted:
    """What a fit hands back: the best epoch's model, one history row per epoch, and that epoch's number.

    features: the training and validation films' pooled features ({"train", "val"}: (n, d)) when the fit
    computed them (head on features: the backbone did not change, so the gate can be fitted on them without
    a second forward pass), else None.
    """

    model: object
    history: list[dict]
    best_epoch: int
    features: dict[str, np.ndarray] | None = None


def fit(staging: Path, images: np.ndarray, labels: np.ndarray, index: dict[str, np.ndarray],
        class_names: list[str], config: TrainConfig, state: dict, log: Callable[[str], None],
        stop_requested: Callable[[], bool], checkpoints: Path | None = None) -> Fitted | None:
    """Fit the model the config describes on the decoded films; None when a stop was requested.

    Args:
        staging: the run's staging folder (model.keras, history.csv and progress.json are written there).
        images: uint8 (n, S, S, 1) decoded films, in memory or the on-disk FilmCache (core.training.cache);
            labels: int (n,); index: {"train", "val"} row indices.
        class_names: ordered class names; config: the recipe.
        state: the progress dict written to progress.json (updated in place).
        log: receives one line per step; stop_requested: polled between batches.
        checkpoints: this worker's checkpoint folder, for distribute="multiworker" (core.training.distributed,
            a custom training loop: Keras's fit fails under that strategy). On a worker other than the
            chief, the returned Fitted has no model.
    """
    if config.head_on_features:
        # Across workers, each computes the pooled features of its share of the films; the head is fitted on
        # the chief (it takes seconds). The strategy must exist before any other TensorFlow operation.
        strategy = multiworker_strategy() if config.distribute == "multiworker" else None
        return _fit_head_on_features(staging, images, labels, index, len(class_names), config, state, log,
                                     stop_requested, strategy)
    if config.distribute == "multiworker":
        result = fit_multiworker(staging, images, labels, index, len(class_names), config, state, log,
                                 stop_requested, checkpoints, write_progress)
        return None if result is None else Fitted(*result)
    return _fit_network(staging, images, labels, index, len(class_names), config, state, log, stop_requested)


def remaining_seconds(measured_seconds: float, measured_units: int, remaining_units: float,
                      minimum_units: int = ETA_MIN_BATCHES, minimum_seconds: float = ETA_MIN_SECONDS) -> float | None:
    """The time `remaining_units` will take at the rate measured in this run, or None while fewer than
    `minimum_units` units or `minimum_seconds` seconds have been measured (an ETA from a guess misleads)."""
    if measured_units < minimum_units or measured_seconds < minimum_seconds:
        return None
    return round(measured_seconds / measured_units * max(remaining_units, 0), 1)


def write_progress(staging: Path, state: dict) -> None:
    """progress.json of a staging folder: the state dict and the time it was written."""
    write_json_atomic(staging / PROGRESS_FILE_NAME, {**state, "updated": now_iso()})


def _fit_network(staging, images, labels, index, num_classes, config, state, log, stop_requested):
    import keras

    # The strategy first: a strategy created after other TensorFlow operations ran may not configure.
    strategy = _strategy(config.distribute)
    train_ds = make_dataset(images, labels, num_classes, config, training=True, rows=index["train"])
    val_ds = make_dataset(images, labels, num_classes, config, training=False, rows=index["val"])
    class_weight = _class_weight(labels[index["train"]], num_classes, config)
    if config.distribute != "none":
        log(f"Distributed training ({config.distribute}): {strategy.num_replicas_in_sync} replicas, "
            f"global batch {config.batch_size}")
    state["replicas"] = int(strategy.num_replicas_in_sync)
    with strategy.scope():
        model = build_model(config, num_classes)
    checkpoint_path = staging / MODEL_FILE_NAME
    # One checkpoint callback across both phases keeps the best validation loss over the whole run.
    checkpoint = keras.callbacks.ModelCheckpoint(checkpoint_path, monitor="val_loss", save_best_only=True,
                                                 mode="min", verbose=0)
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
            _compile(model, learning_rate, config)
        state.update(phase=phase)
        log(f"Phase {phase}: epochs {first_epoch + 1}-{last_epoch}, learning rate {learning_rate:g}, "
            f"{sum(1 for w in model.trainable_weights)} trainable weight tensors")
        schedule = keras.callbacks.LearningRateScheduler(
            lambda epoch, _lr, start=first_epoch, base=learning_rate: base * config.lr_decay ** max(0, epoch - start)
        )
        progress = _progress_callback(staging, state, stop_requested)
        history = model.fit(train_ds, validation_data=val_ds, epochs=last_epoch, initial_epoch=first_epoch,
                            class_weight=class_weight, callbacks=_callbacks(checkpoint, schedule, config, progress),
                            verbose=2, shuffle=False)  # The dataset reshuffles itself every epoch.
        rows += _history_rows(history, phase, progress.timings)
        write_history_csv(staging / HISTORY_FILE_NAME, rows)
        if state.get("cancelled"):
            return None
        if len(history.epoch) < last_epoch - first_epoch:
            break  # Early stopping ended this phase; a later phase would start from a worse point.
    if not checkpoint_path.exists():
        raise RuntimeError("No checkpoint was written (validation loss was never finite).")
    # Keep the best epoch's weights without the optimizer state: the file is for inference, and this
    # roughly halves it (the shipped demo run must stay small).
    model = load_model(checkpoint_path)
    model.save(checkpoint_path)
    return Fitted(model, rows, _best(rows)["epoch"])


def _fit_head_on_features(staging, images, labels, index, num_classes, config, state, log, stop_requested,
                          strategy=None):
    """Train only the head, on pooled backbone features computed once (config.head_on_features).

    The head's BatchNormalization is set to standardise by the training features' mean and variance and
    frozen, so what Adam fits is the Dense layer: a class-weighted, L2-regularised (head_l2) logistic
    regression. The Dense layer is the full model's own, so the returned model is the usual film-to-class
    model; the best epoch is the one with the lowest validation loss, as in `_fit_network`. The training
    and validation films' pooled features are handed back in `Fitted.features`. With a multi-worker
    `strategy`, every worker computes its share of the features and receives all of them; only the chief
    fits the head (the others return a Fitted without a model).
    """
    import keras
    import tensorflow as tf

    model = build_model(config, num_classes)
    train_labels = labels[index["train"]]
    total = len(train_labels) * (2 if config.horizontal_flip else 1) + len(index["val"])
    is_chief, _, workers = cluster_role() if strategy is not None else (True, 0, 1)
    total = -(-total // workers)  # This worker's share.
    state.update(phase="features", features_done=0, features_total=total, eta_seconds=None)
    write_progress(staging, state)
    log(f"Computing the pooled features of {len(train_labels)} training and {len(index['val'])} validation "
        "films once" + (", and of the training films' mirror images" if config.horizontal_flip else ""))
    chunks = {"first_done": None, "films_since": 0}
    pooled_of = pooled_features_function(model)

    def counted(films, mirrored):
        features = pooled_of(films[:, :, ::-1] if mirrored else films)
        now = time.monotonic()
        state["features_done"] += len(films)
        if chunks["first_done"] is None:  # The first chunk also builds and traces the backbone: not measured.
            chunks["first_done"] = now
        else:
            chunks["films_since"] += len(films)
        state["eta_seconds"] = remaining_seconds(now - chunks["first_done"], chunks["films_since"],
                                                 total - state["features_done"], minimum_units=1)
        write_progress(staging, state)
        return features

    def features_of(rows, mirrored=False):  # A chunk at a time: the films may be the on-disk cache.
        def compute(share):
            return rows_in_chunks(lambda films: counted(films, mirrored), images, share, chunk=FEATURE_CHUNK)

        return compute(rows) if strategy is None else gathered_features(strategy, compute, rows)

    train_x = features_of(index["train"])
    gate_features = {"train": train_x}
    if config.horizontal_flip:
        train_x = np.concatenate([train_x, features_of(index["train"], mirrored=True)])
        train_labels = np.concatenate([train_labels, train_labels])
    val_x = gate_features["val"] = features_of(index["val"])
    if not is_chief:
        return Fitted(None, [], 0)
    if stop_requested():
        return None

    standardise = model.get_layer(HEAD_BN_LAYER_NAME)
    gamma, beta, _, _ = standardise.get_weights()
    standardise.set_weights([np.ones_like(gamma), np.zeros_like(beta), train_x.mean(axis=0),
                             train_x.var(axis=0)])
    standardise.trainable = False  # A frozen BatchNormalization layer runs in inference mode.
    features = keras.Input((train_x.shape[1],), name="pooled_features")
    head = keras.Model(features, model.get_layer(PREDICTIONS_LAYER_NAME)(model.get_layer(HEAD_DROPOUT_LAYER_NAME)(
        standardise(features))))
    _compile(head, config.learning_rate, config)

    def dataset(x, y, training):
        data = tf.data.Dataset.from_tensor_slices((x.astype(np.float32), np.eye(num_classes, dtype=np.float32)[y]))
        if training:
            data = data.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
        return data.batch(config.batch_size)

    state.update(phase="head", batches=int(np.ceil(len(train_x) / config.batch_size)))
    log(f"Phase head: up to {config.epochs} epochs on {len(train_x)} feature rows, learning rate "
        f"{config.learning_rate:g}, L2 {config.head_l2:g}")
    best_weights = staging / "best-head.weights.h5"
    progress = _progress_callback(staging, state, stop_requested)
    checkpoint = keras.callbacks.ModelCheckpoint(best_weights, monitor="val_loss", save_best_only=True, mode="min",
                                                 save_weights_only=True, verbose=0)
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, _lr: config.learning_rate * config.lr_decay ** epoch)
    history = head.fit(dataset(train_x, train_labels, True), validation_data=dataset(val_x, labels[index["val"]], False),
                       epochs=config.epochs, class_weight=_class_weight(train_labels, num_classes, config),
                       callbacks=_callbacks(checkpoint, schedule, config, progress), verbose=0, shuffle=False)
    rows = _history_rows(history, "head", progress.timings)
    write_history_csv(staging / HISTORY_FILE_NAME, rows)
    if state.get("cancelled"):
        return None
    if not best_weights.exists():
        raise RuntimeError("No checkpoint was written (validation loss was never finite).")
    head.load_weights(best_weights)
    best_weights.unlink()
    model.save(staging / MODEL_FILE_NAME)
    best = _best(rows)
    log(f"Best epoch {best['epoch']} of {len(rows)}: validation loss {best['val_loss']:.4f}, accuracy "
        f"{best.get('val_accuracy', float('nan')):.4f}")
    return Fitted(model, rows, best["epoch"], gate_features)


def _compile(model, learning_rate: float, config: TrainConfig) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy"])
    _build_training_state(model)


def _build_training_state(model) -> None:
    """Create the optimizer's slots and the loss's and metrics' state of a compiled `model` before its fit.

    Without a distribution strategy Keras 3 defers them to the first trace of its train step, and
    TensorFlow traces a function whose first trace created variables a second time, so every training
    paid for tracing a MobileNetV2's training step twice. One zero film through the model eagerly, in
    inference mode, builds the same state (the metrics are reset after it), and the fit traces its step
    once; what it computes is unchanged. Under a strategy Keras builds the state itself, in the strategy's
    scope."""
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return
    films = np.zeros((1, *model.inputs[0].shape[1:]), np.float32)
    targets = np.zeros((1, model.outputs[0].shape[-1]), np.float32)
    weights = np.ones(1, np.float32)
    predicted = model(films, training=False)
    model.optimizer.build(model.trainable_variables)
    model.compute_loss(films, targets, predicted, sample_weight=weights, training=False)
    model.compute_metrics(films, targets, predicted, sample_weight=weights)
    model.reset_metrics()


def _class_weight(labels: np.ndarray, num_classes: int, config: TrainConfig) -> dict[int, float] | None:
    return balanced_class_weights(labels, num_classes) if config.class_weight == "balanced" else None


def _callbacks(checkpoint, schedule, config: TrainConfig, progress) -> list:
    """Checkpoint, learning-rate schedule, early stopping (unless its patience is 0) and progress, in order."""
    import keras

    stopping = (keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience,
                                              mode="min", restore_best_weights=False)
                if config.early_stopping_patience else None)
    return [callback for callback in (checkpoint, schedule, stopping, progress) if callback is not None]


def _history_rows(history, phase: str, timings: dict) -> list[dict]:
    """history.csv rows of one keras fit: epoch (from 1), phase, every logged value, and the epoch's timings."""
    return [{"epoch": epoch + 1, "phase": phase,
             **{key: float(values[offset]) for key, values in history.history.items()},
             **timings.get(epoch + 1, {})} for offset, epoch in enumerate(history.epoch)]


def _best(rows: list[dict]) -> dict:
    return min(rows, key=lambda row: row.get("val_loss", np.inf))


def _progress_callback(staging: Path, state: dict, stop_requested: Callable[[], bool]):
    """A Keras callback writing progress.json during training and stopping on request."""
    import keras

    interval = 1.0 / PROGRESS_WRITES_PER_SECOND

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.last_write = -np.inf
            # Measured from the end of this fit's first batch, which also traces and compiles the step.
            self.measured_from, self.measured_batches = None, 0
            self.validation_seconds = None  # Of the last epoch, once one has ended.
            self.timings = {}
            state["eta_seconds"] = None

        def on_epoch_begin(self, epoch, logs=None):
            state.update(epoch=epoch + 1, batch=0)
            self.epoch_started = self.last_batch_ended = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            now = self.last_batch_ended = time.monotonic()
            if self.measured_from is None:
                self.measured_from = now
            else:
                self.measured_batches += 1
            state["total_batches_done"] = state.get("total_batches_done", 0) + 1
            later_epochs = state["epochs"] - state["epoch"]
            remaining = state["batches"] * later_epochs + state["batches"] - batch - 1
            eta = remaining_seconds(now - self.measured_from, self.measured_batches, remaining)
            # Each later epoch also validates, as long as the last validation took; before one has run, the
            # ETA counts the training batches only and says so (eta_is_lower_bound).
            lower_bound = bool(later_epochs) and self.validation_seconds is None
            if eta is not None and later_epochs and not lower_bound:
                eta += later_epochs * self.validation_seconds
            state.update(batch=batch + 1, eta_seconds=eta, eta_is_lower_bound=lower_bound,
                         **{k: float(v) for k, v in (logs or {}).items()})
            if self.last_batch_ended - self.last_write >= interval:
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
            self.validation_seconds = timing["epoch_seconds"] - timing["train_seconds"]
            state.setdefault("history", []).append({"epoch": epoch + 1, "phase": state["phase"], **logs,
                                                    **timing})
            self.timings[epoch + 1] = timing
            write_progress(staging, state)

    return Progress()


def _strategy(name: str):
    """The tf.distribute strategy of a Keras fit: mirrored, else the default strategy ("multiworker" trains
    with its own loop, core.training.distributed)."""
    import tensorflow as tf

    if name == "mirrored":
        # Every GPU of this host; with none, every logical CPU device (one unless configured otherwise,
        # which is how the tests exercise this path on two logical CPUs).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    return tf.distribute.get_strategy()
