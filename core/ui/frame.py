"""The frame around every page: the page config, the sidebar (menu, disclaimer, run selector), the guidance
shown when there is no run yet, and the message of the app's error boundary.

streamlit_app.py draws the frame once per script run, before the chosen page runs; the page then asks for
the chosen run with `require_run()` (or `current_run()`). The choice lives in st.session_state["run_path"],
so every page shows the same run, and in the link as ?run=<run id>, so a reload or a new tab keeps it.
"""

from __future__ import annotations

import contextvars
import sys
from pathlib import Path

import streamlit as st

from core.runs.registry import SHIPPED_RUN_PREFIX, Run, list_runs, scan_runs
from core.settings import default_models_dir, default_run_id, filter_native_stderr
from core.ui import navigation

DISCLAIMER = "Research and teaching tool — not for clinical diagnosis."
PAPER_NOTE = (
    "The paper reports **99.42% 'accuracy'**: that is the *mean of the four one-vs-rest accuracies*, "
    "which counts every true negative of every class and so always looks higher. The paper's own "
    "confusion matrix gives an **overall accuracy of 98.83%** (1859 of 1881 test films right). Paru "
    "shows both, each under its own name."
)
NO_RUN_GUIDANCE = (
    "No trained model yet in `{models_dir}`. Train one on the **Training** page, or from a terminal with "
    "`python -m core train --data DIR`, then come back here."
)

RUN_PARAM = "run"
"""The query parameter that names the chosen run in every page's link (?run=<run id>)."""

_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar("paru_current_run", default=None)


def models_dir() -> Path:
    """Where runs live: $PARU_MODELS_DIR, else the project's models/ folder (read on every call)."""
    return default_models_dir()


def available_runs() -> list[Run]:
    """Finished runs, newest first. Not cached: it reads a few small JSON files, and a run that a
    terminal or the Training page just finished must appear at once."""
    return list_runs(models_dir())


def set_page(title: str) -> None:
    """The page config of the page being shown: tab title "<title> · Paru", the lungs icon, wide layout."""
    st.set_page_config(page_title=f"{title} · Paru", page_icon=navigation.PAGE_ICON, layout="wide")


def draw_sidebar(pages: list) -> Run | None:
    """The page menu, the disclaimer and the shared run selector in the sidebar.

    Returns the chosen Run (also what `current_run()` returns during this script run), or None when there
    is no finished run (the sidebar then says so).
    """
    runs, damaged = scan_runs(models_dir())
    with st.sidebar:
        navigation.sidebar_menu(pages)
        st.divider()
        st.caption(f"⚠️ {DISCLAIMER}")
        run = run_selector(runs)
        for note in run_notes(runs, run) if run is not None else ():
            st.caption(note)
        if damaged:
            with st.expander(f"{len(damaged)} damaged run{'s' if len(damaged) > 1 else ''} not listed",
                             icon=":material/warning:"):
                for item in damaged:
                    st.caption(f"**{item.run_id}**: {item.reason}")
    _current_run.set(run)
    return run


def current_run() -> Run | None:
    """The run chosen in the sidebar in this script run (None when there is none)."""
    return _current_run.get()


def default_run(runs: list[Run]) -> Run:
    """The run a new session opens with: the configured one (core.settings.default_run_id, the shipped demo
    unless PARU_DEFAULT_RUN names another), else the first shipped demo, else the newest run."""
    configured = default_run_id()
    for run in runs:
        if run.run_id == configured:
            return run
    demos = sorted((run for run in runs if run.run_id.startswith(SHIPPED_RUN_PREFIX)), key=lambda run: run.run_id)
    return demos[0] if demos else runs[0]


def _chosen_path(runs: list[Run]) -> str:
    """The session's choice when it is still a run, else the link's ?run=, else `default_run`."""
    paths = {str(run.path) for run in runs}
    current = st.session_state.get("run_path")
    if current in paths:
        return current
    wanted = st.query_params.get(RUN_PARAM)
    by_id = {run.run_id: str(run.path) for run in runs}
    if wanted and wanted in by_id:
        return by_id[wanted]
    if wanted:
        st.session_state.run_link_missing = wanted
    return str(default_run(runs).path)


def _copy_choice(key: str) -> None:
    """on_change of a run selector: its value becomes the session's choice, which every selector then shows."""
    st.session_state.run_path = st.session_state[key]
    st.session_state.pop("run_link_missing", None)  # The person chose; the link's wish is answered.


def run_selector(runs: list[Run], key: str = "run_selector", label: str = "Model (run)") -> Run | None:
    """A selectbox of the runs, showing the session's choice; changing it changes the choice everywhere.

    The choice lives in st.session_state["run_path"] and in the page's link as ?run=<run id> (kept in the URL
    on every script run), so a reload or the same link in a new tab opens the same run; a new session opens
    `default_run`, never simply the newest. Several selectors may exist at once (the sidebar's and one on a
    page, which a phone shows without opening the sidebar), each with its own key.
    """
    if not runs:
        st.session_state.run_path = None
        st.info("No trained model yet.")
        return None
    by_path = {str(run.path): run for run in runs}
    chosen = _chosen_path(runs)
    st.session_state.run_path = chosen
    # Set before the widget exists, so every selector shows the session's choice (a widget's key is forgotten
    # when a page without it runs; run_path is not).
    st.session_state[key] = chosen
    st.selectbox(label, list(by_path), key=key, format_func=lambda path: by_path[path].describe(),
                 on_change=_copy_choice, args=(key,))
    run = by_path[chosen]
    if st.query_params.get(RUN_PARAM) != run.run_id:
        st.query_params[RUN_PARAM] = run.run_id
    return run


def run_notes(runs: list[Run], run: Run) -> list[str]:
    """Quiet notes on the choice: a link naming a run this machine does not have, a newer finished run."""
    notes = []
    missing = st.session_state.get("run_link_missing")
    if missing and missing != run.run_id:
        notes.append(f"The link asked for run {missing}, which is not on this machine; showing {run.run_id}.")
    finished = str(run.status.get("finished", ""))
    newer = [other for other in runs if str(other.status.get("finished", "")) > finished]
    if newer:
        notes.append(f"A newer run exists: {newer[0].run_id}. This page keeps {run.run_id} until you choose "
                     "another in the model selector.")
    return notes


def show_no_run_guidance() -> None:
    """What to do when no model exists yet, with a link to the Training page."""
    st.warning(NO_RUN_GUIDANCE.format(models_dir=models_dir()))
    st.page_link(navigation.TRAINING.script, label="Open the Training page", icon="🏋️")


def require_run() -> Run:
    """The run chosen in the sidebar; without one, the guidance is shown and the page stops."""
    run = current_run()
    if run is None:
        show_no_run_guidance()
        st.stop()
    return run


def show_page_error(error: Exception) -> None:
    """The error boundary's message: what happened and what to try, with the details folded away."""
    st.error(f"This page stopped on an unexpected error: {error}. Reload the page; if it happens again, "
             "the details below say where.", icon=":material/error:")
    with st.expander("Details"):
        st.exception(error)


def keep_native_logs_out_of_the_console() -> None:
    """The server's console is what the person who started the app reads, and TensorFlow's C++ start-up lines
    (oneDNN notices, a cuInit "error" on a machine without a GPU) read there as failures: they are dropped as
    on the command line (core.settings.filter_native_stderr); every other line passes. Called by
    streamlit_app.py on every script run, before a page can import TensorFlow; installed once a process. Not
    under AppTest, whose script runs inside the test process: that stderr belongs to the test runner."""
    if not st.get_option("global.appTest"):
        filter_native_stderr()


def keep_keras_session_between_reruns() -> None:
    """Stop Streamlit from calling keras.backend.clear_session() after every script run.

    Streamlit (1.x, `script_runner._clean_problem_modules`) clears the Keras session after each rerun of
    every page once Keras is imported. That runs a full garbage collection and empties TensorFlow's kernel
    cache, so the next prediction of the cached model rebuilds its kernels. Paru keeps its models in
    st.cache_resource and builds none in page code, so the clearing buys nothing. The replacement keeps
    Streamlit's other clean-up (closing pyplot figures). Called by streamlit_app.py on every script run;
    does nothing once installed, or when Streamlit no longer has that hook.
    """
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:
        return
    original = getattr(script_runner, "_clean_problem_modules", None)
    if original is None or getattr(original, "keeps_keras_session", False):
        return

    def clean_problem_modules_except_keras() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")

    clean_problem_modules_except_keras.keeps_keras_session = True
    script_runner._clean_problem_modules = clean_problem_modules_except_keras
