"""The training lock: a dead holder's lock is taken over, a live one blocks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


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
