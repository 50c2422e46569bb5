"""Paru — Home: what the tool does, the model in use and its headline numbers."""

import streamlit as st

from core import ui

run = ui.page_frame("Home")

st.title("🫁 Paru — chest X-ray classifier")
st.warning(f"**{ui.DISCLAIMER}** No model here is validated for patient care.", icon="⚠️")
st.markdown(
    "Paru classifies a frontal chest radiograph as **Normal, Pneumonia, Cardiomegaly or Pneumothorax** "
    "with MobileNetV2 transfer learning, says how sure it is, and shows where it looked (Grad-CAM). "
    "Train models on your own data, read their evaluation, and review every mix-up."
)

if run is None:
    ui.show_no_run_guidance()
else:
    st.subheader("Model in use")
    st.write(run.describe())
    st.caption(f"Run folder: `{run.path}`")
    st.subheader("Headline numbers on the held-out test set")
    ui.show_headline_metrics(run.metrics)

st.info(ui.PAPER_NOTE, icon="ℹ️")

st.subheader("Go to")
st.page_link("pages/1_Predict.py", label="Predict — classify your films, with Grad-CAM", icon="🔍")
st.page_link("pages/2_Evaluation.py", label="Evaluation — curves, confusion matrix, ROC, calibration", icon="📊")
st.page_link("pages/3_Review.py", label="Review — misclassified test films, tag them", icon="🗂️")
st.page_link("pages/4_Training.py", label="Training — train a new model on a dataset folder", icon="🏋️")
st.page_link("pages/5_Audit.py", label="Audit log — every prediction the app made, filtered and downloadable",
             icon="🧾")
