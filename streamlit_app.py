"""Paru's shell: the shared setup of every page, and the Home page.

Runs on every script run: keeps TensorFlow's start-up lines out of the console and the Keras session
between reruns, picks the page with st.navigation over the one page list (core.ui.navigation), sets the
page config once, draws the sidebar, and runs the page inside one error boundary. Pages keep their URLs
(/Predict, /Evaluation, /Review, /Training, /Audit).
"""

import streamlit as st

from core.ui import frame, navigation, panels


def home() -> None:
    """What the tool does, the model in use and its headline numbers."""
    run = frame.current_run()
    st.title("🫁 Paru — chest X-ray classifier")
    st.warning(f"**{frame.DISCLAIMER}** No model here is validated for patient care.", icon="⚠️")
    st.markdown(
        "Paru classifies a frontal chest radiograph as **Normal, Pneumonia, Cardiomegaly or Pneumothorax** "
        "with MobileNetV2 transfer learning, says how sure it is, and shows where it looked (Grad-CAM). "
        "Train models on your own data, read their evaluation, and review every mix-up."
    )
    if run is None:
        frame.show_no_run_guidance()
    else:
        st.subheader("Model in use")
        st.write(run.describe())
        st.caption(f"Run folder: `{run.path}`")
        st.subheader("Headline numbers on the held-out test set")
        panels.show_headline_metrics(run.metrics)
    st.subheader("Which demonstration run to use")
    st.markdown(
        "Paru ships two demonstration runs (choose one in the sidebar); each carries its misclassified test films, "
        "so Review works without a dataset.\n"
        "- **`demo-nih-cxr4`** knows the four classes, from 162 adult NIH training films. It is **weak** (see its "
        "Evaluation page): use it to show the four-class workflow, not to judge a film.\n"
        "- **`demo-pediatric-pneumonia`** knows Normal and Pneumonia, from 562 paediatric training films, and is "
        "usually right on its test films: use it to review Normal/Pneumonia mix-ups with clinicians."
    )
    st.info(frame.PAPER_NOTE, icon="ℹ️")
    st.subheader("Go to")
    navigation.home_links()


frame.keep_native_logs_out_of_the_console()
frame.keep_keras_session_between_reruns()
pages = navigation.streamlit_pages(home)
page = st.navigation(pages, position="hidden")
frame.set_page(page.title)
frame.draw_sidebar(pages)
try:
    navigation.run_page(page)
except Exception as error:  # The one boundary: a page's unexpected error is shown, not a blank page.
    frame.show_page_error(error)
