"""`python -m core train --distribute multiworker` with two real worker processes on loopback.

Two workers train as one process with the same global batch and seed does (the same weights after one
epoch of four steps; for the recommended preset, which shares out the feature pass, too), only the chief
registers a run, and a worker killed mid-training resumes from the last checkpoint when the cluster is
started again. Each worker is a `python -m core train` child process with its own TF_CONFIG.

The single-process references of both recipes are fitted in one child process started once for the module
(`_fit_references`: the fit a run makes, without the evaluation after it, which the weights do not depend
on), beside the clusters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_dataset, tiny_config

PROJECT = Path(__file__).resolve().parents[2]
WORKER_SECONDS = 1200  # A safety net: on a machine shared with other work, a first epoch has taken 10 minutes.
WEIGHT_TOLERANCE = 1e-5
RECIPES = ("paper", "recommended")


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


@pytest.fixture(autouse=True)
def _no_worker_left():
    """A failed test leaves no worker of its clusters running (they would hold a core for minutes)."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def _cluster(data, config, models, out, logs) -> list[subprocess.Popen]:
    ports = _free_ports(len(logs))
    _STARTED.extend(_start(data, config, models, out, log, task, ports) for task, log in enumerate(logs))
    return _STARTED[-len(logs):]


def _wait(processes, seconds=WORKER_SECONDS) -> list[int]:
    deadline = time.monotonic() + seconds
    return [process.wait(timeout=max(1.0, deadline - time.monotonic())) for process in processes]


def _weights(model_file: Path) -> list[np.ndarray]:
    from core.model import load_model

    return [np.asarray(weight) for weight in load_model(model_file).weights]


def _largest_difference(model_file: Path, other: Path) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(_weights(model_file), _weights(other)))


def _runs(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))


def _fit_references(data: Path, configs: Path, out: Path) -> None:
    """In a child process: fit every config in the folder `configs` on `data` in this one process (as
    `python -m core train --distribute multiworker` without TF_CONFIG fits it: one worker), each model into
    `out/<config name>/model.keras`."""
    from core.config import TrainConfig
    from core.data.scan import assign_subsets, scan_dataset
    from core.training.cache import decode_to_disk
    from core.training.fit import fit

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


@pytest.fixture(scope="module")
def cluster_case(tmp_path_factory):
    """The films and recipe files of the two-worker comparisons, and the single-process references of
    both recipes, fitted by one child process that runs beside the tests' clusters."""
    root = tmp_path_factory.mktemp("multiworker")
    data = make_dataset(root / "films", per_class=12)  # 32 training films: 4 steps of 8.
    configs = root / "configs"
    configs.mkdir()
    for recipe in RECIPES:
        _config(recipe).save(configs / f"{recipe}.json")
    log = root / "references.log"
    child = (f"import sys; sys.path[:0] = {[str(PROJECT), str(PROJECT / 'tests')]!r}; "
             "from system.test_multiworker import _fit_references; "
             f"_fit_references({str(data)!r}, {str(configs)!r}, {str(root / 'references')!r})")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    references = subprocess.Popen([sys.executable, "-c", child], cwd=PROJECT, env=env, stdout=log.open("w"),
                                  stderr=subprocess.STDOUT)

    def reference(recipe: str) -> Path:
        if references.returncode is None:
            references.wait(timeout=WORKER_SECONDS)
        assert references.returncode == 0, log.read_text()[-3000:]
        return root / "references" / recipe / "model.keras"

    yield {"root": root, "data": data, "configs": configs, "reference": reference}
    if references.poll() is None:
        references.kill()
        references.wait()


def _two_workers(case, recipe: str) -> tuple[Path, list[str]]:
    """Train `recipe` on two workers; (the models folder, both workers' logs), after checking that both
    finished, one run was registered by the chief, and no checkpoint or decoded-film cache was left."""
    root = case["root"] / recipe
    models, logs = root / "models", [root / f"worker-{task}.log" for task in range(2)]
    models.mkdir(parents=True)
    codes = _wait(_cluster(case["data"], case["configs"] / f"{recipe}.json", models, models / "run", logs))
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in texts)
    assert "the chief (worker 0) registers the run" in texts[1]
    assert _runs(models) == ["run"]  # One run, the chief's; the other worker wrote none.
    assert not (models / ".checkpoints").exists()
    assert not list((models / "run").glob("*.u8"))  # The decoded-film cache is not kept.
    return models, texts


def test_two_workers_take_the_steps_of_one_process(cluster_case):
    models, texts = _two_workers(cluster_case, "paper")
    assert "worker 0 of 2 (chief)" in texts[0] and "worker 1 of 2" in texts[1]
    assert len((models / "run" / "history.csv").read_text().splitlines()) == 2
    largest = _largest_difference(cluster_case["reference"]("paper"), models / "run" / "model.keras")
    print(f"largest weight difference after one epoch (4 steps): {largest:.2e}")
    assert largest <= WEIGHT_TOLERANCE


def test_the_recommended_preset_shares_the_feature_pass_between_workers(cluster_case):
    models, _ = _two_workers(cluster_case, "recommended")
    largest = _largest_difference(cluster_case["reference"]("recommended"), models / "run" / "model.keras")
    assert largest <= WEIGHT_TOLERANCE


def _epochs_checkpointed(models: Path) -> int:
    positions = list((models / ".checkpoints").glob("*/worker-0/position.json"))
    if not positions:
        return 0
    try:
        return len(json.loads(positions[0].read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_worker_resumes_from_the_last_checkpoint(tmp_path):
    # 14 steps an epoch: the kill, right after the first epoch's checkpoint, lands well before the end.
    data = make_dataset(tmp_path / "films", per_class=40)
    epochs = 3
    config = tmp_path / "config.json"
    _config("paper", epochs=epochs, early_stopping_patience=0).save(config)
    models, out = tmp_path / "models", tmp_path / "models" / "run"
    logs = [tmp_path / f"worker-{task}.log" for task in range(2)]
    workers = _cluster(data, config, models, out, logs)
    deadline = time.monotonic() + WORKER_SECONDS
    while _epochs_checkpointed(models) < 1:
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), logs[0].read_text()[-3000:]
        time.sleep(0.02)
    workers[1].send_signal(signal.SIGKILL)  # Worker 1 dies mid-training, after the first epoch's checkpoint.
    workers[1].wait()
    try:
        workers[0].wait(timeout=10)  # The chief notices the lost peer and fails...
    except subprocess.TimeoutExpired:
        workers[0].kill()  # ...or, as a scheduler restarting the whole job does, is killed.
        workers[0].wait()
    assert not (out.exists()), "the run finished before the worker was killed; the kill came too late"
    done_before = _epochs_checkpointed(models)
    assert 1 <= done_before < epochs

    relogs = [tmp_path / f"restart-{task}.log" for task in range(2)]
    codes = _wait(_cluster(data, config, models, out, relogs))
    texts = [log.read_text() for log in relogs]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in texts)
    for text in texts:  # Both resume where the chief's checkpoint is (the chief hands it to worker 1).
        assert f"Resuming from the checkpoint at epoch {done_before + 1}, batch 0" in text
    assert "the chief (worker 0) registers the run" in texts[1]
    history = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in history] == list(range(1, epochs + 1))
    assert _runs(models) == ["run"] and not (models / ".checkpoints").exists()
    assert not list(out.glob("*.u8"))
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
