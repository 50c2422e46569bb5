"""Review: the chosen run's misclassified test films, side by side with Grad-CAM, tagged by a person."""


import streamlit as st

from core import ui
from core.runs import review

run = ui.require_run(ui.page_frame("Review"))
run_path = str(run.path)

st.title("🗂️ Review mix-ups")
st.caption(f"{run.describe()} · {ui.DISCLAIMER}")

try:
    rows = ui.load_predictions(run_path, tuple(run.classes))
except (ValueError, KeyError) as error:
    st.error(f"predictions.csv of this run cannot be read: {error}")
    st.stop()
wrong = ui.misclassified(rows)
test_count = sum(1 for row in rows if row.get("subset") == "test")

st.subheader("Summary")
left, right = st.columns([1, 2])
left.metric("Misclassified test films", f"{len(wrong)} of {test_count}")
if wrong:
    left.dataframe(ui.mixup_counts(wrong), hide_index=True)
histogram = ui.confidence_histogram(rows)
if histogram is not None:
    right.plotly_chart(histogram)

# Where the films are: the recorded dataset folder, or one the user types when it is not on this machine.
dataset_root = run.dataset_root()
st.session_state.review_root = st.session_state.get("review_root", "")
if dataset_root is None:
    recorded = (run.data_report or {}).get("root", "?")
    st.warning(f"The run's dataset folder `{recorded}` is not on this machine. Type where the films are.")
    typed = st.text_input("Dataset folder", key="review_root")
    try:
        dataset_root = ui.confined_data_folder(typed) if typed else None
    except ValueError as error:
        dataset_root = None
        st.error(str(error))
    if dataset_root is not None and not dataset_root.is_dir():
        st.error(f"{typed} is not a folder.")
        dataset_root = None

st.subheader("Where the model looks (Grad-CAM mass)")
regions = review.load_cam_regions(run.path)
if regions is None:
    st.caption(f"Explains up to {review.CAM_MAX_FILMS} test films (the misclassified ones and as many right "
               "ones) and measures how much of each Grad-CAM lies in the central lung fields and how much on "
               "the border and corners, where labels, side markers and devices sit. Computed once, saved in "
               f"`{review.CAM_REGIONS_FILE_NAME}` in the run folder.")
    if st.button("Analyse Grad-CAM regions", key="cam_regions_go", disabled=dataset_root is None):
        try:
            with st.spinner("Explaining test films…"):
                regions = review.compute_cam_regions(run, dataset_root, model=ui.get_predictor(run_path).model)
        except ValueError as error:
            st.error(str(error))
if regions is not None:
    ui.show_cam_regions(regions)

if not wrong:
    st.success("No misclassified test film in this run.")
    st.stop()

options = sorted({ui.mixup_name(row) for row in wrong})
chosen = st.multiselect("Mix-ups to show (true → predicted)", options,
                        default=ui.default_mixups(options, run.classes), key=f"mixups-{run.run_id}")
cases = [row for row in wrong if ui.mixup_name(row) in chosen]

tags = review.load_tags(run.path)
st.download_button("Download tags (CSV)", review.tags_csv(tags), file_name=f"{run.run_id}-review-tags.csv",
                   mime="text/csv")
st.caption(f"{len(cases)} films, most confident mistakes first. Tags are saved in "
           f"`{run.path / review.TAGS_FILE_NAME}` as you change them, and the model card's \"Failure modes "
           "seen in review\" section is rewritten from them.")
st.download_button("Download model card", ui.bytes_of_file(run.path / "model_card.md"),
                   file_name=f"{run.run_id}-model_card.md", mime="text/markdown", key="model_card_download")


def save(file: str, row: dict) -> None:
    review.save_tag(run.path, file, st.session_state[f"tag-{run.run_id}-{file}"],
                    st.session_state.get(f"note-{run.run_id}-{file}", ""),
                    label=row["label"], predicted=row["predicted"])


cam_shares = {film["file"]: film for film in (regions or {}).get("films", [])}
for number, row in enumerate(cases):
    file = row["file"]
    entry = tags.get(file, {})
    with st.container(border=True):
        st.markdown(f"**{file}** — true **{row['label']}**, predicted **{row['predicted']}** "
                    f"({row['confidence']:.1%})")
        film_column, cam_column, info_column = st.columns([1, 1, 1.2])
        film_path = ui.resolve_film_path(dataset_root, file) if dataset_root else None
        if film_path is None:
            film_column.info("Film not found on this machine.")
        else:
            case = ui.review_case(run_path, str(film_path))
            if case.get("error"):
                film_column.error(case["error"])
            else:
                film_column.image(case["gray"], caption="Film", width="stretch")
                cam_column.image(case["overlay"], caption="Grad-CAM", width="stretch")
        info_column.plotly_chart(ui.probability_chart(row["probabilities"], height=180), key=f"probs-{number}",
                                 config={"displayModeBar": False})
        if file in cam_shares:
            shares = cam_shares[file]
            info_column.caption(f"Grad-CAM mass: {ui.pct(shares['central'])} central, {ui.pct(shares['border'])} "
                                f"border band ({ui.pct(shares['corners'])} corners)"
                                + (" — mostly outside the lung fields" if shares["border"] > review.CAM_FLAG_SHARE
                                   else ""))
        tag_key, note_key = f"tag-{run.run_id}-{file}", f"note-{run.run_id}-{file}"
        st.session_state[tag_key] = st.session_state.get(tag_key, entry.get("tag", "untagged"))
        st.session_state[note_key] = st.session_state.get(note_key, entry.get("note", ""))
        info_column.selectbox("Tag", review.TAGS, key=tag_key, on_change=save, args=(file, row))
        info_column.text_input("Note", key=note_key, on_change=save, args=(file, row))
