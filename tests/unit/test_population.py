"""core.serving.population: multi-depth population distance, the mis-preparation check, their verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from core.runs.artifacts import POPULATION_FILE_NAME
from core.serving.population import (
    COPY_VARIANTS,
    DEFECTS,
    KINDS,
    assess,
    from_gate_result,
    load_population,
    mis_prepare,
    population_scores,
    undo,
)
from core.serving.population_fit import fit_population, mis_prepared_copies, save_population

SIZES = [8, 24]
# Each defect moves the features in its own direction, as a rotation or inversion moves real features.
DEFECT_SHIFTS = np.random.default_rng(7).normal(0, 1, (len(DEFECTS), sum(SIZES))) * 3.5


def _films(rng, n, shift=0.0):
    labels = rng.integers(0, 2, n)
    features = rng.normal(0, 1, (n, sum(SIZES))) * np.linspace(2, 0.5, sum(SIZES)) + labels[:, None] * 1.5
    return features + shift, labels


@pytest.fixture(scope="module")
def statistics():
    rng = np.random.default_rng(0)
    train, labels = _films(rng, 400)
    val, _ = _films(rng, 300)
    defect_labels = np.arange(400) % len(DEFECTS)
    defects = _films(rng, 400)[0] + DEFECT_SHIFTS[defect_labels]
    return fit_population(train, labels, val, SIZES, defects, defect_labels)


IMAGE = np.tile(np.arange(32, dtype=np.uint8)[:, None] * 8, (1, 32))[:, :, None]
GRAY = np.tile(np.arange(256, dtype=np.uint8), (256, 1))


def test_films_of_the_training_population_pass(statistics):
    test, _ = _films(np.random.default_rng(1), 500)
    verdicts = [assess(IMAGE, GRAY, 0.0, row, statistics) for row in test]
    assert np.mean([v.passed for v in verdicts]) >= 0.97, np.mean([v.passed for v in verdicts])
    assert {v.kind for v in verdicts if v.passed} == {"ok"}


def test_another_population_is_unlike_the_training_films(statistics):
    other, _ = _films(np.random.default_rng(2), 200, shift=3.0)
    verdicts = [assess(IMAGE, GRAY, 0.0, row, statistics, population="paediatric films") for row in other]
    assert np.mean([v.kind == "unlike_training_films" for v in verdicts]) >= 0.9
    refused = next(v for v in verdicts if not v.passed)
    assert "paediatric films" in refused.reason and "another population" in refused.reason
    assert refused.to_json()["kind"] == "unlike_training_films" and refused.to_json()["passed"] is False


def test_far_images_are_no_chest_film(statistics):
    far, _ = _films(np.random.default_rng(3), 20, shift=40.0)
    assert {assess(IMAGE, GRAY, 0.0, row, statistics).kind for row in far} == {"not_a_chest_film"}


@pytest.mark.parametrize("index", range(len(DEFECTS)))
def test_mis_prepared_films_are_refused_with_their_fix(statistics, index):
    films, _ = _films(np.random.default_rng(10 + index), 50)
    defect = DEFECTS[index]
    verdicts = [assess(IMAGE, GRAY, 0.0, row, statistics) for row in films + DEFECT_SHIFTS[index]]
    assert np.mean([v.kind == "mis_prepared" and v.defect == defect for v in verdicts]) >= 0.95
    reason = next(v.reason for v in verdicts if v.defect == defect)
    expected = {"rotated": "rotate it upright", "upside_down": "upside down: rotate it by 180",
                "inverted": "invert it", "cropped": "whole frontal film"}[defect]
    assert expected in reason


def test_an_undone_defect_that_stays_far_is_another_population(statistics):
    rng = np.random.default_rng(20)
    film = _films(rng, 1)[0][0] + DEFECT_SHIFTS[DEFECTS.index("upside_down")]
    healed = assess(IMAGE, GRAY, 0.0, film, statistics, features_of=lambda images: _films(rng, len(images))[0] * 0.5)
    assert healed.kind == "mis_prepared" and healed.defect == "upside_down"
    still_far = assess(IMAGE, GRAY, 0.0, film, statistics,
                       features_of=lambda images: _films(rng, len(images), shift=3.0)[0])
    assert still_far.kind == "unlike_training_films"


def test_image_statistics_come_first_and_old_runs_keep_them():
    assert assess(IMAGE, GRAY, 60.0, None, None).kind == "not_a_chest_film"
    uniform = np.full((64, 64), 100, np.uint8)
    assert "nearly uniform" in assess(IMAGE, uniform, 0.0, None, None).reason
    verdict = assess(IMAGE, GRAY, 0.0, None, None)
    assert verdict.passed and verdict.kind == "ok" and "no population statistics" in verdict.reason
    assert set(KINDS) >= {"ok", "not_a_chest_film", "unlike_training_films", "mis_prepared"}


def test_statistics_round_trip_and_damaged_files(statistics, tmp_path):
    save_population(tmp_path, statistics)
    loaded = load_population(tmp_path)
    row = _films(np.random.default_rng(4), 3)[0]
    assert np.allclose(population_scores(row, loaded), population_scores(row, statistics), rtol=1e-4)
    assert load_population(tmp_path / "nowhere") is None
    # A damaged file is said, naming the file, never a silent fall back to the first gate.
    (tmp_path / POPULATION_FILE_NAME).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{POPULATION_FILE_NAME}.*not a readable .npz archive.*Restore"):
        load_population(tmp_path)
    np.savez(tmp_path / POPULATION_FILE_NAME, threshold=np.float32(1.0))
    with pytest.raises(ValueError, match=f"{POPULATION_FILE_NAME} lacks sizes"):
        load_population(tmp_path)
    np.savez(tmp_path / POPULATION_FILE_NAME, threshold=np.float32(1.0), sizes=np.array([3]))
    with pytest.raises(ValueError, match="lacks depth0_means"):
        load_population(tmp_path)


def test_mis_prepare_and_undo_are_inverse():
    image = np.random.default_rng(5).integers(0, 256, (32, 32, 1)).astype(np.uint8)
    for defect in ("rotated", "upside_down", "inverted"):
        for variant in (0, 1):
            spoiled = mis_prepare(image, defect, variant)
            assert spoiled.shape == image.shape and spoiled.dtype == np.uint8
            assert any(np.array_equal(fix, image) for fix in undo(spoiled, defect))
    cropped = mis_prepare(image, "cropped", 3)
    assert cropped.shape == image.shape and undo(cropped, "cropped") == []
    copies, labels = mis_prepared_copies(np.stack([image] * 2))
    # Every variant of each film: both quarter turns, upside down, inverted, four quarters and the centre.
    assert copies.shape == (2 * len(COPY_VARIANTS), 32, 32, 1)
    assert labels.tolist() == [0] * 4 + [1, 1, 2, 2] + [3] * 10
    assert len(mis_prepared_copies(np.stack([image] * 5), max_films=3)[1]) == 3 * len(COPY_VARIANTS)
    assert not np.array_equal(mis_prepare(image, "cropped", 4), mis_prepare(image, "cropped", 0))
    with pytest.raises(ValueError, match="must be one of"):
        mis_prepare(image, "sideways")
    with pytest.raises(ValueError, match="at least 4"):
        fit_population(np.zeros((3, 32)), np.zeros(3, int), np.zeros((2, 32)), SIZES, np.zeros((0, 32)),
                       np.zeros(0, int))


def test_old_runs_gate_results_get_a_kind():
    from core.serving.gate import GateResult

    assert from_gate_result(GateResult(True, "fine", 0.5)).kind == "ok"
    assert from_gate_result(GateResult(False, "colour picture")).kind == "not_a_chest_film"
    far = from_gate_result(GateResult(False, "far", 1.7))
    assert far.kind == "unlike_training_films" and "1.70x" in far.reason and not far.passed
