"""Shared fixtures: tiny generated datasets, the offline 0.35 backbone, and one briefly trained run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
WEIGHTS_035 = SHARED / "keras_home" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
CLASS_NAMES = ("Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def film_with_blob(class_index: int, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A noisy gray 'film' whose bright blob sits in a class-dependent place (left, right, top, bottom)."""
    image = rng.normal(90, 20, (size, size))
    centres = [(size // 2, size // 4), (size // 2, 3 * size // 4), (size // 4, size // 2), (3 * size // 4, size // 2)]
    row, col = centres[class_index % 4]
    rows, cols = np.ogrid[:size, :size]
    image[(rows - row) ** 2 + (cols - col) ** 2 < (size // 7) ** 2] += 120
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 12, class_folders=CLASS_NAMES, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for index, folder in enumerate(class_folders):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            Image.fromarray(film_with_blob(index, rng)).save(root / folder / f"{folder[:3]}_{number:03d}.png")
    return root


def tiny_config(**overrides):
    from core.config import preset

    settings = dict(alpha=0.35, image_size=64, epochs=2, batch_size=8,
                    weights=str(WEIGHTS_035) if WEIGHTS_035.exists() else "none")
    return preset("paper", **{**settings, **overrides})


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Converted models (core.serving.lite) go to a cache of this test session, never the user's own."""
    os.environ["PARU_CACHE_DIR"] = str(tmp_path_factory.mktemp("paru-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset):
    """One finished run trained briefly on the tiny dataset, in its own models folder."""
    from core.training.run import train_run

    models_dir = tmp_path_factory.mktemp("models")
    run_dir = train_run(tiny_dataset, tiny_config(), models_dir=models_dir, log=lambda line: None)
    return run_dir
