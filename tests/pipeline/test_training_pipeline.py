"""core.training.pipeline: the paper's training-only augmentation (rotation ±10°, zoom 10%, horizontal flip, brightness)
and the tf.data pipeline it runs in."""

from __future__ import annotations

import math

import numpy as np

from conftest import tiny_config


def _marker_films(count: int, size: int = 65) -> np.ndarray:
    """Dark films with one bright 5x5 marker up and to the right of the centre."""
    films = np.full((count, size, size, 1), 20.0, np.float32)
    films[:, 10:15, 40:45] = 240.0
    return films


def _marker_centres(films: np.ndarray) -> np.ndarray:
    """(row, column) of each film's bright marker, as a weighted centre of mass."""
    weights = np.clip(films[..., 0] - 128.0, 0, None)
    rows, columns = np.indices(films.shape[1:3])
    total = weights.sum(axis=(1, 2))
    return np.stack([(weights * rows).sum(axis=(1, 2)) / total, (weights * columns).sum(axis=(1, 2)) / total], 1)


def test_flip_alone_mirrors_the_film_about_half_the_time():
    from core.training.pipeline import build_augmentation

    augment = build_augmentation(tiny_config(rotation_degrees=0.0, zoom=0.0, brightness=0.0, horizontal_flip=True))
    films = _marker_films(200)
    out = augment(films).numpy()
    mirrored = np.array([np.allclose(o, f[:, ::-1], atol=1e-3) for o, f in zip(out, films)])
    unchanged = np.array([np.allclose(o, f, atol=1e-3) for o, f in zip(out, films)])
    assert np.all(mirrored | unchanged)
    assert 0.35 < mirrored.mean() < 0.65


def test_rotation_and_zoom_stay_within_the_recipe():
    from core.training.pipeline import build_augmentation

    config = tiny_config(rotation_degrees=10.0, zoom=0.10, brightness=0.0, horizontal_flip=False)
    augment = build_augmentation(config)
    films = _marker_films(400)
    centre = (films.shape[1] - 1) / 2
    before = _marker_centres(films)[0] - centre
    after = _marker_centres(augment(films).numpy()) - centre
    # Image rows grow downwards; angles in the usual mathematical sense need the row flipped.
    angle_before = math.degrees(math.atan2(-before[0], before[1]))
    angles = np.degrees(np.arctan2(-after[:, 0], after[:, 1])) - angle_before
    ratios = np.linalg.norm(after, axis=1) / np.linalg.norm(before)
    assert np.all(np.abs(angles) <= 10.5) and np.ptp(angles) > 15  # Uses most of ±10°.
    assert np.all((ratios > 1 / 1.1 - 0.03) & (ratios < 1 / 0.9 + 0.03)) and np.ptp(ratios) > 0.12


def test_brightness_shifts_each_film_by_at_most_a_tenth_and_stays_in_range():
    from core.training.pipeline import build_augmentation

    augment = build_augmentation(tiny_config(rotation_degrees=0.0, zoom=0.0, horizontal_flip=False, brightness=0.1))
    films = np.full((300, 64, 64, 1), 128.0, np.float32)
    out = augment(films).numpy()
    shifts = out[:, 0, 0, 0] - 128.0
    assert np.all(np.abs(shifts) <= 25.5 + 1e-3) and np.ptp(shifts) > 30
    assert np.allclose(out, out[:, :1, :1, :])  # One offset per film.
    assert out.min() >= 0 and out.max() <= 255
    assert np.all(augment(np.full((4, 64, 64, 1), 250.0, np.float32)).numpy() <= 255.0)


def test_only_the_training_dataset_is_augmented():
    from core.training.pipeline import build_augmentation, make_dataset

    assert build_augmentation(tiny_config(rotation_degrees=0.0, zoom=0.0, horizontal_flip=False,
                                          brightness=0.0)) is None
    config = tiny_config(batch_size=16)
    films = _marker_films(16).astype(np.uint8)
    labels = np.arange(16) % 4
    (val_batch, _), = make_dataset(films, labels, 4, config, training=False).take(1)
    np.testing.assert_array_equal(val_batch.numpy(), films.astype(np.float32))
    (train_batch, _), = make_dataset(films, labels, 4, config, training=True).take(1)
    assert not np.allclose(np.sort(train_batch.numpy(), axis=None), np.sort(films.astype(np.float32), axis=None))
