"""The shipped paediatric run's population gate on real films, through the Predictor as a user's file takes it:
adult NIH films are "unlike the training films", mis-prepared films are refused with their fix, and the
run's own test films (never seen in training) pass. bench/population.py measures the same on every film.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT, SHARED_DATA

from core.runs.artifacts import SPLIT_FILE_NAME, read_split_csv

RUN = PROJECT_ROOT / "models" / "demo-pediatric-pneumonia"
PAEDIATRIC, ADULT = SHARED_DATA / "pediatric-pneumonia", SHARED_DATA / "nih-cxr4"
pytestmark = pytest.mark.skipif(not (PAEDIATRIC.is_dir() and ADULT.is_dir()) or not (RUN / "population.npz").is_file(),
                                reason="needs ../shared/data (both real sets) and the shipped paediatric run")


@pytest.fixture(scope="module")
def predictor():
    from core.serving.predict import Predictor

    return Predictor(RUN, engine="keras", warm=False)


def _test_films() -> list:
    return [PAEDIATRIC / row["path"] for row in read_split_csv(RUN / SPLIT_FILE_NAME) if row["subset"] == "test"]


def _png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(gray)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_unseen_films_of_the_training_population_pass_and_adult_films_are_unlike(predictor):
    unseen = [predictor.predict(path).gate for path in _test_films()]
    assert len(unseen) == 120 and np.mean([verdict.passed for verdict in unseen]) >= 0.97, unseen
    adult = [predictor.predict(path).gate for name in ("Cardiomegaly", "Normal", "Pneumonia", "Pneumothorax")
             for path in sorted((ADULT / name).iterdir())[:10]]
    assert np.mean([verdict.kind == "unlike_training_films" for verdict in adult]) >= 0.85, adult
    assert not any(verdict.passed for verdict in adult if verdict.kind == "unlike_training_films")


@pytest.mark.parametrize("how, defect", [("rot90", "rotated"), ("rot180", "upside_down"),
                                         ("inverted", "inverted"), ("crop", "cropped")])
def test_mis_prepared_films_are_refused_with_their_fix(predictor, how, defect):
    from core.imaging.loader import read_film

    verdicts = []
    for index, path in enumerate(_test_films()[::12]):
        gray = read_film(str(path)).gray
        h, w = gray.shape
        spoiled = {"rot90": lambda: np.rot90(gray), "rot180": lambda: np.rot90(gray, 2),
                   "inverted": lambda: 255 - gray,
                   "crop": lambda: gray[(index % 2) * h // 2:(index % 2 + 1) * h // 2, :w // 2]}[how]()
        verdicts.append(predictor.predict(_png(spoiled), name=f"{how}.png").gate)
    assert len(verdicts) == 10
    assert np.mean([v.kind == "mis_prepared" and v.defect == defect for v in verdicts]) >= 0.9, verdicts
    assert all(not v.passed for v in verdicts if v.defect == defect)
