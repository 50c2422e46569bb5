"""The training lifecycle without TensorFlow: the lock (one winner among simultaneous claimants, a dead
holder taken over, a live one blocking), a killed training reported as dead, staging folders cleaned, and a
stop asked during the evaluation honoured."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.runs import jobs, staging
from core.runs.artifacts import STATUS_FILE_NAME, STOP_FILE_NAME, read_json, write_json_atomic


def test_stale_lock_is_taken_over_but_a_live_one_blocks(tmp_path):
    from core.runs.jobs import TrainingBusyError, acquire_lock, release_lock

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".train.lock").write_text(json.dumps({"pid": sleeper.pid, "run_id": "other"}))
        with pytest.raises(TrainingBusyError, match="other is already running"):
            acquire_lock(tmp_path, {"run_id": "mine"})
    finally:
        sleeper.kill()
        sleeper.wait()
    acquire_lock(tmp_path, {"run_id": "mine"})  # The holder is dead now: stale, taken over.
    assert json.loads((tmp_path / ".train.lock").read_text())["run_id"] == "mine"
    release_lock(tmp_path)
    assert not (tmp_path / ".train.lock").exists()


def _claim(models_dir, start_at, results, release):
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        jobs.acquire_lock(Path(models_dir), {"run_id": f"claimant-{os.getpid()}"})
        results.put("won")
        release.wait(60)  # Alive, so the lock stays held while the others try.
    except jobs.TrainingBusyError:
        results.put("busy")


def test_of_sixty_simultaneous_claimants_exactly_one_wins(tmp_path):
    context = multiprocessing.get_context("fork")
    results, release = context.Queue(), context.Event()
    start_at = time.time() + 2.0
    claimants = [context.Process(target=_claim, args=(str(tmp_path), start_at, results, release))
                 for _ in range(60)]
    for process in claimants:
        process.start()
    outcomes = [results.get(timeout=60) for _ in claimants]
    release.set()
    for process in claimants:
        process.join(30)
    assert outcomes.count("won") == 1 and outcomes.count("busy") == 59


def test_an_empty_or_half_written_lock_counts_as_held_while_young(tmp_path):
    (tmp_path / jobs.LOCK_NAME).write_text('{"pid": 12')  # A rival is still writing it.
    with pytest.raises(jobs.TrainingBusyError):
        jobs.acquire_lock(tmp_path, {"run_id": "mine"})
    old = time.time() - 2 * jobs.UNREADABLE_LOCK_GRACE_SECONDS
    os.utime(tmp_path / jobs.LOCK_NAME, (old, old))
    jobs.acquire_lock(tmp_path, {"run_id": "mine"})  # Nobody finished writing it: stale.
    jobs.release_lock(tmp_path)


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from core.runs import jobs, staging
from core.runs.artifacts import write_json_atomic
models = Path(sys.argv[2])
staging = models / ".run-killed.partial"
staging.mkdir()
write_json_atomic(staging / "status.json", {"state": "running", "pid": __import__("os").getpid()})
jobs.acquire_lock(models, {"run_id": "run-killed", "staging_dir": str(staging)})
print("holding", flush=True)
time.sleep(60)
"""


def test_a_killed_training_is_reported_as_dead_not_hidden_behind_the_last_one(tmp_path):
    write_json_atomic(tmp_path / jobs.LAST_JOB_NAME, {"run_id": "run-older", "state": "finished",
                                                       "ended": "2026-01-01T00:00:00+00:00"})
    root = str(Path(__file__).resolve().parents[2])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, root, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    assert jobs.job_status(tmp_path).running
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    status = jobs.job_status(tmp_path)
    assert not status.running
    assert status.last["state"] == "died" and status.last["run_id"] == "run-killed"
    assert "killed or crashed" in status.last["error"]
    assert read_json(tmp_path / ".run-killed.partial" / STATUS_FILE_NAME)["state"] == "died"
    assert not (tmp_path / jobs.LOCK_NAME).exists()
    assert jobs.job_status(tmp_path).last["run_id"] == "run-killed"  # Stays said.


def _staging(models_dir: Path, name: str, status: dict, age: float, payload: int = 0) -> Path:
    folder = models_dir / f".{name}.partial"
    folder.mkdir()
    write_json_atomic(folder / STATUS_FILE_NAME, status)
    if payload:
        (folder / "model.keras").write_bytes(b"\0" * payload)
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "epoch-1.keras").write_bytes(b"\0" * payload)
    moment = time.time() - age
    os.utime(folder / STATUS_FILE_NAME, (moment, moment))
    return folder


def test_staging_folders_of_failed_trainings_are_cleaned_and_logged(tmp_path):
    day = 24 * 3600
    old = _staging(tmp_path, "old-failed", {"state": "failed"}, 30 * day, payload=1000)
    young = _staging(tmp_path, "young-failed", {"state": "failed", "error": "No space left on device"}, 60,
                     payload=2_000_000)
    killed = _staging(tmp_path, "killed", {"state": "running", "pid": 2 ** 22 + 12345}, 60, payload=10)
    live = _staging(tmp_path, "live", {"state": "running", "pid": os.getpid()}, 60, payload=10)
    mine = _staging(tmp_path, "mine", {"state": "failed"}, 30 * day, payload=10)
    lines = []
    cleaned = staging.clean_staging(tmp_path, log=lines.append, keep=mine)
    assert cleaned == lines and len(lines) == 3
    assert not old.exists() and any("Removed the staging folder .old-failed.partial" in line for line in lines)
    assert [path.name for path in young.iterdir()] == [STATUS_FILE_NAME]  # The space is back, the error kept.
    assert any("Freed 4.0 MB in the staging folder .young-failed.partial" in line for line in lines)
    assert [path.name for path in killed.iterdir()] == [STATUS_FILE_NAME]
    assert len(list(live.iterdir())) == 3 and len(list(mine.iterdir())) == 3
    assert staging.clean_staging(tmp_path, log=lines.append, keep=mine) == []  # Nothing left to free.


def test_a_stop_asked_during_the_evaluation_registers_no_run(tmp_path, monkeypatch):
    from conftest import make_dataset
    from core.config import preset
    from core.training import run as training

    data = make_dataset(tmp_path / "data", per_class=1, class_folders=("Normal", "Pneumonia"))

    def evaluated_then_stopped(staging, *args, **kwargs):
        (staging / "model.keras").write_bytes(b"")
        (staging / STOP_FILE_NAME).write_text("now")  # The user pressed Cancel while it evaluated.

    monkeypatch.setattr(training, "_train_into", evaluated_then_stopped)
    models_dir = tmp_path / "models"
    with pytest.raises(training.TrainingCancelled):
        training.train_run(data, preset("paper"), out_dir=models_dir / "run-1", models_dir=models_dir,
                           log=lambda line: None)
    assert not (models_dir / "run-1").exists()
    assert read_json(models_dir / jobs.LAST_JOB_NAME)["state"] == "cancelled"
    assert read_json(models_dir / ".run-1.partial" / STATUS_FILE_NAME)["state"] == "cancelled"


def test_a_full_disk_at_the_end_of_a_training_still_releases_the_lock(tmp_path, monkeypatch):
    import errno

    write_json_atomic(tmp_path / jobs.LAST_JOB_NAME, {"run_id": "run-older", "state": "finished"})
    jobs.acquire_lock(tmp_path, {"run_id": "run-1"})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs, "write_json_atomic", full_disk)
    assert jobs.record_last_job(tmp_path, {"run_id": "run-1", "state": "failed"}) is False
    assert not (tmp_path / jobs.LAST_JOB_NAME).exists()  # The older run's outcome does not stand for this one.
    monkeypatch.undo()
    jobs.release_lock(tmp_path)
    assert not (tmp_path / jobs.LOCK_NAME).exists()
