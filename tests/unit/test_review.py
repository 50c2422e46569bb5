"""Review without a model: choosing the Grad-CAM films, summarising their regions, saving tags."""

from __future__ import annotations

import pytest


def _rows(n_right: int, n_wrong: int) -> list[dict]:
    rows = [{"file": f"r{i}.png", "label": "Normal", "predicted": "Normal", "confidence": 0.9, "subset": "test"}
            for i in range(n_right)]
    rows += [{"file": f"w{i}.png", "label": "Normal", "predicted": "Pneumonia", "confidence": 0.5 + i / 100,
              "subset": "test"} for i in range(n_wrong)]
    return rows + [{"file": "v.png", "label": "Normal", "predicted": "Normal", "confidence": 0.9, "subset": "val"}]


def test_select_cam_films_is_bounded_and_balanced():
    from core.explain.regions import select_cam_films

    assert len(select_cam_films(_rows(5, 2), max_films=10)) == 7  # Small test set: every test film.
    chosen = select_cam_films(_rows(100, 8), max_films=10)
    assert len(chosen) == 10
    wrong = [row for row in chosen if row["label"] != row["predicted"]]
    assert [row["file"] for row in wrong] == ["w3.png", "w4.png", "w5.png", "w6.png", "w7.png"]  # Most confident.
    assert select_cam_films(_rows(100, 8), max_films=10) == chosen  # Seeded.
    assert len(select_cam_films(_rows(100, 0), max_films=10)) == 10
    with pytest.raises(ValueError, match="at least 2"):
        select_cam_films(_rows(3, 3), max_films=1)


def test_summarise_cam_regions_means_and_flags():
    from core.explain.regions import summarise_cam_regions

    films = [
        {"file": "a", "label": "N", "predicted": "N", "central": 0.8, "border": 0.2, "corners": 0.0},
        {"file": "b", "label": "N", "predicted": "N", "central": 0.6, "border": 0.4, "corners": 0.1},
        {"file": "c", "label": "N", "predicted": "P", "central": 0.1, "border": 0.9, "corners": 0.5},
    ]
    summary = summarise_cam_regions(films)
    assert summary["correct"]["n"] == 2 and summary["correct"]["mean_border"] == pytest.approx(0.3)
    assert summary["wrong"]["mean_corners"] == pytest.approx(0.5)
    assert [film["file"] for film in summary["flagged"]] == ["c"] and summary["n_flagged"] == 1
    assert summarise_cam_regions([])["wrong"]["mean_border"] is None


def test_save_tag_without_a_run_still_saves(tmp_path):
    from core.runs.review import load_tags, save_tag

    save_tag(tmp_path, "a.png", "ambiguous", "unclear")
    assert load_tags(tmp_path)["a.png"]["tag"] == "ambiguous"
    assert not (tmp_path / "model_card.md").exists()
