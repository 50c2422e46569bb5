"""The "is this a chest radiograph?" gate: statistics, feature distance, and the demo run on real films."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT, SHARED_DATA
from core.serving.gate import GateResult, check, fit_gate, load_gate, save_gate

DEMO_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4-paper"


def _features(rng, n, shift=0.0):
    return rng.normal(shift, 1.0, (n, 64)) * np.linspace(3, 0.5, 64)


def test_feature_distance_passes_the_training_distribution_and_refuses_far_points():
    rng = np.random.default_rng(0)
    statistics = fit_gate(_features(rng, 300), _features(rng, 60))
    film = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    inside = [check(film, 0.0, row, statistics).passed for row in _features(rng, 200)]
    outside = [check(film, 0.0, row, statistics).passed for row in _features(rng, 50, shift=4.0)]
    assert np.mean(inside) >= 0.98
    assert not any(outside)
    result = check(film, 0.0, _features(rng, 1, shift=4.0)[0], statistics)
    assert "unlike the chest films" in result.reason and result.score > 1


def test_colour_pictures_and_uniform_images_are_refused_before_any_feature_test():
    film = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    assert "colour picture" in check(film, 60.0, None, None).reason
    assert "nearly uniform" in check(np.full((256, 256), 120, np.uint8), 0.0, None, None).reason
    assert check(film, 2.0, None, None) == GateResult(True, check(film, 2.0, None, None).reason)


def test_gate_statistics_round_trip_through_the_run_folder(tmp_path):
    rng = np.random.default_rng(1)
    statistics = fit_gate(_features(rng, 50), _features(rng, 10))
    save_gate(tmp_path, statistics)
    loaded = load_gate(tmp_path)
    assert loaded["threshold"] == pytest.approx(statistics["threshold"], rel=1e-5)
    assert load_gate(tmp_path / "nowhere") is None
    with pytest.raises(ValueError, match="at least 3"):
        fit_gate(_features(rng, 2), _features(rng, 2))


def test_every_trained_run_carries_gate_statistics(tiny_run):
    assert load_gate(tiny_run) is not None


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir() or not (DEMO_RUN / "gate.npz").is_file(),
                    reason="needs ../shared/data/samples and the shipped demo run")
def test_demo_run_passes_real_films_and_refuses_photos_documents_and_noise():
    from core.serving.predict import Predictor

    predictor = Predictor(DEMO_RUN)
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
        assert json.loads(json.dumps(result.to_json()))["gate"]["passed"] is False


def test_audit_log_records_each_prediction_without_the_image(tmp_path):
    from core.runs import audit
    from core.serving.gate import GateResult
    from core.serving.predict import Prediction

    film = b"\x89PNG fake film bytes"
    prediction = Prediction("../../etc/passwd\x1b[31m", "Normal", 0.9, {"Normal": 0.9, "Pneumonia": 0.1},
                            gate=GateResult(True, "ok"))
    audit.record(film, "run-1", prediction, models_dir=tmp_path)
    audit.record(b"other", "run-1", Prediction("bad.png", error="not an image"), models_dir=tmp_path)
    entries = audit.read(tmp_path)
    assert [e["label"] for e in entries] == ["Normal", None]
    assert entries[0]["sha256"] == __import__("hashlib").sha256(film).hexdigest()
    assert entries[0]["gate"] == {"passed": True, "reason": "ok"}
    assert "\x1b" not in entries[0]["file_name"]
    raw = (tmp_path / "audit.jsonl").read_bytes()
    assert film not in raw and len(raw.splitlines()) == 2
