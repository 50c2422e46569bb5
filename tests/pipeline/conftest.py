"""Fixtures of the pipeline tier that several modules share (the tiny run itself is in tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

from conftest import built_once
from square_fixture import train_square_model


@pytest.fixture(scope="session")
def square_model(tmp_path_factory):
    """A MobileNetV2 (alpha 0.35, 96 x 96) that learned "a bright square means class 1". Read-only: tests that
    change weights work on a copy. Under pytest-xdist one process trains it and keeps it, the others load its
    saved file (the same weights)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return train_square_model()
    from core.model import load_model

    trained = []

    def train(folder):
        path = folder / "square.keras"
        trained.append(train_square_model())
        trained[0].save(path)
        return path

    path = built_once(tmp_path_factory, "square-model", train)
    return trained[0] if trained else load_model(path)


@pytest.fixture
def cli_predictor(monkeypatch, keras_predictor):
    """The in-process commands (core.cli.main) get the session's Keras predictor of the tiny run instead of
    building their own, which loads the model and compiles its passes (seconds per command). Returns the
    (run folder, keyword arguments) each command asked for; a command on another run fails the test. The
    command's own construction is run by tests/pipeline/test_settings.py (a real child process) and by the
    tests that give a command a copy of the run."""
    from pathlib import Path

    asked = []

    def predictor(run, **arguments):
        folder = Path(getattr(run, "path", run))
        assert folder == keras_predictor.run.path, f"the shared predictor is the tiny run's, not {folder}'s"
        asked.append((folder, arguments))
        return keras_predictor

    monkeypatch.setattr("core.cli.Predictor", predictor)
    return asked
