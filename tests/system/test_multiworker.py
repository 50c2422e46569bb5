"""Distributed training for real: `python -m core train --distribute multiworker` with two worker processes on
loopback, and the mirrored strategy on two logical CPU devices.

Two workers train as one process with the same global batch and seed does, only the chief registers a run,
and a worker killed mid-training resumes from the last checkpoint when the cluster is started again. One
two-worker cluster of the paper recipe (three epochs of four steps) serves those checks: worker 1 is killed
right after the first epoch's checkpoint; the weights the chief kept of that epoch must be the ones one
process reaches in its first epoch, and the cluster started again must resume there and register the run.
The recommended preset, which shares out the feature pass, is compared with one process too. Each worker is
a `python -m core train` child process with its own TF_CONFIG.

One child process started once for the module (`_in_one_process`) runs beside the clusters, on two logical
CPU devices: first the single-process references of both recipes (the fit a run makes, without the
evaluation after it, which the weights do not depend on; MultiWorkerMirroredStrategy without TF_CONFIG
trains on one device, one replica), then a whole run with `distribute: mirrored`, the path a multi-GPU host
takes. Starting TensorFlow once for both saves a process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import make_dataset, tiny_config

PROJECT = Path(__file__).resolve().parents[2]
WORKER_SECONDS = 1200  # A safety net: on a machine shared with other work, a first epoch has taken 10 minutes.
WEIGHT_TOLERANCE = 1e-5
RECIPES = ("paper", "recommended")
KILLED_EPOCHS = 3  # The kill, right after the first epoch's checkpoint, lands two epochs before the end.


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for handle in sockets:
            handle.bind(("127.0.0.1", 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def _config(recipe: str, **overrides):
    """The tiny recipes under test, without a heatmap check (its films and time do not change the weights)."""
    from core.config import preset

    if recipe == "recommended":
        tiny = tiny_config()
        return preset("recommended", alpha=tiny.alpha, image_size=tiny.image_size, weights=tiny.weights,
                      epochs=5, explain_check_films=0, **overrides)
    # No augmentation and no dropout: the only randomness left is the seeded shuffle and initialisation.
    return tiny_config(rotation_degrees=0.0, zoom=0.0, brightness=0.0, horizontal_flip=False, dropout=0.0,
                       **{"epochs": 1, "batch_size": 8, **overrides})


def _start(data: Path, config: Path, models: Path, out: Path, log: Path, task: int, ports: list[int]):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_CONFIG": json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                                    "task": {"type": "worker", "index": task}})}
    command = [sys.executable, "-m", "core", "train", "--data", str(data), "--config", str(config),
               "--distribute", "multiworker", "--models-dir", str(models), "--out", str(out)]
    return subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


_STARTED: list[subprocess.Popen] = []


@contextlib.contextmanager
def _reaping():
    """On the way out (a failure included), no worker started meanwhile is left running (an orphaned
    cluster would hold a core for minutes)."""
    try:
        yield
    finally:
        while _STARTED:
            process = _STARTED.pop()
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(autouse=True)
def _no_worker_left():
    with _reaping():
        yield


def _cluster(data, config, models, out, logs) -> list[subprocess.Popen]:
    ports = _free_ports(len(logs))
    _STARTED.extend(_start(data, config, models, out, log, task, ports) for task, log in enumerate(logs))
    return _STARTED[-len(logs):]


def _wait(processes, seconds=WORKER_SECONDS) -> list[int]:
    deadline = time.monotonic() + seconds
    return [process.wait(timeout=max(1.0, deadline - time.monotonic())) for process in processes]


def _weights(path: Path) -> dict[str, np.ndarray]:
    """Every weight of a model file (.keras) or a weights file (.weights.h5) by its path in the file, read
    without building the model."""
    import h5py

    source = path
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            source = io.BytesIO(archive.read("model.weights.h5"))
    found: dict[str, np.ndarray] = {}
    with h5py.File(source, "r") as weights:
        weights.visititems(lambda name, item: found.update({name: np.asarray(item)})
                           if isinstance(item, h5py.Dataset) else None)
    return found


def _largest_difference(one: Path, other: Path) -> float:
    """The largest absolute difference between two files' weights (the same architecture: the same weights)."""
    first, second = _weights(one), _weights(other)
    assert first and first.keys() == second.keys()
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


def _runs(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))


def _in_one_process(data: Path, configs: Path, out: Path) -> None:
    """In a child process, on two logical CPU devices: fit every config in the folder `configs` on `data` in
    this one process (as `python -m core train --distribute multiworker` without TF_CONFIG fits it: one
    worker), each model into `out/<config name>/model.keras`; then train a whole run of the tiny recipe with
    `distribute: mirrored` into `out/mirrored/`, its path and log lines into `out/mirrored.json`."""
    import gc

    import tensorflow as tf

    from core.config import TrainConfig
    from core.data.scan import assign_subsets, scan_dataset
    from core.training.cache import decode_to_disk
    from core.training.fit import fit
    from core.training.run import train_run

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    for path in sorted(Path(configs).glob("*.json")):
        config, staging = TrainConfig.from_file(path).replace(distribute="multiworker"), Path(out) / path.stem
        staging.mkdir(parents=True)
        scan = decode_to_disk(scan_dataset(data, image_size=config.image_size, decode=False), staging,
                              config.image_size)
        subsets = assign_subsets(scan, fractions=config.split, seed=config.seed)
        index = {subset: np.flatnonzero(subsets == subset) for subset in ("train", "val", "test")}
        state = {"epochs": config.warmup_epochs + config.epochs}
        assert fit(staging, scan.images, scan.labels, index, scan.class_names, config, state, print,
                   lambda: False, staging / "checkpoints") is not None
        assert state.get("replicas", 1) == 1  # One process on one device, despite the two logical CPUs.
        (staging / "fitted").touch()  # model.keras is complete: the tests may read it.
    lines: list[str] = []
    run = train_run(data, tiny_config(distribute="mirrored", epochs=1), models_dir=Path(out) / "mirrored",
                    log=lines.append)
    (Path(out) / "mirrored.json").write_text(json.dumps({"run": str(run), "log": lines}))
    gc.freeze()  # The exit frees everything anyway; its last collection of TensorFlow's objects costs CPU.


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The films and recipe files of the module, and the child process that fits the single-process
    references and the mirrored run beside the tests' clusters; `reference(recipe)` and `mirrored()` wait
    for it."""
    root = tmp_path_factory.mktemp("distributed")
    data = make_dataset(root / "films", per_class=12)  # 32 training films: 4 steps of 8.
    configs = root / "configs"
    configs.mkdir()
    for recipe in RECIPES:
        _config(recipe).save(configs / f"{recipe}.json")
    log, out = root / "one-process.log", root / "one-process"
    child = (f"import sys; sys.path[:0] = {[str(PROJECT), str(PROJECT / 'tests')]!r}; "
             "from system.test_multiworker import _in_one_process; "
             f"_in_one_process({str(data)!r}, {str(configs)!r}, {str(out)!r})")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    one_process = subprocess.Popen([sys.executable, "-c", child], cwd=PROJECT, env=env, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT)

    deadline = time.monotonic() + WORKER_SECONDS

    def finished() -> None:
        if one_process.returncode is None:
            one_process.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert one_process.returncode == 0, log.read_text()[-3000:]

    def reference(recipe: str) -> Path:
        fitted = out / recipe / "fitted"
        while not fitted.is_file() and one_process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)  # The references are fitted before the mirrored run starts.
        if not fitted.is_file():
            finished()  # It failed (its log says why) or ran out of time.
        return out / recipe / "model.keras"

    def mirrored() -> dict:
        finished()
        return json.loads((out / "mirrored.json").read_text())

    yield {"root": root, "data": data, "configs": configs, "reference": reference, "mirrored": mirrored}
    if one_process.poll() is None:
        one_process.kill()
        one_process.wait()


def _epochs_checkpointed(models: Path) -> int:
    positions = list((models / ".checkpoints").glob("*/worker-0/position.json"))
    if not positions:
        return 0
    try:
        return len(json.loads(positions[0].read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def killed_and_resumed(case):
    """The paper recipe for KILLED_EPOCHS epochs on two workers; worker 1 SIGKILLed right after the first
    epoch's checkpoint, the chief failing or killed after it; the chief's best-epoch weights and position
    copied aside; then the same cluster started again. What the tests read: whether the run existed before
    the restart, the position then (its history: the epochs checkpointed), the copied weights, the models
    folder, the run folder, and the restarted workers' exit codes and logs."""
    from core.training.distributed import BEST_WEIGHTS_FILE_NAME, POSITION_FILE_NAME

    root = case["root"] / "killed"
    models, out, config = root / "models", root / "models" / "run", root / "config.json"
    models.mkdir(parents=True)
    _config("paper", epochs=KILLED_EPOCHS, early_stopping_patience=0).save(config)
    with _reaping():
        workers = _cluster(case["data"], config, models, out, [root / f"worker-{task}.log" for task in range(2)])
        deadline = time.monotonic() + WORKER_SECONDS
        while _epochs_checkpointed(models) < 1:
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), \
                (root / "worker-0.log").read_text()[-3000:]
            time.sleep(0.05)
        workers[1].send_signal(signal.SIGKILL)  # Worker 1 dies mid-training, after the first epoch's checkpoint.
        workers[1].wait()
        try:
            workers[0].wait(timeout=10)  # The chief notices the lost peer and fails...
        except subprocess.TimeoutExpired:
            workers[0].kill()  # ...or, as a scheduler restarting the whole job does, is killed.
            workers[0].wait()
        # Without its peer the chief took no step after the kill: these are the files the restart finds.
        chief = next((models / ".checkpoints").glob("*/worker-0"))
        position = json.loads((chief / POSITION_FILE_NAME).read_text())
        shutil.copy(chief / BEST_WEIGHTS_FILE_NAME, root / "best-before-the-kill.weights.h5")
        finished_before = out.exists()
        logs = [root / f"restart-{task}.log" for task in range(2)]
        codes = _wait(_cluster(case["data"], config, models, out, logs)) if not finished_before else None
    return {"finished_before": finished_before, "position": position,
            "best_before": root / "best-before-the-kill.weights.h5", "models": models, "out": out,
            "codes": codes, "texts": [log.read_text() for log in logs] if codes else []}


def _assert_the_chief_alone_kept_a_run(codes, texts, models: Path, out: Path) -> None:
    """A cluster's outcome: both workers exited 0, worker 1 left the run to the chief, the models folder holds
    that one run, and neither the checkpoints nor the decoded-film cache are left."""
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in texts)
    assert "the chief (worker 0) registers the run" in texts[1]
    assert _runs(models) == [out.name]  # One run, the chief's; the other worker wrote none.
    assert not (models / ".checkpoints").exists()
    assert not list(out.glob("*.u8"))


def test_a_killed_worker_resumes_from_the_last_checkpoint(killed_and_resumed):
    case = killed_and_resumed
    assert not case["finished_before"], "the run finished before the worker was killed; the kill came too late"
    done_before, out, texts = len(case["position"]["history"]), case["out"], case["texts"]
    assert 1 <= done_before < KILLED_EPOCHS
    _assert_the_chief_alone_kept_a_run(case["codes"], texts, case["models"], out)
    for text in texts:  # Both resume where the chief's checkpoint is (the chief hands it to worker 1).
        assert f"Resuming from the checkpoint at epoch {done_before + 1}, batch 0" in text
    assert "worker 0 of 2 (chief)" in texts[0] and "worker 1 of 2" in texts[1]
    history = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in history] == list(range(1, KILLED_EPOCHS + 1))
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_two_workers_take_the_steps_of_one_process(case, killed_and_resumed):
    """The two workers' weights after their first epoch (four steps; kept by the chief as the best epoch's)
    against one process's after its one epoch of the same recipe."""
    position = killed_and_resumed["position"]
    assert position["best"]["epoch"] == 1, f"the kill came after epoch {len(position['history'])}"
    assert position["history"][0]["epoch"] == 1
    largest = _largest_difference(case["reference"]("paper"), killed_and_resumed["best_before"])
    print(f"largest weight difference after one epoch (4 steps): {largest:.2e}")
    assert largest <= WEIGHT_TOLERANCE


def test_the_recommended_preset_shares_the_feature_pass_between_workers(case):
    root = case["root"] / "recommended"
    models, logs = root / "models", [root / f"worker-{task}.log" for task in range(2)]
    models.mkdir(parents=True)
    codes = _wait(_cluster(case["data"], case["configs"] / "recommended.json", models, models / "run", logs))
    _assert_the_chief_alone_kept_a_run(codes, [log.read_text() for log in logs], models, models / "run")
    largest = _largest_difference(case["reference"]("recommended"), models / "run" / "model.keras")
    assert largest <= WEIGHT_TOLERANCE


def test_mirrored_strategy_trains_on_two_logical_cpu_devices(case):
    """The `distribute: mirrored` path a multi-GPU host takes, run here on two logical CPU devices."""
    from core.runs.registry import load_run

    output = case["mirrored"]()
    assert any("mirrored): 2 replicas" in line for line in output["log"])
    run = load_run(output["run"])
    assert run.config["distribute"] == "mirrored"
    assert run.metrics["n"] > 0 and (Path(output["run"]) / "model.keras").is_file()
