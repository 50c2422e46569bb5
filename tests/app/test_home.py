"""The shell (streamlit_app.py) and the Home page: every page runs inside it, with and without a run; one
page list feeds the sidebar, the Home links and the URLs; one error boundary."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from app.conftest import open_page, texts
from conftest import PROJECT_ROOT
from core.ui import navigation

PAGES = tuple(entry.script for entry in navigation.PAGES if entry.script)


# The tests that need no run come first: they run while the session's tiny run is still being trained.


@pytest.mark.parametrize("page", (None, *PAGES))
def test_every_page_without_a_run_says_what_to_do(without_run, page):
    at = open_page(page)
    assert not at.exception, at.exception
    if page in (navigation.TRAINING.script, navigation.AUDIT.script):
        assert at.title[0].value.endswith(("Training", "Audit log"))
    else:
        assert "python -m core train --data DIR" in texts(at.warning)


def test_the_page_list_holds_every_page_script_and_keeps_its_url():
    scripts = sorted(f"pages/{path.name}" for path in (PROJECT_ROOT / "pages").glob("*.py")
                     if not path.name.startswith(("_", ".")))
    assert sorted(PAGES) == scripts
    for entry in navigation.PAGES[1:]:
        # The URL Streamlit derives from the file name: the same on every run, whichever mode Streamlit is in.
        assert entry.url_path == re.sub(r"^\d*[_ -]*", "", Path(entry.script).stem)
    assert [entry.url_path for entry in navigation.PAGES] == ["", "Predict", "Evaluation", "Review", "Training",
                                                              "Audit"]


@pytest.mark.parametrize("page", (None, *PAGES))
def test_every_page_runs_with_a_run(with_run, page):
    at = open_page(page)
    assert not at.exception, at.exception
    assert "not for clinical diagnosis" in texts(at.sidebar.caption)
    assert at.sidebar.selectbox(key="run_selector").value == str(with_run.path)


def test_home_shows_the_three_headline_figures_by_name(with_run):
    at = open_page()
    labels = [metric.label for metric in at.metric]
    assert labels[:2] == ["Overall accuracy", "Macro-F1"]
    # Short labels, which a metric card never cuts off ("Mean one-vs-rest accuracy (the paper's 'accur…");
    # what the longer name adds stays on the page, under the card.
    assert labels[2] == "Mean one-vs-rest accuracy"
    assert "The paper's 'accuracy' figure." in texts(at.caption)
    assert "98.83%" in texts(at.info) and "99.42%" in texts(at.info)
    assert "not for clinical diagnosis" in texts(at.warning)


def test_sidebar_menu_and_home_links_come_from_the_one_page_list(with_run):
    at = open_page()
    sidebar = [link.proto.label for link in at.sidebar.get("page_link")]
    assert sidebar == [entry.title for entry in navigation.PAGES]
    assert sidebar[:5] == ["Home", "Predict", "Evaluation", "Review", "Training"]
    assert "streamlit app" not in [label.lower() for label in sidebar]
    home_links = [link.proto.label for link in at.main.get("page_link")]
    assert home_links == [entry.link_label for entry in navigation.PAGES if entry.script]
    # Streamlit's own menu (which says "streamlit app") stays hidden, or the sidebar would show two menus.
    config = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showSidebarNavigation"] is False


def test_each_page_sets_its_tab_title_through_the_shell(with_run):
    for page in PAGES:
        source = (PROJECT_ROOT / page).read_text()
        assert "set_page_config" not in source
        assert "navigation.require_shell()" in source
    assert (PROJECT_ROOT / "streamlit_app.py").read_text().count("frame.set_page(") == 1


def test_an_unexpected_error_in_a_page_is_caught_by_the_boundary(with_run, monkeypatch):
    from core.ui import tables

    def broken(*args, **kwargs):
        raise RuntimeError("a table could not be built")

    monkeypatch.setattr(tables, "distribution_table", broken)
    at = open_page(navigation.EVALUATION.script)
    assert any("This page stopped on an unexpected error: a table could not be built" in error.value
               for error in at.error)
    assert at.exception  # The details, folded away under the message.
    assert "not for clinical diagnosis" in texts(at.sidebar.caption)  # The frame is still drawn.


def test_a_damaged_run_beside_a_good_one_is_named_and_breaks_no_page(with_run):
    import shutil

    from core.runs.artifacts import CLASSES_FILE_NAME

    damaged = with_run.path.parent / "zz-damaged"  # Beside the tier's run, whose loaded model the pages keep.
    shutil.copytree(with_run.path, damaged)
    try:
        (damaged / CLASSES_FILE_NAME).write_text('["Normal", "Pneu')  # Cut short.
        for page in (None, *PAGES):
            at = open_page(page)
            assert not at.exception, (page, at.exception)
            assert at.sidebar.selectbox(key="run_selector").value == str(with_run.path)
        assert "zz-damaged" in texts(at.sidebar.caption) and "not valid JSON" in texts(at.sidebar.caption)
    finally:
        shutil.rmtree(damaged)


def test_home_says_which_shipped_demo_to_use_for_what(with_run):
    at = open_page()
    assert not at.exception, at.exception
    assert "Which demonstration run to use" in texts(at.subheader)
    guide = texts(at.markdown)
    assert "`demo-nih-cxr4`" in guide and "weak" in guide and "four" in guide
    assert "`demo-pediatric-pneumonia`" in guide and "Normal/Pneumonia mix-ups" in guide
