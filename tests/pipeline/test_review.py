"""Review on a trained run: Grad-CAM regions cached and summarised in the card, tags in the card."""

from __future__ import annotations

import json

import pytest

from conftest import copy_run


def test_compute_cam_regions_writes_the_cache_and_the_card(tiny_run, keras_predictor, tmp_path):
    from core.runs.registry import load_run
    from core.explain.regions import compute_cam_regions, load_cam_regions
    from core.runs.artifacts import CAM_REGIONS_FILE_NAME

    copy = copy_run(tiny_run, tmp_path)
    run = load_run(copy)
    assert load_cam_regions(copy) is None
    # The run's model, already in memory (the copy's model file is the tiny run's).
    result = compute_cam_regions(run, run.dataset_root(), max_films=6, model=keras_predictor.model)
    assert 2 <= result["n"] <= 6 and not result["missing"]  # Bounded: at most 3 wrong and as many right.
    for film in result["films"]:
        assert film["central"] + film["border"] == pytest.approx(1.0) or film["border"] == 0.0
        assert 0.0 <= film["corners"] <= film["border"] + 1e-9
    assert result["uniform"]["border"] == pytest.approx(0.51, abs=0.03)
    assert load_cam_regions(copy)["films"] == json.loads((copy / CAM_REGIONS_FILE_NAME).read_text())["films"]
    assert "Grad-CAM mass on the image border" in (copy / "model_card.md").read_text()


def test_cam_regions_of_a_shipped_run_go_to_the_user_dir_and_leave_the_run_unchanged(tiny_run, keras_predictor,
                                                                                      tmp_path, monkeypatch):
    from core.explain.regions import cam_regions_path, compute_cam_regions, load_cam_regions
    from core.runs import registry

    monkeypatch.setenv("PARU_USER_DIR", str(tmp_path / "user"))
    # A run that counts as shipped: a demo-* folder in the project's models folder (patched to tmp_path).
    monkeypatch.setattr(registry, "SHIPPED_RUNS_DIR", tmp_path / "models")
    shipped = copy_run(tiny_run, tmp_path).rename(tmp_path / "models" / "demo-tiny")
    assert registry.is_shipped_run(shipped)

    def files():
        return {path.relative_to(shipped): path.read_bytes() for path in shipped.rglob("*") if path.is_file()}

    before = files()
    run = registry.load_run(shipped)
    result = compute_cam_regions(run, run.dataset_root(), max_films=4, model=keras_predictor.model)
    assert files() == before  # no cam_regions.json, and the model card as shipped
    assert cam_regions_path(shipped) == tmp_path / "user" / "cam_regions" / "demo-tiny.json"
    assert load_cam_regions(shipped)["films"] == result["films"]


def test_review_tags_rewrite_the_model_card(tiny_run, tmp_path):
    from core.runs.review import save_tag

    copy = copy_run(tiny_run, tmp_path)
    before = (copy / "model_card.md").read_text()
    assert "Failure modes seen in review" not in before
    save_tag(copy, "Normal/Nor_001.png", "label error", "Looks like  pneumonia\nto me",
             label="Normal", predicted="Pneumonia")
    save_tag(copy, "Cardiomegaly/Car_002.png", "label error", "", label="Cardiomegaly", predicted="Normal")
    save_tag(copy, "Pneumonia/Pne_003.png", "image quality", "", label="Pneumonia", predicted="Normal")
    card = (copy / "model_card.md").read_text()
    assert card.startswith(before.rstrip("\n"))  # The rest of the card is rewritten unchanged.
    assert "## Failure modes seen in review" in card
    assert "| label error | 2 | Cardiomegaly -> Normal (1), Normal -> Pneumonia (1) |" in card
    assert "| image quality | 1 | Pneumonia -> Normal (1) |" in card
    assert "- `Normal/Nor_001.png` (label error): Looks like pneumonia to me" in card
    # Untagging every film removes the section again.
    for file in ("Normal/Nor_001.png", "Cardiomegaly/Car_002.png", "Pneumonia/Pne_003.png"):
        save_tag(copy, file, "untagged", "")
    assert "Failure modes seen in review" not in (copy / "model_card.md").read_text()
