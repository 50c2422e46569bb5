"""The shipped demo's gate on real films, photographs, documents and noise (a full-width model: slow)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT, SHARED_DATA

DEMO_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4"


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir() or not (DEMO_RUN / "gate.npz").is_file(),
                    reason="needs ../shared/data/samples and the shipped demo run")
def test_demo_run_passes_real_films_and_refuses_photos_documents_and_noise():
    from core.serving.predict import Predictor

    predictor = Predictor(DEMO_RUN, warm=False)  # No Grad-CAM here: the forward pass is traced on the first film.
    films = sorted((SHARED_DATA / "samples").rglob("*.png"))
    passed = [predictor.predict(path).gate.passed for path in films]
    assert np.mean(passed) >= 0.95, passed
    rng = np.random.default_rng(0)
    photo = np.zeros((300, 400, 3), np.uint8)
    photo[..., 0] = 200
    photo[100:200, 100:300, 2] = 220
    photo = np.clip(photo + rng.normal(0, 10, photo.shape), 0, 255).astype(np.uint8)
    document = np.full((1100, 850), 255, np.uint8)
    document[100:1000:24, 60:790] = 20
    noise = rng.integers(0, 256, (512, 512), dtype=np.uint8)
    for name, array in (("photo", photo), ("document", document), ("noise", noise)):
        result = predictor.predict(_png(array), name=name)
        assert result.error is None and result.gate.passed is False, (name, result.gate)
        assert result.gate.kind == "not_a_chest_film", (name, result.gate)  # Not "unlike the training films".
        gate = json.loads(json.dumps(result.to_json()))["gate"]
        assert gate["passed"] is False and gate["kind"] == "not_a_chest_film"
