"""Background training in real child processes on the tiny run's films: SIGKILL mid-run, and two quick starts.

Neither needs the tiny run itself: the earlier run that must survive the SIGKILL is a copy of a shipped run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import PROJECT_ROOT, tiny_config

EARLIER_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4"


def test_sigkill_mid_training_leaves_earlier_runs_intact_and_does_not_block_the_next(tiny_dataset, tmp_path):
    from core.runs.jobs import acquire_lock, job_status, release_lock
    from core.runs.registry import list_runs, load_run

    models_dir = tmp_path / "models"
    models_dir.mkdir()
    previous = models_dir / EARLIER_RUN.name
    shutil.copytree(EARLIER_RUN, previous)
    config_path = tmp_path / "config.json"
    tiny_config(epochs=200, early_stopping_patience=0).save(config_path)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "train", "--data", str(tiny_dataset), "--config", str(config_path), "--models-dir", str(models_dir)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            progress = job_status(models_dir).progress or {}
            if progress.get("epoch", 0) >= 1 and progress.get("batch", 0) >= 1:
                break
            assert process.poll() is None, "training ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("training never reported progress")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert [r.path.name for r in list_runs(models_dir)] == [previous.name]
    load_run(previous)
    status = job_status(models_dir)
    assert status.running is False
    assert status.last["state"] == "died" and status.last["run_id"] != previous.name  # Not "finished <older>".
    acquire_lock(models_dir, {"run_id": "next"})  # The dead job's lock does not block the next one.
    release_lock(models_dir)


def test_two_quick_starts_launch_one_training(tiny_dataset, tmp_path):
    from core.runs.jobs import TrainingBusyError, job_status, request_stop, start_training

    config_path = tmp_path / "config.json"
    tiny_config(epochs=200, early_stopping_patience=0).save(config_path)
    models_dir = tmp_path / "models"
    first = start_training(tiny_dataset, config_path, models_dir)
    try:
        # No waiting: the lock is held for the child from the moment start_training returns.
        with pytest.raises(TrainingBusyError, match="already running"):
            start_training(tiny_dataset, config_path, models_dir)
        assert job_status(models_dir).running
    finally:
        request_stop(models_dir)
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    assert not job_status(models_dir).running
