"""The unit tier imports no TensorFlow (nor Keras): each module here is checked after it ran.

The root conftest runs this tier first, so TensorFlow is absent when it starts; a unit test that needs it
belongs in tests/pipeline/."""

from __future__ import annotations

import sys

import pytest

HEAVY = ("tensorflow", "keras")


@pytest.fixture(scope="module", autouse=True)
def no_tensorflow_imported(request):
    already = {name for name in HEAVY if name in sys.modules}
    yield
    loaded = sorted(name for name in HEAVY if name in sys.modules and name not in already)
    if loaded:
        pytest.fail(f"{request.module.__name__} imported {', '.join(loaded)}: unit tests run without TensorFlow "
                    "(move the test to tests/pipeline/)", pytrace=False)
