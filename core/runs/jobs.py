"""One training at a time, run in its own process, observable and cancellable from the app.

The training process holds `models/.train.lock` (JSON: pid, run id, staging folder, log file) while it runs.
A lock whose process is gone is stale and is taken over, so a killed training never blocks the next one.
Progress is read from `progress.json` in the run's staging folder; a cancel request is a `STOP` file there,
honoured between batches. When a training ends, `models/.last_job.json` says how.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.config import preset
from core.runs.artifacts import PROGRESS_FILE_NAME, STOP_FILE_NAME, now_iso, read_json, write_json_atomic
from core.settings import PROJECT_ROOT, default_models_dir, keras_home_env

LOCK_NAME = ".train.lock"
LAST_JOB_NAME = ".last_job.json"


class TrainingBusyError(RuntimeError):
    """Another training is already running."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return status != "Z"
    except OSError:
        return True


def acquire_lock(models_dir: Path, info: dict, pid: int | None = None) -> Path:
    """Take the training lock for process `pid` (default: this one), or raise TrainingBusyError.

    A parent that starts a training process takes the lock on the child's behalf (pid=child), so two
    quick Start clicks cannot launch two trainings; the child then takes over its own lock.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    lock = models_dir / LOCK_NAME
    claimant = pid or os.getpid()
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_json(lock, {}) or {}
            pid = int(holder.get("pid") or 0)
            if pid == claimant and claimant != os.getpid():
                return lock  # The child took its own lock first.
            if pid and pid != claimant and _pid_alive(pid):
                raise TrainingBusyError(
                    f"Training {holder.get('run_id', '?')} is already running (process {pid}, started "
                    f"{holder.get('started', '?')}). Wait for it to finish or cancel it first."
                ) from None
            lock.unlink(missing_ok=True)  # Stale: its process is gone.
            continue
        with os.fdopen(fd, "w") as handle:
            import json

            json.dump({**info, "pid": claimant, "started": now_iso()}, handle)
        return lock
    raise TrainingBusyError(f"Could not take the training lock {lock}; try again.")


def release_lock(models_dir: Path) -> None:
    lock = models_dir / LOCK_NAME
    holder = read_json(lock, {}) or {}
    if holder.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


@dataclass
class JobStatus:
    """What the app shows about training: the running job (if any) and how the last one ended."""

    running: bool
    lock: dict | None
    progress: dict | None
    last: dict | None
    log_tail: str


def job_status(models_dir: str | os.PathLike | None = None, log_lines: int = 30) -> JobStatus:
    """Read the lock, the running job's progress.json and log tail, and the last job's outcome."""
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    lock = read_json(models_dir / LOCK_NAME)
    running = bool(lock and lock.get("pid") and _pid_alive(int(lock["pid"])))
    progress = read_json(Path(lock["staging_dir"]) / PROGRESS_FILE_NAME) if running and lock.get("staging_dir") else None
    last = read_json(models_dir / LAST_JOB_NAME)
    log_path = (lock or {}).get("log") if running else (last or {}).get("log")
    return JobStatus(running, lock if running else None, progress, last, _tail(log_path, log_lines))


def _tail(path, lines: int) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # Keras progress bars redraw with carriage returns; keep the last state of each line.
    cleaned = [line.split("\r")[-1] for line in text.splitlines()]
    return "\n".join([line for line in cleaned if line.strip()][-lines:])


def start_training(
    data_dir: str | os.PathLike,
    config_path: str | os.PathLike,
    models_dir: str | os.PathLike | None = None,
    extra_env: dict | None = None,
) -> subprocess.Popen:
    """Start `python -m core train` in a new process (never inside the Streamlit server).

    Raises TrainingBusyError when a training is already running. The child takes the lock itself, so a
    training started from the command line is seen here too.
    """
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    status = job_status(models_dir)
    if status.running:
        raise TrainingBusyError(
            f"Training {status.lock.get('run_id', '?')} is already running. Wait for it or cancel it first."
        )
    jobs_dir = models_dir / ".jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    log_path = jobs_dir / f"train-{now_iso().replace(':', '')}.log"
    env = {**os.environ, **(extra_env or {}), "PARU_JOB_LOG": str(log_path), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "core", "train", "--data", str(data_dir),
               "--config", str(config_path), "--models-dir", str(models_dir)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
    try:
        acquire_lock(models_dir, {"run_id": "starting", "log": str(log_path)}, pid=process.pid)
    except TrainingBusyError:
        process.kill()  # Another start won the race; this child must not train.
        process.wait()
        raise
    return process


def request_stop(models_dir: str | os.PathLike | None = None) -> bool:
    """Ask the running training to stop after its current batch. Returns False when none is running."""
    status = job_status(models_dir)
    if not status.running:
        return False
    staging = Path(status.lock.get("staging_dir") or "")  # Missing while the child is still starting.
    if status.lock.get("staging_dir") and staging.is_dir():
        (staging / STOP_FILE_NAME).write_text(now_iso())
    try:
        os.kill(int(status.lock["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        pass
    return True


def record_last_job(models_dir: Path, outcome: dict) -> None:
    write_json_atomic(models_dir / LAST_JOB_NAME, {**outcome, "ended": now_iso(),
                                                   "log": os.environ.get("PARU_JOB_LOG")})


# --------------------------------------------------------------------------------------------------
# Jobs started by a long-lived process (the app's server): their recipe, their start, their reaping
# --------------------------------------------------------------------------------------------------

# Training processes this process started; polled so that finished ones are reaped (no zombies).
_STARTED: list[subprocess.Popen] = []


def write_job_config(models_dir: str | os.PathLike, preset_name: str, overrides: dict) -> Path:
    """Validate the recipe (core.config.preset) and write it to models_dir/.jobs/config-<time>.json.

    Returns the written path; ValueError (from the preset) when the recipe is invalid.
    """
    config = preset(preset_name, **overrides)
    jobs_dir = Path(models_dir) / ".jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    path = jobs_dir / f"config-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.json"
    config.save(path)
    return path


def start_job(data_dir: str | os.PathLike, config_path: str | os.PathLike, models_dir: str | os.PathLike) -> int:
    """`start_training` with the offline ImageNet weights' KERAS_HOME, remembered for reaping; returns the pid.

    start_training holds the training lock for the child from the moment it returns, so a second start is
    refused with TrainingBusyError.
    """
    _reap_started()
    process = start_training(data_dir, config_path, models_dir, extra_env=keras_home_env())
    _STARTED.append(process)
    return process.pid


def _reap_started() -> None:
    for process in list(_STARTED):
        if process.poll() is not None:
            _STARTED.remove(process)


def read_job_status(models_dir: str | os.PathLike) -> JobStatus:
    """`job_status`, after reaping the finished training processes this process started."""
    _reap_started()
    return job_status(models_dir)


def progress_fraction(progress: dict | None) -> float:
    """The share of a job done, in [0, 1], from its progress.json.

    "checking": files checked of all files; "features": 0 (computed once, before the first epoch);
    "evaluating" and "done": 1; a training phase: batches done over `epochs` x `batches`.
    """
    if not progress:
        return 0.0
    phase = progress.get("phase")
    if phase == "checking":
        done, total = progress.get("files_done", 0), progress.get("files_total") or 0
        return done / total if total else 0.0
    if phase == "features":
        return 0.0
    if phase in ("evaluating", "done"):
        return 1.0
    epochs, batches = progress.get("epochs") or 1, progress.get("batches") or 1
    epoch, batch = progress.get("epoch", 0), progress.get("batch", 0)
    return min(1.0, max(0.0, ((max(epoch, 1) - 1) * batches + batch) / (epochs * batches)))
