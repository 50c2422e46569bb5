"""The app's one page list, read by st.navigation, the sidebar menu, the Home page's links and the tests.

streamlit_app.py is the shell of every page: it calls st.navigation with this list, sets the page config,
draws the sidebar and runs the chosen page inside one error boundary (`run_page`). The page scripts stay in
pages/ and keep their URLs (/Predict, /Evaluation, ...: each `url_path` below is what Streamlit derives from
the file name).

Why every page script starts with `require_shell()`: when a pages/ folder exists, Streamlit (1.x) runs the
first script run of a server process, and every AppTest run, in its older automatic pages/ mode, which
executes the page file directly and never runs streamlit_app.py. `require_shell()` notices that (the page is
not running inside `run_page`), runs streamlit_app.py, whose st.navigation then runs this same page inside
the shell, and stops the outer run. From then on (st.navigation switches the process to its own mode)
the check costs nothing.
"""

from __future__ import annotations

import contextvars
import runpy
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from core.settings import PROJECT_ROOT

APP_SCRIPT = "streamlit_app.py"
PAGE_ICON = "🫁"


@dataclass(frozen=True)
class PageEntry:
    """One page of the app.

    title: the sidebar label and the browser tab's title ("<title> · Paru").
    icon: the sidebar icon. script: the page file (None for Home, drawn by streamlit_app.py).
    url_path: the page's URL ("" for Home, at /). link_label, link_icon: its link on the Home page.
    """

    title: str
    icon: str
    script: str | None = None
    url_path: str = ""
    link_label: str = ""
    link_icon: str = ""


HOME = PageEntry("Home", ":material/home:")
PREDICT = PageEntry("Predict", ":material/search:", "pages/1_Predict.py", "Predict",
                    "Predict — classify your films, with Grad-CAM", "🔍")
EVALUATION = PageEntry("Evaluation", ":material/bar_chart:", "pages/2_Evaluation.py", "Evaluation",
                       "Evaluation — curves, confusion matrix, ROC, calibration", "📊")
REVIEW = PageEntry("Review", ":material/fact_check:", "pages/3_Review.py", "Review",
                   "Review — misclassified test films, tag them", "🗂️")
TRAINING = PageEntry("Training", ":material/model_training:", "pages/4_Training.py", "Training",
                     "Training — train a new model on a dataset folder", "🏋️")
AUDIT = PageEntry("Audit log", ":material/receipt_long:", "pages/5_Audit.py", "Audit",
                  "Audit log — every prediction the app made, filtered and downloadable", "🧾")
PAGES = (HOME, PREDICT, EVALUATION, REVIEW, TRAINING, AUDIT)
"""Every page, in menu order; the first is the default page."""

_inside_shell: contextvars.ContextVar[bool] = contextvars.ContextVar("paru_inside_shell", default=False)


def streamlit_pages(home: Callable[[], None]) -> list:
    """The st.Page objects of PAGES, in order; `home` draws the Home page (the default, at /)."""
    return [st.Page(home, title=entry.title, icon=entry.icon, default=True) if entry.script is None
            else st.Page(entry.script, title=entry.title, icon=entry.icon, url_path=entry.url_path)
            for entry in PAGES]


def run_page(page) -> None:
    """Run the page chosen by st.navigation, marked as running inside the shell (see `require_shell`)."""
    token = _inside_shell.set(True)
    try:
        page.run()
    finally:
        _inside_shell.reset(token)


def require_shell() -> None:
    """First line of every page script: when Streamlit ran the page file directly (module docstring), run
    the shell instead, which runs this page inside it, and end this run."""
    if _inside_shell.get():
        return
    runpy.run_path(str(PROJECT_ROOT / APP_SCRIPT), run_name="__main__")
    st.stop()


def sidebar_menu(pages: list) -> None:
    """The sidebar's page links (Streamlit's own menu is hidden: client.showSidebarNavigation)."""
    for entry, page in zip(PAGES, pages):
        st.page_link(page, label=entry.title, icon=entry.icon)


def home_links() -> None:
    """The Home page's link to every other page, with what it is for."""
    for entry in PAGES:
        if entry.script is not None:
            st.page_link(entry.script, label=entry.link_label, icon=entry.link_icon)
