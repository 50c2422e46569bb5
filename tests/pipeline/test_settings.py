"""The command line's stderr, as a shell sees it: no TensorFlow C++ start-up line reaches the user."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import PROJECT_ROOT, dataset_of


def test_cli_predict_prints_no_tensorflow_start_up_lines(tiny_run):
    film = next(path for path in sorted(dataset_of(tiny_run).rglob("*.png")))
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--model", str(tiny_run), str(film)],
                            cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert film.name in result.stdout
    for noise in ("oneDNN", "cuInit", "cudart", "absl::InitializeLog", "XNNPACK"):
        assert noise not in result.stderr, result.stderr
