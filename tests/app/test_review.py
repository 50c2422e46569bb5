"""The Review page: mix-ups with their Grad-CAM, tags that persist and update the model card, and the
Grad-CAM region analysis."""

from __future__ import annotations

import pytest

from app.conftest import open_page, texts
from core.runs.review import load_tags, save_tag
from core.ui import navigation

REVIEW = navigation.REVIEW.script


def test_review_tags_persist(review_run):
    run, file = review_run
    at = open_page(REVIEW)
    assert not at.exception, at.exception
    assert "Normal → Pneumonia" in at.multiselect[0].value
    assert len(at.image) >= 2  # The film and its Grad-CAM.
    key = f"tag-{run.run_id}-{file}"
    at.selectbox(key=key).set_value("label error")
    at.button(key=f"save-{run.run_id}-{file}").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key=key).value == "label error"
    at.run()
    assert at.selectbox(key=key).value == "label error"
    assert load_tags(run.path)[file]["tag"] == "label error"
    # A new session (a browser reload) reads the tag back from the run folder.
    fresh = open_page(REVIEW)
    assert fresh.selectbox(key=key).value == "label error"


def test_review_tags_reject_unknown_tag(tmp_path):
    with pytest.raises(ValueError, match="must be one of"):
        save_tag(tmp_path, "a.png", "maybe")


def test_review_tags_update_the_model_card(review_run):
    run, file = review_run
    at = open_page(REVIEW)
    assert "Download model card" in [button.label for button in at.download_button]
    at.text_input(key=f"note-{run.run_id}-{file}").set_value("blurred film, label doubtful")
    at.selectbox(key=f"tag-{run.run_id}-{file}").set_value("label error")
    at.button(key=f"save-{run.run_id}-{file}").click().run()
    assert not at.exception, at.exception
    card = (run.path / "model_card.md").read_text()
    assert "## Failure modes seen in review" in card
    assert "| label error | 1 | Normal -> Pneumonia (1) |" in card
    assert "blurred film, label doubtful" in card


def test_a_note_is_saved_with_its_tag_and_an_unsaved_one_says_so(review_run):
    run, file = review_run
    at = open_page(REVIEW)
    assert "Not saved yet" in texts(at.caption)
    at.text_input(key=f"note-{run.run_id}-{file}").set_value("rotated film")
    at.selectbox(key=f"tag-{run.run_id}-{file}").set_value("ambiguous")
    at.button(key=f"save-{run.run_id}-{file}").click().run()
    assert not at.exception, at.exception
    assert load_tags(run.path)[file]["note"] == "rotated film"
    # A reload reads the note back with its tag, and says what is saved.
    fresh = open_page(REVIEW)
    assert fresh.text_input(key=f"note-{run.run_id}-{file}").value == "rotated film"
    assert "Saved: ambiguous: “rotated film”" in texts(fresh.caption)


def test_review_measures_grad_cam_regions_once(review_run):
    run, _ = review_run
    at = open_page(REVIEW)
    assert "Where the model looks (Grad-CAM mass)" in texts(at.subheader)
    at.button(key="cam_regions_go").click().run()
    assert not at.exception, at.exception
    assert "cam_regions_go" not in [button.key for button in at.button]  # Its work done, the button goes.
    table = next(frame.value for frame in at.dataframe if "Border band" in frame.value.columns)
    assert list(table[""]) == ["Right answers", "Wrong answers", "Uniform map (area shares)"]
    assert (run.path / "cam_regions.json").is_file()
    assert "test films explained" in texts(at.caption)
    assert "Grad-CAM mass:" in texts(at.caption)  # Each reviewed film shows its own shares.
    # A new session shows the saved analysis without a button to recompute it.
    fresh = open_page(REVIEW)
    assert "cam_regions_go" not in [button.key for button in fresh.button]
    assert any("Border band" in frame.value.columns for frame in fresh.dataframe)


def test_review_asks_for_the_films_when_the_recorded_folder_is_gone(review_run, data_root, tmp_path):
    import json

    run, file = review_run
    report = json.loads((run.path / "data_report.json").read_text())
    report["root"] = str(tmp_path / "moved-away")
    (run.path / "data_report.json").write_text(json.dumps(report))
    at = open_page(REVIEW)
    assert not at.exception, at.exception
    assert "is not on this machine" in texts(at.warning)
    assert "Film not found on this machine." in texts(at.info)
    at.text_input(key="review_root").set_value(str(data_root)).run()
    assert not at.exception, at.exception
    assert len(at.image) >= 2
    at.text_input(key="review_root").set_value("/etc").run()
    assert any("outside the data folders" in error.value for error in at.error)


def test_review_shows_the_packed_review_films_and_their_grad_cam_without_the_dataset(review_run, tmp_path,
                                                                                     monkeypatch):
    import json

    from core.runs.review_films import pack_review_films

    run, file = review_run  # Packed in place (review_run takes the films away again): the page's model is kept.
    pack_review_films(run.path, max_side=64)
    # A fresh machine: the run records its dataset by name and no data root holds it.
    report = json.loads((run.path / "data_report.json").read_text())
    report["root"] = "moved-away"
    (run.path / "data_report.json").write_text(json.dumps(report))
    (tmp_path / "empty-data").mkdir()
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "empty-data"))
    at = open_page(REVIEW)
    assert not at.exception, at.exception
    assert "review films shipped with the run are shown" in texts(at.info)
    assert "Film not found on this machine." not in texts(at.info)
    assert len(at.image) >= 2  # The film and its Grad-CAM, from the packed copy.
    assert "Downsized copy shipped with the run" in texts(at.caption)
    at.button(key="cam_regions_go").click().run()  # The region analysis reads the packed films too.
    assert not at.exception, at.exception
    assert any("Border band" in frame.value.columns for frame in at.dataframe)
    assert file in {film["file"] for film in json.loads((run.path / "cam_regions.json").read_text())["films"]}
