"""Fixtures of the pipeline tier that several modules share (the tiny run itself is in tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

from conftest import built_once
from square_fixture import train_square_model


@pytest.fixture(scope="session")
def square_model(tmp_path_factory):
    """A MobileNetV2 (alpha 0.35, 96 x 96) that learned "a bright square means class 1". Read-only: tests that
    change weights work on a copy. Under pytest-xdist one process trains it and the others load its saved
    file (the same weights)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return train_square_model()
    from core.model import load_model

    def train(folder):
        path = folder / "square.keras"
        train_square_model().save(path)
        return path

    return load_model(built_once(tmp_path_factory, "square-model", train))
