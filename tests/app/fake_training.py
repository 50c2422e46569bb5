"""A stand-in for `python -m core train` in the app tests: the same lock, progress and outcome files, no
TensorFlow.

Usage: python fake_training.py MODELS_DIR SOURCE_RUN RUN_ID [DATA_DIR CONFIG]. Takes the training lock (naming
DATA_DIR), writes the recipe CONFIG as config.json and progress.json (one finished epoch) in its staging folder, waits for a file named `release` there (so a test can look at
the running job for as long as it needs), then renames a copy of SOURCE_RUN into MODELS_DIR/RUN_ID, records
the job as finished and releases the lock.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from core.runs import jobs
from core.runs.artifacts import CONFIG_FILE_NAME, PROGRESS_FILE_NAME, write_json_atomic
from core.runs.registry import staging_dir_for

RELEASE_FILE_NAME = "release"


def main(models_dir: Path, source_run: Path, run_id: str, data_dir: str | None = None,
         config: str | None = None) -> None:
    run_dir = models_dir / run_id
    staging = staging_dir_for(run_dir)
    jobs.acquire_lock(models_dir, {"run_id": run_id, "staging_dir": str(staging), "run_dir": str(run_dir),
                                   "data_dir": data_dir})
    try:
        staging.mkdir(parents=True)
        if config:
            shutil.copy(config, staging / CONFIG_FILE_NAME)
        progress = {"phase": "paper", "epoch": 1, "epochs": 2, "batch": 3, "batches": 4, "eta_seconds": 75,
                    "history": [{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.4, "loss": 1.2, "val_loss": 1.3}]}
        write_json_atomic(staging / PROGRESS_FILE_NAME, progress)
        deadline = time.monotonic() + 60
        while not (staging / RELEASE_FILE_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(staging)
        shutil.copytree(source_run, staging)
        staging.rename(run_dir)
        jobs.record_last_job(models_dir, {"run_id": run_id, "run_dir": str(run_dir), "state": "finished"})
    finally:
        jobs.release_lock(models_dir)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:6])
