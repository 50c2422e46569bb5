"""Predict: classify uploaded films and show where the model looked."""

import hashlib

import streamlit as st

from core.runs import audit
from core.ui import cached, figures, frame, navigation, pacs_panel, panels, tables

navigation.require_shell()
run = frame.require_run()
run_path = str(run.path)

st.title("🔍 Predict")
st.caption(frame.DISCLAIMER)
if pacs_panel.pacs_configured() and st.radio("Films from", ("Upload", "From PACS"), horizontal=True,
                                             key="film_source") == "From PACS":
    pacs_panel.from_pacs(run_path)
    st.stop()

uploads = st.file_uploader("Chest X-ray films", type=panels.UPLOAD_TYPES, accept_multiple_files=True,
                           help="PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM. Files are read in memory only.")
controls = st.columns(2)
method_label = controls[0].radio("Explanation", list(panels.CAM_METHOD_LABELS), horizontal=True, key="cam_method")
opacity = controls[1].slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="cam_opacity")
method = panels.CAM_METHOD_LABELS[method_label]

if not uploads:
    st.info("Upload one or more films to classify them.")
    st.stop()

try:
    predictor = cached.get_predictor(run_path)
except ValueError as error:
    st.error(str(error))
    st.stop()

results = []
for upload in uploads:
    data = upload.getvalue()
    prediction = cached.predict_upload(run_path, data, upload.name)
    results.append(prediction)
    try:  # One audit line per prediction per session, outside the cache all sessions share.
        audit.record_once(st.session_state.setdefault("audit_recorded", set()), data, run.run_id, prediction,
                          frame.models_dir())
    except audit.AuditLogError as error:
        st.error(str(error))
    with st.container(border=True):
        st.markdown(f"**{prediction.file}**")
        if prediction.error:
            st.error(panels.with_file_name(prediction.file, prediction.error))
            continue
        if prediction.gate is not None and not prediction.gate.passed:
            st.warning(f"No diagnosis shown: this may not be a frontal chest radiograph. {prediction.gate.reason}")
            if not st.toggle("Show the model's raw output anyway (it means nothing for such an image)",
                             key=f"reveal-{len(results)}-{hashlib.sha256(data).hexdigest()}"):  # This film's.
                st.image(prediction.gray, caption="Uploaded image", width=320)
                continue
        film_column, cam_column, result_column = st.columns([1, 1, 1.2])
        film_column.image(prediction.gray, caption="Film", width="stretch")
        try:
            cam_column.image(panels.explain_overlay(run_path, prediction, data, method, opacity),
                             caption=method_label, width="stretch")
        except (ValueError, ImportError) as error:
            cam_column.error(f"No {method_label} for this film: {error}")
        result_column.metric("Predicted", prediction.label, f"{prediction.confidence:.1%} probability",
                             delta_color="off")
        # No mode bar: in a column this narrow it sits over the bars' labels, and a four-bar chart needs no zoom.
        result_column.plotly_chart(figures.probability_chart(prediction.probabilities),
                                   key=f"probabilities-{len(results)}", config={"displayModeBar": False})
        result_column.caption(
            f"{prediction.seconds * 1000:.0f} ms on {prediction.engine}"
            + (" (a faster engine is being prepared for this model). " if predictor.converting else ". ")
            + ("Probabilities are temperature-calibrated on the validation split."
               if prediction.calibrated else "Probabilities are the model's raw softmax (not calibrated).")
        )
        for notice in prediction.notices:
            st.info(notice)
        pacs_panel.dicom_downloads(run, prediction, data, key=f"upload-{len(results)}")

st.download_button("Download all results (CSV)", tables.predictions_csv(results), file_name="paru-predictions.csv",
                   mime="text/csv")
