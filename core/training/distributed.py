"""Training across hosts: a custom training loop under tf.distribute.MultiWorkerMirroredStrategy.

Why not `model.fit`: under this strategy Keras 3's fit fails at its first step (keras-team/keras#20585:
"Attempt to convert a value (PerReplica:{...}) with an unsupported type"), while a custom loop of
`distribute_datasets_from_function`, `strategy.run` and the optimizer's own cross-worker gradient sum works.
The loop computes what Keras's fit computes for one machine: the class-weighted categorical cross-entropy
(label smoothing as configured) summed over the global batch and divided by its number of films, Adam,
the learning rate decayed per epoch, the phases of `core.training.fit`, early stopping on the validation
loss, and the best epoch's weights kept. Every global batch is split in contiguous parts, one per worker,
and the head's BatchNormalization uses the statistics of the whole global batch (synchronised), so N
workers take the same steps as one process with the same global batch and seed.

Fault tolerance: the chief saves a tf.train.Checkpoint (model, optimizer, position) at the end of every
epoch and, mid-epoch, every `CHECKPOINT_SECONDS` (after the same step on every worker). Started again with
the same command after a crash, the chief restores its last checkpoint and hands it to every other worker
(`_from_chief`: weights, optimizer state, position, early-stopping state), so all resume from the same batch.
Workers keep no checkpoints of their own: one killed between the chief's save and its own would resume
elsewhere than the chief, and the two would pair different steps' collectives. The chief alone writes
progress.json and the run folder; a stop requested on the chief (the STOP file, SIGTERM) reaches every
worker within one step. No worker leaves before every worker's last collective has completed
(`leave_cluster`).

A head trained on features (the `recommended` preset) needs no loop: its cost is the backbone's forward pass
over every film, which `gathered_features` splits between the workers; the head is then fitted on the chief.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.model import HEAD_BN_LAYER_NAME, build_model, set_trainable_layers
from core.runs.artifacts import HISTORY_FILE_NAME, MODEL_FILE_NAME, write_history_csv, write_json_atomic
from core.settings import tf_config
from core.training.pipeline import balanced_class_weights, make_dataset

CHECKPOINT_SECONDS = 300
"""Mid-epoch checkpoints at most this often (an epoch of the paper's 12,539 films takes minutes)."""
POSITION_FILE_NAME = "position.json"
BEST_WEIGHTS_FILE_NAME = "best.weights.h5"
PROGRESS_SECONDS = 0.2
LEAVE_SECONDS = 600
"""How long a worker waits at the end for the others (they are at most one step behind it)."""


def cluster_role() -> tuple[bool, int, int]:
    """(is_chief, worker index, number of workers) from $TF_CONFIG; (True, 0, 1) without one.

    The chief is the task of type "chief" when the cluster has one, else worker 0.
    """
    config = tf_config()
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    workers = len(cluster.get("worker") or []) + len(cluster.get("chief") or [])
    if not workers:
        return True, 0, 1
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    position = index if kind == "chief" or not cluster.get("chief") else index + 1
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return is_chief, position, workers


def multiworker_strategy():
    """The cluster's MultiWorkerMirroredStrategy; create it before any other TensorFlow operation runs."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


_GATHERS = {"done": 0}  # The same count on every worker: each gather's barrier has its own name.


def gathered_features(strategy, compute, rows: np.ndarray) -> np.ndarray:
    """compute(rows) for all rows, each worker computing a contiguous share: every worker returns the whole
    (len(rows), d) result in row order (an all-gather of the shares, padded to one length). It returns once
    every worker's gather has completed, so a worker may leave the cluster after its last one."""
    import tensorflow as tf

    _, worker, workers = cluster_role()
    shares = np.array_split(np.asarray(rows), workers)
    if min(len(share) for share in shares) == 0:
        return compute(rows)  # Fewer rows than workers (the same on every worker): not worth a collective.
    local = np.asarray(compute(shares[worker]), dtype=np.float32)
    length = max(len(share) for share in shares)
    padded = np.zeros((length,) + local.shape[1:], np.float32)
    padded[:len(local)] = local

    values = strategy.experimental_distribute_values_from_function(lambda _context: tf.constant(padded))
    everything = np.asarray(strategy.gather(values, axis=0))
    _GATHERS["done"] += 1
    leave_cluster(f"gathered-{_GATHERS['done']}")  # So any worker may exit after its last gather.
    return np.concatenate([everything[i * length:i * length + len(share)] for i, share in enumerate(shares)])


def leave_cluster(name: str) -> None:
    """Wait until every worker of the cluster is here (the coordination service's barrier, `name` unique per
    run of a process), then return. Called after a worker's last collective: a worker that exits as soon as
    its own share of an all-reduce is done can close its end before a peer has pulled its last part, and
    that peer's collective fails ("Socket closed"). Past the barrier every collective has completed, so the
    other workers may exit while the chief goes on alone (evaluation, the run folder)."""
    from tensorflow.python.eager import context  # The barrier has no public API in TensorFlow 2.

    if cluster_role()[2] > 1:
        context.context().wait_at_barrier(f"paru-{name}", LEAVE_SECONDS * 1000)


def _from_chief(strategy, is_chief: bool, values: list) -> list[np.ndarray]:
    """The chief's values of `values` (arrays or variables, the same shapes on every worker), on every worker:
    an all-reduce sum in which the other workers contribute zeros, exact in float64 for float32 and integer
    values."""
    import tensorflow as tf

    arrays = [np.asarray(value, dtype=np.float64) for value in values]
    local = [tf.constant(array if is_chief else np.zeros_like(array)) for array in arrays]

    @tf.function(autograph=False)  # Nothing to convert; AutoGraph would warn about the closure.
    def share():
        def replica():
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
        return strategy.run(replica)

    return [np.asarray(strategy.experimental_local_results(result)[0]) for result in share()]


def _assign_from_chief(strategy, is_chief: bool, variables: list) -> None:
    """Give every worker the chief's values of `variables` (restored there from its checkpoint)."""
    for variable, value in zip(variables, _from_chief(strategy, is_chief, variables)):
        variable.assign(value.astype(np.asarray(variable).dtype))


def checkpoint_folder(models_dir: Path, data_root: Path, config: TrainConfig) -> Path:
    """This worker's checkpoint folder: the same for the same dataset, recipe and cluster size, so the same
    command started again finds it (models_dir/.checkpoints/<digest>/worker-<i>; only the chief's is
    written)."""
    is_chief, index, workers = cluster_role()
    key = json.dumps({"data": str(data_root), "config": config.to_dict(), "workers": workers}, sort_keys=True)
    return models_dir / ".checkpoints" / hashlib.sha256(key.encode()).hexdigest()[:16] / f"worker-{index}"


def fit_multiworker(staging: Path, images, labels, index, num_classes: int, config: TrainConfig, state: dict,
                    log, stop_requested, checkpoints: Path, write_progress):
    """Fit the network on every worker of $TF_CONFIG's cluster; on the chief, a `Fitted`-shaped tuple
    (model, history rows, best epoch), on the other workers (None, rows, best epoch); None when stopped.

    staging: where the chief writes history.csv and model.keras (the other workers write nothing there).
    checkpoints: this worker's checkpoint folder (`checkpoint_folder`): the chief's is read on a restart,
    written while training and removed once the fit completes; the other workers write none.
    """
    import keras
    import tensorflow as tf

    strategy = multiworker_strategy()
    is_chief, worker, workers = cluster_role()
    log(f"Distributed training (multiworker): worker {worker} of {workers}"
        f"{' (chief)' if is_chief else ''}, {strategy.num_replicas_in_sync} replicas, global batch {config.batch_size}")
    state["replicas"] = int(strategy.num_replicas_in_sync)
    if is_chief:
        checkpoints.mkdir(parents=True, exist_ok=True)
    position = _read_position(checkpoints) if is_chief else {}
    with strategy.scope():
        model = build_model(config, num_classes)
    head_bn = model.get_layer(HEAD_BN_LAYER_NAME)
    head_bn.synchronized = True  # Global-batch statistics, as one process computes them.
    weights = np.ones(num_classes, np.float32)
    if config.class_weight == "balanced":
        for label, value in balanced_class_weights(labels[index["train"]], num_classes).items():
            weights[label] = value
    class_weights = tf.constant(weights)
    batches = int(np.ceil(len(index["train"]) / config.batch_size))
    state["batches"] = batches
    rows, phases = list(position.get("history", [])), []
    if config.warmup_epochs:
        phases.append(("warmup", 0, config.warmup_epochs, config.warmup_learning_rate, 0))
    phases.append(("fine-tune", config.warmup_epochs, config.warmup_epochs + config.epochs,
                   config.learning_rate, config.fine_tune_layers))
    best = position.get("best", {"val_loss": float("inf"), "epoch": 0})
    saved = position.get("patience", {"val_loss": float("inf"), "bad_epochs": 0})
    resume_at = [name for name, *_ in phases].index(position["phase"]) if position.get("phase") else -1
    # Where the chief's checkpoint is, every worker resumes (early stopping's state with it).
    resume_at, stopped, patience_loss, bad_epochs = _from_chief(
        strategy, is_chief, [[resume_at, bool(position.get("stopped")), saved["val_loss"], saved["bad_epochs"]]])[0]
    resume_at, resumed_patience = int(resume_at), {"val_loss": float(patience_loss), "bad_epochs": int(bad_epochs)}
    for number, (phase, first_epoch, last_epoch, learning_rate, trainable) in enumerate(phases):
        if number < resume_at:
            continue  # Finished before the restart; the later phase's checkpoint holds every weight.
        set_trainable_layers(model, trainable)
        with strategy.scope():
            optimizer = keras.optimizers.Adam(learning_rate)
            optimizer.build(model.trainable_variables)
        counter = tf.Variable([first_epoch, 0], dtype=tf.int64, trainable=False)  # (epoch, batch) of this phase.
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, position=counter)
        # Two kept: the one position.json names stays until the next position is written (a crash between a
        # save and its position resumes from the checkpoint the position describes).
        manager = tf.train.CheckpointManager(checkpoint, str(checkpoints / phase), max_to_keep=2) if is_chief else None
        patience = {"val_loss": float("inf"), "bad_epochs": 0}  # Early stopping counts within a phase.
        if number == resume_at:
            if is_chief:
                checkpoint.restore(position["checkpoint"]).assert_existing_objects_matched()
            _assign_from_chief(strategy, is_chief, [*model.variables, *optimizer.variables, counter])
            patience = resumed_patience
            log(f"Resuming from the checkpoint at epoch {int(counter[0]) + 1}, batch {int(counter[1])}"
                + (f" ({position['checkpoint']})" if is_chief else " (the chief's)"))
            if stopped:
                break
        start_epoch, skip = int(counter[0]), int(counter[1])
        state.update(phase=phase)
        log(f"Phase {phase}: epochs {first_epoch + 1}-{last_epoch}, learning rate {learning_rate:g}, "
            f"{len(model.trainable_weights)} trainable weight tensors")
        train_step, val_step = _steps(strategy, model, optimizer, class_weights, config)
        stopping = False
        for epoch in range(start_epoch, last_epoch):
            optimizer.learning_rate.assign(learning_rate * config.lr_decay ** max(0, epoch - first_epoch))
            state.update(epoch=epoch + 1, batch=skip)

            def save(batch, epoch=epoch, stopped=False):
                if is_chief:
                    _save(manager, counter, epoch, batch, checkpoints,
                          {"phase": phase, "history": rows, "best": best, "patience": patience, "stopped": stopped})

            epoch_started = time.monotonic()
            outcome = _train_epoch(strategy, train_step, images, labels, index["train"], num_classes, config,
                                   epoch, skip, worker, workers, is_chief, state, stop_requested, write_progress,
                                   staging, save)
            skip = 0
            if outcome["stopped"]:
                leave_cluster("cancelled")
                state["cancelled"] = True
                _remove(checkpoints)  # A cancelled run is not resumed.
                return None
            val_loss, val_accuracy = _validate(strategy, val_step, images, labels, index["val"], num_classes,
                                               config, worker, workers)
            row = {"epoch": epoch + 1, "phase": phase, "accuracy": outcome["accuracy"],
                   "learning_rate": float(np.asarray(optimizer.learning_rate)), "loss": outcome["loss"],
                   "val_accuracy": val_accuracy, "val_loss": val_loss,
                   "train_seconds": outcome["train_seconds"],
                   "epoch_seconds": round(time.monotonic() - epoch_started, 3)}
            rows.append(row)
            if np.isfinite(val_loss) and val_loss < best["val_loss"]:
                best = {"val_loss": val_loss, "epoch": epoch + 1}
                if is_chief:
                    model.save_weights(checkpoints / BEST_WEIGHTS_FILE_NAME)
            if np.isfinite(val_loss) and val_loss < patience["val_loss"]:
                patience = {"val_loss": val_loss, "bad_epochs": 0}
            else:
                patience["bad_epochs"] += 1
            stopping = bool(config.early_stopping_patience) and patience["bad_epochs"] >= config.early_stopping_patience
            save(0, epoch + 1, stopping)
            if is_chief:
                state.setdefault("history", []).append(row)
                write_progress(staging, state)
                write_history_csv(staging / HISTORY_FILE_NAME, rows)
                log(f"Epoch {epoch + 1}/{state['epochs']}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}, "
                    f"val_loss {val_loss:.4f}, val_accuracy {val_accuracy:.4f} ({row['train_seconds']:.0f} s)")
            if stopping:
                break
        if stopping:
            break  # Early stopping ended this phase; a later phase would start from a worse point.
    leave_cluster("trained")
    best_epoch = best["epoch"]
    if not is_chief:
        _remove(checkpoints)
        return None, rows, best_epoch
    if not (checkpoints / BEST_WEIGHTS_FILE_NAME).exists():
        raise RuntimeError("No checkpoint was written (validation loss was never finite).")
    # Built outside the strategy (evaluation and saving run on this host alone) and without reading the
    # ImageNet file again: the best epoch's weights replace every weight.
    final = build_model(config.replace(weights="none"), num_classes)
    final.load_weights(checkpoints / BEST_WEIGHTS_FILE_NAME)
    final.save(staging / MODEL_FILE_NAME)
    write_history_csv(staging / HISTORY_FILE_NAME, rows)
    _remove(checkpoints)
    return final, rows, best_epoch


def _steps(strategy, model, optimizer, class_weights, config: TrainConfig):
    """The compiled distributed train and validation steps.

    Both all-reduce the global batch's film count (so the last, partial batch is averaged over its own
    size, as Keras does) and two flags: a stop requested on the chief and a checkpoint to save now.
    """
    import keras
    import tensorflow as tf

    loss_function = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing,
                                                         reduction=None)
    total = tf.distribute.ReduceOp.SUM

    def replica_train(films, targets, flags):
        context = tf.distribute.get_replica_context()
        count = tf.cast(tf.shape(films)[0], tf.float32)
        shared = context.all_reduce(total, tf.concat([[count], flags], 0))
        with tf.GradientTape() as tape:
            probabilities = model(films, training=True)
            per_film = loss_function(targets, probabilities) * tf.gather(class_weights, tf.argmax(targets, 1))
            loss = tf.reduce_sum(per_film) / shared[0]
            if model.losses:
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probabilities, 1), tf.argmax(targets, 1)), tf.float32))
        # strategy.reduce sums over replicas: the already shared flags are divided back by their number.
        return tf.concat([[tf.reduce_sum(per_film), correct, count], shared[1:] / strategy.num_replicas_in_sync], 0)

    def replica_validate(films, targets):
        probabilities = model(films, training=False)
        correct = tf.cast(tf.equal(tf.argmax(probabilities, 1), tf.argmax(targets, 1)), tf.float32)
        return tf.stack([tf.reduce_sum(loss_function(targets, probabilities)), tf.reduce_sum(correct),
                         tf.cast(tf.shape(films)[0], tf.float32)])

    @tf.function
    def train_step(batch, flags):
        values = strategy.run(replica_train, args=(*batch, flags))
        return strategy.reduce(total, values, axis=None)

    @tf.function
    def val_step(batch):
        return strategy.reduce(total, strategy.run(replica_validate, args=batch), axis=None)

    return train_step, val_step


def _distributed(strategy, images, labels, rows, num_classes, config, training, worker, workers, skip=0):
    """One worker's share of every global batch, as a distributed dataset."""
    def dataset(_context):
        return make_dataset(images, labels, num_classes, config, training, rows=rows, shard=(worker, workers),
                            skip_batches=skip)
    return strategy.distribute_datasets_from_function(dataset)


def _train_epoch(strategy, train_step, images, labels, rows, num_classes, config, epoch, skip, worker, workers,
                 is_chief, state, stop_requested, write_progress, staging, save):
    """Train one epoch (from batch `skip`); {"loss", "accuracy", "train_seconds", "stopped"}."""
    import tensorflow as tf

    # The epoch's order depends on the seed and the epoch only, so a resumed epoch sees the same batches.
    epoch_config = config.replace(seed=config.seed + 1000 * epoch) if epoch else config
    data = _distributed(strategy, images, labels, rows, num_classes, epoch_config, True, worker, workers, skip)
    started = last_save = time.monotonic()
    last_write = -np.inf
    sums = np.zeros(3)  # weighted loss, correct, films
    batch = skip
    for element in data:
        now = time.monotonic()
        flags = tf.constant([float(is_chief and stop_requested()),
                             float(is_chief and now - last_save >= CHECKPOINT_SECONDS)])
        loss_sum, correct, count, stop, save_now = train_step(element, flags).numpy()
        sums += (loss_sum, correct, count)
        batch += 1
        if stop:
            return {"stopped": True}
        if save_now:
            save(batch)
            last_save = time.monotonic()
        if is_chief:
            state["total_batches_done"] = state.get("total_batches_done", 0) + 1
            per_batch = (time.monotonic() - started) / max(batch - skip, 1)
            remaining = state["batches"] * (state["epochs"] - epoch - 1) + state["batches"] - batch
            state.update(batch=batch, eta_seconds=round(per_batch * max(remaining, 0), 1),
                         loss=float(sums[0] / max(sums[2], 1)), accuracy=float(sums[1] / max(sums[2], 1)))
            if time.monotonic() - last_write >= PROGRESS_SECONDS:
                write_progress(staging, state)
                last_write = time.monotonic()
    return {"stopped": False, "loss": float(sums[0] / max(sums[2], 1)), "accuracy": float(sums[1] / max(sums[2], 1)),
            "train_seconds": round(time.monotonic() - started, 3)}


def _validate(strategy, val_step, images, labels, rows, num_classes, config, worker, workers):
    """(mean loss, accuracy) over the validation films, unweighted as Keras's validation is."""
    sums = np.zeros(3)
    for element in _distributed(strategy, images, labels, rows, num_classes, config, False, worker, workers):
        sums += val_step(element).numpy()
    return float(sums[0] / max(sums[2], 1)), float(sums[1] / max(sums[2], 1))


def _save(manager, counter, epoch: int, batch: int, folder: Path, position: dict) -> None:
    """Checkpoint at (epoch, batch), then write the position beside it (history so far, best and early-stopping
    state), so a crash between the two resumes from a position the checkpoint covers."""
    counter.assign([epoch, batch])
    write_json_atomic(folder / POSITION_FILE_NAME, {**position, "checkpoint": manager.save()})


def _remove(checkpoints: Path) -> None:
    """Delete this worker's checkpoints, and the folders above them once no other worker's remain."""
    shutil.rmtree(checkpoints, ignore_errors=True)
    for folder in (checkpoints.parent, checkpoints.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break


def _read_position(folder: Path) -> dict:
    try:
        return json.loads((folder / POSITION_FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
