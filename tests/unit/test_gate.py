"""core.serving.gate, the "is this a chest radiograph?" gate: image statistics, feature distance, gate.npz."""

from __future__ import annotations

import numpy as np
import pytest

from core.serving.gate import GateResult, check, fit_gate, load_gate, save_gate


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
