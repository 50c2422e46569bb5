"""core.settings: which of TensorFlow's C++ stderr lines TF_CPP_MIN_LOG_LEVEL hides, and that importing core
sets a quiet level without overriding the user's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from core.settings import _is_quiet_native_line

STARTUP = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796162578.676630   27906 port.cc:153] oneDNN custom operations are on. You may see",
    b"I0000 00:00:1796162578.676927   27906 cudart_stub.cc:31] Could not find cuda drivers on your machine",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow",
    b"E0000 00:00:1796162595.378225   27906 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]


def test_the_default_level_hides_the_start_up_lines_and_keeps_everything_else():
    assert all(_is_quiet_native_line(line, 2) for line in STARTUP)
    for kept in (b"Traceback (most recent call last):", b"error: the model folder does not exist",
                 b"E0000 00:00:1.2   1 kernel.cc:9] OOM when allocating tensor",
                 b"F0000 00:00:1.2   1 check.cc:9] Check failed", b"W: a Python warning"):
        assert not _is_quiet_native_line(kept, 2), kept


def test_a_user_who_chose_a_level_keeps_it():
    assert not any(_is_quiet_native_line(line, 0) for line in STARTUP)
    assert _is_quiet_native_line(b"E0000 00:00:1.2   1 kernel.cc:9] OOM", 3)
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    levels = []
    for chosen in (None, "0"):
        env = environment if chosen is None else {**environment, "TF_CPP_MIN_LOG_LEVEL": chosen}
        levels.append(subprocess.run([sys.executable, "-c", "import os, core; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                                     cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                                     timeout=60).stdout.strip())
    assert levels == ["2", "0"]


def test_the_default_data_root_in_the_project_is_ignored_by_git():
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "-q", "data/pediatric/Normal/a.png"], cwd=PROJECT_ROOT)
    assert result.returncode == 0, "data/ (the default data root without ../shared) must be in .gitignore"
