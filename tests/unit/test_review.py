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


TAGGER = """
import sys
sys.path.insert(0, sys.argv[1])
from core.runs.review import save_tag
for number in range(int(sys.argv[4])):
    save_tag(sys.argv[2], f"{sys.argv[3]}-{number}.png", "label error", "note", label="Normal", predicted="Pneumonia")
"""


def test_reviewers_tagging_at_once_lose_no_tag(tmp_path):
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from core.runs.review import load_tags, save_tag

    root = str(Path(__file__).resolve().parents[2])
    processes = [subprocess.Popen([sys.executable, "-c", TAGGER, root, str(tmp_path), f"p{worker}", "20"])
                 for worker in range(6)]
    threads = [threading.Thread(target=lambda w=worker: [save_tag(tmp_path, f"t{w}-{n}.png", "ambiguous")
                                                         for n in range(10)]) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(process.wait(timeout=120) == 0 for process in processes)
    assert len(load_tags(tmp_path)) == 6 * 20 + 4 * 10


def test_entries_that_are_not_objects_are_reported_and_a_damaged_file_is_never_overwritten(tmp_path):
    import json

    from core.runs.review import load_tags, read_tags, save_tag, tags_csv

    (tmp_path / "review_tags.json").write_text(json.dumps({
        "a.png": "label error", "b.png": {"tag": "ambiguous", "note": ""}, "c.png": {"tag": "cat"}, "d.png": None}))
    tags, problems = read_tags(tmp_path)
    assert list(tags) == ["b.png"] and len(problems) == 3 and "not an object" in problems[0]
    assert b"b.png" in tags_csv(tags)
    save_tag(tmp_path, "e.png", "model error")
    assert sorted(load_tags(tmp_path)) == ["b.png", "e.png"] and read_tags(tmp_path)[1] == []

    (tmp_path / "review_tags.json").write_bytes(b'{"a.png": {"tag": "ambig')  # Cut short.
    assert read_tags(tmp_path)[0] == {} and "not valid JSON" in read_tags(tmp_path)[1][0]
    with pytest.raises(ValueError, match="review_tags.json is not valid JSON"):
        save_tag(tmp_path, "f.png", "ambiguous")
    assert (tmp_path / "review_tags.json").read_bytes() == b'{"a.png": {"tag": "ambig'


def test_tags_of_a_shipped_run_live_in_the_user_dir_and_leave_the_run_unmodified(tmp_path, monkeypatch):
    from pathlib import Path

    from core.runs import registry
    from core.runs.review import load_tags, save_tag, tags_path

    project_root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PARU_USER_DIR", str(tmp_path / "user"))
    # The project's own demo run is shipped: its tags would go to the user dir (nothing is written here).
    demo = project_root / "models" / "demo-nih-cxr4"
    assert registry.is_shipped_run(demo) and tags_path(demo) == tmp_path / "user" / "tags" / f"{demo.name}.json"
    assert not registry.is_shipped_run(tmp_path)

    monkeypatch.setattr(registry, "SHIPPED_RUNS_DIR", tmp_path / "models")
    shipped = tmp_path / "models" / "demo-chest"
    shipped.mkdir(parents=True)
    (shipped / "model_card.md").write_text("# card\n")
    before = {path.name: path.read_bytes() for path in shipped.iterdir()}
    save_tag(shipped, "a.png", "label error", "a note", label="Normal", predicted="Pneumonia")
    assert {path.name: path.read_bytes() for path in shipped.iterdir()} == before
    assert load_tags(shipped)["a.png"]["note"] == "a note"
    assert (tmp_path / "user" / "tags" / "demo-chest.json").is_file()
