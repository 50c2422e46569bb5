"""The Review page of each shipped run on a machine without its dataset (no data root holds it, no ../shared):
the run's own review films, their Grad-CAM and the saved region analysis are shown (a full-width model: slow).
"""

from __future__ import annotations

import pytest

from app.conftest import open_page, texts
from conftest import PROJECT_ROOT
from core.runs import artifacts
from core.runs.review_films import read_review_manifest
from core.serving.predict import Predictor
from core.ui import cached, navigation

pytestmark = pytest.mark.slow

SHIPPED_RUNS = sorted((PROJECT_ROOT / "models").glob("demo-*"))


@pytest.mark.skipif(not SHIPPED_RUNS, reason="no shipped run is here")
@pytest.mark.parametrize("run_dir", SHIPPED_RUNS, ids=lambda path: path.name)
def test_the_review_page_of_a_shipped_run_shows_its_films_without_the_dataset(run_dir, monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setattr(artifacts, "SHARED_ROOT", tmp_path / "no-shared")  # A laptop without ../shared.
    monkeypatch.setenv("PARU_MODELS_DIR", str(run_dir.parent))
    monkeypatch.setenv("PARU_DEFAULT_RUN", run_dir.name)
    # Keras serves the page's first visit either way; without the background TensorFlow Lite conversion of a
    # full-width model, which would outlive the page (tests/pipeline/test_lite.py tests that engine), and
    # without tracing, ahead of the first film, paths this page may never take (nothing here is timed).
    monkeypatch.setattr(cached, "Predictor",
                        lambda run_path, engine: Predictor(run_path, engine="cached", warm=False))
    assert artifacts.find_dataset_root(run_dir) is None
    at = open_page(navigation.REVIEW.script)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert "review films shipped with the run are shown" in texts(at.info)
    assert "Film not found on this machine." not in texts(at.info)
    assert len(at.image) >= 2  # At least one film and its Grad-CAM.
    assert read_review_manifest(run_dir)["attribution"] in texts(at.caption)
    assert any("Border band" in frame.value.columns for frame in at.dataframe)  # The shipped region analysis.
