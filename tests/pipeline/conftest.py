"""Fixtures of the pipeline tier that several modules share (the tiny run itself is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from square_fixture import train_square_model


@pytest.fixture(scope="session")
def square_model():
    """A MobileNetV2 (alpha 0.35, 96 x 96) that learned "a bright square means class 1". Read-only: tests that
    change weights work on a copy."""
    return train_square_model()
