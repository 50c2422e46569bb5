"""One training at a time, run in its own process, observable and cancellable from the app.

The training process holds `models/.train.lock` (JSON: pid, run id, staging folder, log file) while it runs.
It is taken and released under an exclusive flock on `models/.train.lock.guard` and written atomically, so
of any number of simultaneous claimants exactly one wins. A lock whose process is gone is stale and is taken
over, so a killed training never blocks the next one. Progress is read from `progress.json` in the run's
staging folder; a cancel request is a `STOP` file there, honoured between batches. When a training ends,
`models/.last_job.json` says how; when its process was killed before it could say so, the first look at the
lock (`job_status`, `acquire_lock`) records it as "died". What such trainings leave in their staging folders
is cleaned by core.runs.staging.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.config import preset
from core.runs.artifacts import (
    CONFIG_FILE_NAME,
    PROGRESS_FILE_NAME,
    STATUS_FILE_NAME,
    STOP_FILE_NAME,
    now_iso,
    read_json,
    read_status,
    write_json_atomic,
)
from core.runs.staging import holder_pid, pid_alive
from core.settings import PROJECT_ROOT, default_models_dir, job_log, keras_home_env

LOCK_NAME = ".train.lock"
GUARD_NAME = ".train.lock.guard"
LAST_JOB_NAME = ".last_job.json"
UNREADABLE_LOCK_GRACE_SECONDS = 30.0


class TrainingBusyError(RuntimeError):
    """Another training is already running."""


@contextmanager
def _guard(models_dir: Path):
    """An exclusive flock on models_dir/.train.lock.guard: deciding whether the lock is free and taking it
    is one step for every claimant, so two can never both win."""
    models_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(models_dir / GUARD_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # Also releases the flock.


def _read_holder(lock: Path) -> dict | None:
    """The lock's content; {} for an empty or unreadable lock that is young (a writer of an older version
    may still be writing it), None when there is no lock or an unreadable one is old (stale)."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    holder = read_json(lock)
    if isinstance(holder, dict) and holder_pid(holder):
        return holder
    return {} if age < UNREADABLE_LOCK_GRACE_SECONDS else None


def acquire_lock(models_dir: Path, info: dict, pid: int | None = None) -> Path:
    """Take the training lock for process `pid` (default: this one), or raise TrainingBusyError.

    A parent that starts a training process takes the lock on the child's behalf (pid=child), so two
    quick Start clicks cannot launch two trainings; the child then takes over its own lock. The decision
    is made under an exclusive flock (`_guard`) and the lock's content is written atomically (a temporary
    file renamed into place), so a rival never reads a half-written lock and exactly one claimant wins.
    A lock whose process is gone is stale and taken over; an empty or unreadable one counts as held while
    it is younger than UNREADABLE_LOCK_GRACE_SECONDS.
    """
    models_dir = Path(models_dir)
    lock = models_dir / LOCK_NAME
    claimant = pid or os.getpid()
    with _guard(models_dir):
        holder = _read_holder(lock)
        if holder is not None:
            holder_process = holder_pid(holder)
            if holder_process == claimant and claimant != os.getpid():
                return lock  # The child took its own lock first.
            if not holder_process or (holder_process != claimant and pid_alive(holder_process)):
                raise TrainingBusyError(
                    f"Training {holder.get('run_id', '?')} is already running (process {holder_process or '?'}, "
                    f"started {holder.get('started', '?')}). Wait for it to finish or cancel it first."
                )
            if holder_process != claimant:
                _record_death(models_dir, holder)  # Stale: its process died without saying how it ended.
        write_json_atomic(lock, {**info, "pid": claimant, "started": now_iso()})
    return lock


def release_lock(models_dir: Path) -> None:
    models_dir = Path(models_dir)
    lock = models_dir / LOCK_NAME
    with _guard(models_dir):
        holder = read_json(lock, {}) or {}
        if isinstance(holder, dict) and holder.get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def _record_death(models_dir: Path, holder: dict) -> None:
    """Say in .last_job.json (and the staging folder's status.json) that the training holding `holder` died:
    killed or crashed before it could record how it ended. Called under the guard, for a dead holder."""
    last = read_json(models_dir / LAST_JOB_NAME) or {}
    if isinstance(last, dict) and str(last.get("ended", "")) >= str(holder.get("started", "")) \
            and last.get("run_id") == holder.get("run_id"):
        return  # It did record its end (the lock was only left behind).
    message = (f"The training process {holder.get('pid', '?')} ended without finishing (killed or crashed, "
               "for example by SIGKILL or running out of memory); no model was registered. See its log.")
    staging = Path(holder["staging_dir"]) if holder.get("staging_dir") else None
    if staging is not None and staging.is_dir():
        status = read_status(staging)
        if status.get("state", "running") == "running":
            write_json_atomic(staging / STATUS_FILE_NAME, {**status, "state": "died", "ended": now_iso(),
                                                            "error": message})
    write_json_atomic(models_dir / LAST_JOB_NAME, {
        "run_id": holder.get("run_id", "?"), "run_dir": holder.get("run_dir"), "state": "died",
        "error": message, "started": holder.get("started"), "ended": now_iso(), "log": holder.get("log")})


def reap_dead_job(models_dir: Path) -> bool:
    """When the lock's training process is gone, record that it died and remove the lock. Returns True when
    it did."""
    models_dir = Path(models_dir)
    lock = models_dir / LOCK_NAME
    if not lock.exists():
        return False
    with _guard(models_dir):
        holder = _read_holder(lock)
        if holder is None:
            lock.unlink(missing_ok=True)
            return True
        pid = holder_pid(holder)
        if not pid or pid_alive(pid):
            return False
        _record_death(models_dir, holder)
        lock.unlink(missing_ok=True)
        return True


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
    reap_dead_job(models_dir)  # A killed training is reported as such, not hidden behind the last one.
    lock = read_json(models_dir / LOCK_NAME)
    lock = lock if isinstance(lock, dict) else None
    running = bool(lock and holder_pid(lock) and pid_alive(holder_pid(lock)))
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


def record_last_job(models_dir: Path, outcome: dict) -> bool:
    """Write how the training ended to .last_job.json. When it cannot be written (a full disk) the previous
    record is removed, so an older run's outcome never stands for this one, and False is returned without
    raising, so the caller still releases the lock."""
    path = models_dir / LAST_JOB_NAME
    try:
        write_json_atomic(path, {**outcome, "ended": now_iso(), "log": job_log()})
    except OSError as error:
        print(f"Could not record how the training ended in {path}: {error.strerror or error}", file=sys.stderr)
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    return True


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

    "checking": files checked of all files; "features": films whose pooled features are computed of all
    (features_done / features_total, computed once before the first epoch); "evaluating", "heatmaps" (the
    faithfulness report after the evaluation) and "done": 1; a training phase: batches done over `epochs` x
    `batches`.
    """
    if not progress:
        return 0.0
    phase = progress.get("phase")
    if phase == "checking":
        done, total = progress.get("files_done", 0), progress.get("files_total") or 0
        return done / total if total else 0.0
    if phase == "features":
        done, total = progress.get("features_done", 0), progress.get("features_total") or 0
        return min(1.0, done / total) if total else 0.0
    if phase in ("evaluating", "heatmaps", "done"):
        return 1.0
    epochs, batches = progress.get("epochs") or 1, progress.get("batches") or 1
    epoch, batch = progress.get("epoch", 0), progress.get("batch", 0)
    return min(1.0, max(0.0, ((max(epoch, 1) - 1) * batches + batch) / (epochs * batches)))


def running_recipe(status: JobStatus) -> tuple[str | None, dict]:
    """(dataset folder, config.json) of the running training, so a page reloaded mid-training can show what
    runs; (None, {}) when none runs, and {} for the recipe until the child has written it."""
    if not status.running:
        return None, {}
    lock = status.lock or {}
    config = read_json(Path(lock["staging_dir"]) / CONFIG_FILE_NAME, {}) if lock.get("staging_dir") else {}
    return lock.get("data_dir"), config if isinstance(config, dict) else {}
