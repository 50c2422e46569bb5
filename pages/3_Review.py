"""Review: the chosen run's misclassified test films, side by side with Grad-CAM, tagged by a person."""

import streamlit as st

from core.runs import review
from core.runs.artifacts import MODEL_CARD_FILE_NAME, misclassified_test_rows
from core.ui import cached, explain_panel, figures, frame, mixups, navigation, panels, tables

navigation.require_shell()
run = frame.require_run()

st.title("🗂️ Review mix-ups")
st.caption(f"{run.describe()} · {frame.DISCLAIMER}")

try:
    rows = cached.load_predictions(str(run.path), tuple(run.classes))
except (ValueError, KeyError) as error:
    st.error(f"predictions.csv of this run cannot be read: {error}")
    st.stop()
wrong = misclassified_test_rows(rows)
test_count = sum(1 for row in rows if row.get("subset") == "test")

st.subheader("Summary")
left, right = st.columns([1, 2])
left.metric("Misclassified test films", f"{len(wrong)} of {test_count}")
if wrong:
    left.dataframe(tables.mixup_counts(wrong), hide_index=True)
histogram = figures.confidence_histogram(rows)
if histogram is not None:
    right.plotly_chart(histogram)

dataset_root = mixups.films_root(run)

st.subheader("Where the model looks (Grad-CAM mass)")
regions = mixups.cam_regions_section(run, dataset_root)

if not wrong:
    st.success("No misclassified test film in this run.")
    st.stop()

options = sorted({tables.mixup_name(row) for row in wrong})
chosen = st.multiselect("Mix-ups to show (true → predicted)", options,
                        default=tables.default_mixups(options, run.classes), key=f"mixups-{run.run_id}")
cases = [row for row in wrong if tables.mixup_name(row) in chosen]
method = explain_panel.CAM_METHOD_LABELS[st.radio("Explanation", list(explain_panel.CAM_METHOD_LABELS), horizontal=True,
                                                  key="review_cam_method")]

tags, tag_problems = review.read_tags(run.path)
for problem in tag_problems:
    st.warning(problem)
st.download_button("Download tags (CSV)", review.tags_csv(tags), file_name=f"{run.run_id}-review-tags.csv",
                   mime="text/csv")
tags_file = review.tags_path(run.path)
st.caption(f"{len(cases)} films, most confident mistakes first. Tags are saved in `{tags_file}` when you press "
           + ("Save on a film, and the model card's \"Failure modes seen in review\" section is rewritten from them."
              if tags_file.parent == run.path else
              "Save on a film: this run is shipped with Paru, so your tags are kept in your own folder and its "
              "files, model card included, stay as shipped."))
st.download_button("Download model card", panels.bytes_of_file(run.path / MODEL_CARD_FILE_NAME),
                   file_name=f"{run.run_id}-model_card.md", mime="text/markdown", key="model_card_download")


def save(file: str, row: dict) -> None:
    try:
        review.save_tag(run.path, file, st.session_state[f"tag-{run.run_id}-{file}"],
                        st.session_state.get(f"note-{run.run_id}-{file}", ""),
                        label=row["label"], predicted=row["predicted"])
    except (OSError, ValueError) as error:  # A damaged or unwritable tags file: said, nothing overwritten.
        st.error(f"The tag of {file} was not saved: {error}")


try:
    cached.get_predictor(str(run.path))  # The cards need the model; a refused one is said once, here.
except ValueError as error:
    st.error(str(error))
    st.stop()


cam_shares = {film["file"]: film for film in (regions or {}).get("films", [])}
for number, row in enumerate(cases):
    mixups.case_card(run, row, number, dataset_root, tags.get(row["file"], {}), cam_shares.get(row["file"]), save,
                     method)
