"""The population gate on real films: another population is "unlike the training films", mis-prepared films
are refused with their fix, unseen films of the training population pass.

The recommended preset keeps the ImageNet backbone as it is, and the gate reads only backbone features (and
the training labels, for the class means), so an untrained head over that backbone gives the same gate as a
trained recommended run, without a training in the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_DATA, WEIGHTS_035

PAEDIATRIC, ADULT = SHARED_DATA / "pediatric-pneumonia", SHARED_DATA / "nih-cxr4"
pytestmark = pytest.mark.skipif(not (PAEDIATRIC.is_dir() and ADULT.is_dir()) or WEIGHTS_035 is None,
                                reason="needs ../shared/data (both real sets) and the ImageNet 0.35 backbone")


def _films(root, per_class: int, skip: int = 0):
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = sorted((root / name).iterdir())[skip:skip + per_class]
        paths += files
        labels += [index] * len(files)
    return paths, np.array(labels)


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    import os

    os.environ.setdefault("KERAS_HOME", str(WEIGHTS_035.parents[1]))
    from core.config import preset
    from core.imaging.loader import load_image
    from core.model import build_model
    from core.serving import population, population_fit

    model = build_model(preset("recommended", alpha=0.35), num_classes=2)
    feature_model = population.depth_feature_model(model)

    def features_of(images):
        return population.depth_features(feature_model, images)[1]

    paths, labels = _films(PAEDIATRIC, per_class=110)
    images = np.stack([load_image(path) for path in paths])
    rows = np.arange(len(images))
    index = {"train": rows[rows % 4 != 0], "val": rows[rows % 4 == 0]}
    run_dir = tmp_path_factory.mktemp("population-run")
    population_fit.fit_population_for_run(run_dir, model, images, labels, index)
    return population, population.load_population(run_dir), features_of


def _verdicts(gate, images):
    population, statistics, features_of = gate
    return [population.assess(image, image[:, :, 0], 0.0, row, statistics, features_of, "paediatric films")
            for image, row in zip(images, features_of(images))]


def test_unseen_films_of_the_training_population_pass_and_adult_films_are_unlike(gate):
    from core.imaging.loader import load_image

    unseen = np.stack([load_image(path) for path in _films(PAEDIATRIC, per_class=20, skip=110)[0]])
    adult = np.stack([load_image(path) for path in _films(ADULT, per_class=10)[0]])
    assert np.mean([v.passed for v in _verdicts(gate, unseen)]) >= 0.95
    kinds = [v.kind for v in _verdicts(gate, adult)]
    assert np.mean([kind == "unlike_training_films" for kind in kinds]) >= 0.75, kinds


@pytest.mark.parametrize("how, defect", [("rot90", "rotated"), ("rot180", "upside_down"),
                                         ("inverted", "inverted"), ("crop", "cropped")])
def test_mis_prepared_films_are_refused_with_their_fix(gate, how, defect):
    from core.imaging.loader import read_film, to_model_input

    films = []
    for index, path in enumerate(_films(PAEDIATRIC, per_class=10, skip=130)[0]):
        gray = read_film(str(path), max_side=448).gray
        h, w = gray.shape
        spoiled = {"rot90": lambda: np.rot90(gray), "rot180": lambda: np.rot90(gray, 2),
                   "inverted": lambda: 255 - gray,
                   "crop": lambda: gray[(index % 2) * h // 2:(index % 2 + 1) * h // 2, :w // 2]}[how]()
        films.append(to_model_input(np.ascontiguousarray(spoiled)))
    verdicts = _verdicts(gate, np.stack(films))
    assert np.mean([v.kind == "mis_prepared" and v.defect == defect for v in verdicts]) >= 0.85, verdicts
    assert all(not v.passed for v in verdicts if v.defect == defect)
