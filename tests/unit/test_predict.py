"""core.serving.predict without a model: a path is read through the loader's checks, so a FIFO met in a folder
given to `core predict` is refused at once instead of blocking the command forever."""

from __future__ import annotations

import os
import threading

import pytest


def test_predicting_a_fifo_is_an_error_not_a_hang(tmp_path):
    from core.serving.predict import Predictor

    fifo = tmp_path / "film.png"
    os.mkfifo(fifo)
    predictor = Predictor.__new__(Predictor)  # the file is refused before the model is ever needed
    results = []
    thread = threading.Thread(target=lambda: results.append(predictor.predict(str(fifo))), daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # the old reader blocks in open(); a writer releases it so the test can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("predicting a FIFO blocked")
    assert "is a named pipe (FIFO), not a film file; it was not opened" in results[0].error
