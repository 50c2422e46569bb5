"""Predict: classify uploaded or example films, say how sure the model is and which model it is, and show where
it looked. The sections are drawn by core.ui.predict_panel."""

import streamlit as st

from core.serving import results
from core.ui import cached, explain_panel, frame, navigation, pacs_panel, predict_panel

navigation.require_shell()
run = frame.require_run()

st.title("🔍 Predict")
st.caption(frame.DISCLAIMER)
context = predict_panel.model_box(run)
if pacs_panel.pacs_configured() and st.radio("Films from", ("Upload", "From PACS"), horizontal=True,
                                             key="film_source") == "From PACS":
    pacs_panel.from_pacs(str(run.path))
    st.stop()

films = [(name, data, None) for name, data in predict_panel.uploaded_films()]
example = predict_panel.examples_gallery(run)
if example is not None:
    films.append(example)
controls = st.columns(2)
method_label = controls[0].radio("Explanation", list(explain_panel.CAM_METHOD_LABELS), horizontal=True,
                                 key="cam_method")
opacity = controls[1].slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="cam_opacity")

if not films:
    st.info("Upload one or more films, or click an example, to classify them.")
    st.stop()

try:
    predictor = cached.get_predictor(str(run.path))
except ValueError as error:
    st.error(str(error))
    st.stop()

rows, seen = [], set()
for name, data, entry in films:
    if data in seen:  # The same film twice: one card, one audit line.
        st.caption(predict_panel.plain(f"{name}: the same film as one above, shown once."))
        continue
    seen.add(data)
    rows.append(predict_panel.film_card(run, predictor, context, name, data, method_label, opacity, entry))

st.download_button("Download all results (CSV)", results.results_csv(rows), file_name="paru-predictions.csv",
                   mime="text/csv", help="One row per film: time, run, SHA-256, engine, the gate's verdict, the "
                                         "answer and its set (none for a refused film), and the model's context.")
