"""The Review page's sections: where the run's films are, the Grad-CAM region analysis, and one card per
misclassified film with its tag and note. A film is read from the dataset folder, else from the review films
the run carries (core.runs.review_films).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core.data.paths import confined_data_folder
from core.explain import regions as cam_regions
from core.explain.methods import DEFAULT_METHOD, METHOD_LABELS
from core.explain.overlay import overlay
from core.runs.review import TAGS
from core.runs.review_films import read_review_manifest, review_films_dir, run_film
from core.ui import cached, explain_panel, figures, tables


def films_root(run) -> Path | None:
    """The run's dataset folder, or the one the user types (confined to the data roots) when the recorded
    one is not on this machine; None while there is none."""
    dataset_root = run.dataset_root()
    st.session_state.review_root = st.session_state.get("review_root", "")
    if dataset_root is not None:
        return dataset_root
    recorded = (run.data_report or {}).get("root", "?")
    packed = read_review_manifest(run.path)
    if packed is not None:
        st.info(f"The run's dataset folder `{recorded}` is not on this machine: the {len(packed['films'])} review "
                f"films shipped with the run are shown (downsized to {packed.get('max_side')} px). Type where "
                "the dataset is to see the full-size films.")
    else:
        st.warning(f"The run's dataset folder `{recorded}` is not on this machine. Type where the films are.")
    typed = st.text_input("Dataset folder", key="review_root")
    try:
        dataset_root = confined_data_folder(typed) if typed else None
    except ValueError as error:
        st.error(str(error))
        return None
    if dataset_root is not None and not dataset_root.is_dir():
        st.error(f"{typed} is not a folder.")
        return None
    return dataset_root


def cam_regions_section(run, dataset_root: Path | None) -> dict | None:
    """The saved Grad-CAM region analysis, or a button that computes it once; returns the analysis or None."""
    regions = cam_regions.load_cam_regions(run.path)
    slot = st.empty()  # The caption and button, cleared as soon as the analysis exists.
    offer = slot.container()
    if regions is None:
        offer.caption(f"Explains up to {cam_regions.CAM_MAX_FILMS} test films (the misclassified ones and as many "
                   "right ones) and measures how much of each Grad-CAM lies in the central lung fields and how "
                   "much on the border and corners, where labels, side markers and devices sit. Computed once and "
                   f"saved as `{cam_regions.cam_regions_path(run.path)}`.")
        no_films = dataset_root is None and read_review_manifest(run.path) is None
        if offer.button("Analyse Grad-CAM regions", key="cam_regions_go", disabled=no_films):
            try:
                with st.spinner("Explaining test films…"):
                    regions = cam_regions.compute_cam_regions(run, dataset_root,
                                                              model=cached.get_predictor(str(run.path)).model)
            except ValueError as error:
                st.error(str(error))
    if regions is not None:
        slot.empty()
        show_cam_regions(regions)
    return regions


def show_cam_regions(regions: dict) -> None:
    """Draw a cam_regions.json analysis: mean shares for right vs wrong answers, and the flagged films."""
    st.dataframe(tables.cam_region_table(regions), hide_index=True)
    flagged = (regions.get("summary") or {}).get("flagged") or []
    share = regions.get("flag_share", 0.7)
    if flagged:
        st.warning(f"{len(flagged)} of {regions.get('n')} films have more than {share:.0%} of their Grad-CAM mass "
                   "on the border band, outside the lung fields: check whether the model reads labels, markers "
                   "or devices there.")
        st.dataframe(tables.flagged_films_table(flagged), hide_index=True)
    else:
        st.success(f"No film has more than {share:.0%} of its Grad-CAM mass on the border band.")
    missing = regions.get("missing") or []
    st.caption(f"{regions.get('n')} test films explained on {regions.get('computed', '?')}"
               + (f"; {len(missing)} not found" if missing else "") + ".")


def case_card(run, row: dict, number: int, dataset_root: Path | None, tag: dict, shares: dict | None,
              save: Callable[[str, dict], None], method: str = DEFAULT_METHOD) -> None:
    """One misclassified film: the film and its map by `method` (core.explain.methods, of the predicted class)
    with the run's verdict on its maps, the probabilities, its Grad-CAM mass shares, and the tag form (keys
    tag-<run>-<file>, note-<run>-<file>, save-<run>-<file>; `save(file, row)` on Save)."""
    file = row["file"]
    percent = tables.percent
    with st.container(border=True):
        st.markdown(f"**{file}** — true **{row['label']}**, predicted **{row['predicted']}** "
                    f"({row['confidence']:.1%})")
        film_column, cam_column, info_column = st.columns([1, 1, 1.2])
        film_path = run_film(run.path, dataset_root, file)
        if film_path is None:
            film_column.info("Film not found on this machine.")
        else:
            case = cached.review_case(str(run.path), str(film_path))
            if case.get("error"):
                film_column.error(case["error"])
            else:
                film_column.image(case["gray"], caption="Film", width="stretch")
                if film_path.is_relative_to(review_films_dir(run.path).resolve()):
                    attribution = (read_review_manifest(run.path) or {}).get("attribution")
                    film_column.caption("Downsized copy shipped with the run" + (f". {attribution}" if attribution
                                                                                 else ""))
                try:
                    picture = case["overlay"] if method == DEFAULT_METHOD else overlay(
                        case["gray"], cached.cam_for_method(str(run.path), film_path.read_bytes(), row["predicted"],
                                                            method))
                    cam_column.image(picture, caption=METHOD_LABELS[method], width="stretch")
                except (ValueError, ImportError, OSError) as error:
                    cam_column.error(f"No {METHOD_LABELS[method]} for this film: {error}")
                explain_panel.verdict_note(cam_column, str(run.path), method)
        info_column.plotly_chart(figures.probability_chart(row["probabilities"], height=180), key=f"probs-{number}",
                                 config={"displayModeBar": False})
        if shares:
            info_column.caption(f"Grad-CAM mass: {percent(shares['central'])} central, {percent(shares['border'])} "
                                f"border band ({percent(shares['corners'])} corners)"
                                + (" — mostly outside the lung fields"
                                   if shares["border"] > cam_regions.CAM_FLAG_SHARE else ""))
        tag_form(run, row, tag, save, info_column)


def tag_form(run, row: dict, tag: dict, save: Callable[[str, dict], None], column) -> None:
    """The tag and note of one film in one form, saved together by its Save button: a note typed and not
    saved says so by its button (a browser sends a text box only on Enter or blur, so an autosaved note was
    lost on a reload), and what is saved is said under it."""
    file = row["file"]
    tag_key, note_key = f"tag-{run.run_id}-{file}", f"note-{run.run_id}-{file}"
    st.session_state[tag_key] = st.session_state.get(tag_key, tag.get("tag", "untagged"))
    st.session_state[note_key] = st.session_state.get(note_key, tag.get("note", ""))
    with column.form(f"review-{run.run_id}-{file}", border=False):
        st.selectbox("Tag", TAGS, key=tag_key)
        st.text_input("Note", key=note_key)
        st.form_submit_button("Save tag and note", key=f"save-{run.run_id}-{file}", on_click=save, args=(file, row))
    if tag:
        note = f": “{tag['note']}”" if tag.get("note") else ""
        column.caption(f"Saved: {tag.get('tag', 'untagged')}{note}" + (f" ({tag['updated']})" if tag.get("updated")
                                                                      else ""))
    else:
        column.caption("Not saved yet: choose a tag, write a note, then Save.")
