"""core.explain.overlay: a CAM painted over a film, its colour legend, and an import that stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.explain.overlay import colorbar, colormap, overlay


def test_overlay_resizes_the_cam_to_a_non_square_film():
    gray = np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8)
    cam = np.zeros((96, 96), np.float32)
    cam[40:56, 40:56] = 1.0
    picture = overlay(gray, cam)
    assert picture.shape == (300, 200, 3) and picture.dtype == np.uint8
    # The hot centre is tinted; a cold corner keeps the film's gray.
    assert np.abs(picture[150, 100].astype(int) - gray[150, 100]).max() > 10
    assert (picture[5, 5] == gray[5, 5]).all()


def test_overlay_is_the_film_blended_with_the_heatmap_by_opacity_times_cam():
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    cam = rng.random((48, 40), dtype=np.float32)
    heat = colormap()[np.round(cam * 255).astype(np.intp)].astype(np.float64) * 255
    alpha = 0.6 * cam.astype(np.float64)[:, :, np.newaxis]
    expected = gray[:, :, np.newaxis] * (1 - alpha) + heat * alpha
    assert np.abs(overlay(gray, cam, opacity=0.6).astype(np.float64) - expected).max() <= 0.5 + 1e-3


def test_overlay_of_an_all_zero_cam_is_the_film():
    gray = np.full((50, 70), 120, np.uint8)
    picture = overlay(gray, np.zeros((7, 7), np.float32))
    assert picture.shape == (50, 70, 3)
    assert (picture == 120).all()


def test_overlay_treats_nan_as_cold():
    gray = np.full((20, 20), 80, np.uint8)
    cam = np.full((20, 20), np.nan, np.float32)
    assert (overlay(gray, cam) == 80).all()


def test_overlay_with_opacity_zero_returns_the_film_in_rgb():
    gray = np.random.default_rng(1).integers(0, 256, (40, 60), dtype=np.uint8)
    picture = overlay(gray, np.ones((10, 10), np.float32), opacity=0.0)
    np.testing.assert_array_equal(picture, np.stack([gray] * 3, axis=-1))


@pytest.mark.parametrize(
    "gray, cam, opacity, match",
    [
        (np.zeros((10, 10), np.float32), np.zeros((10, 10)), 0.5, "2-D uint8"),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10)), 0.5, "2-D uint8"),
        (np.zeros((10, 10), np.uint8), np.zeros((2, 10, 10)), 0.5, "one 2-D map"),
        (np.zeros((10, 10), np.uint8), np.zeros((10, 10)), 1.5, r"opacity=1.5"),
    ],
)
def test_overlay_rejects_bad_input(gray, cam, opacity, match):
    with pytest.raises(ValueError, match=match):
        overlay(gray, cam, opacity)


def test_colorbar_runs_from_hot_to_cold():
    bar = colorbar(height=64, width=8)
    assert bar.shape == (64, 8, 3) and bar.dtype == np.uint8
    top, low = bar[0, 0].astype(int), bar[-8, 0].astype(int)
    assert top[0] > 2 * top[2]  # dark red at CAM 1
    assert low[2] > 2 * low[0]  # blue near CAM 0


def test_importing_explain_does_not_import_tensorflow():
    code = ("import sys, core.explain.gradcam, core.explain.overlay; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.split() == ["False", "False"]
