"""Predict's PACS source and DICOM result downloads.

`pacs_configured()` says whether the page offers "From PACS" ($PARU_DICOMWEB_URL set; credentials only from
the environment, never from the page). `from_pacs(run_path)` draws the search (patient ID, accession,
study date, modality CR/DX), the study picker, the list of its objects with what is skipped and why, the
classification of the frontal films with their overlays, downloads and an optional store back (STOW-RS).
`dicom_downloads(...)` offers the SR, the Secondary Capture and the FHIR Observation of any DICOM film.

Patient identifiers are shown as the PACS gives them; the audit log records films by SOP Instance UID and
download names carry no identifier.
"""

from __future__ import annotations

import datetime
import io
import json
from urllib.parse import urlsplit

import streamlit as st

from core.hospital import dicomweb, fhir
from core.hospital.pacs import dataset_bytes, result_datasets
from core.hospital.results import overlay_picture
from core.runs import audit
from core.settings import default_models_dir, dicomweb_url
from core.ui import cached, figures

ANY_MODALITY = "CR or DX"


def pacs_configured() -> bool:
    return dicomweb_url() is not None


@st.cache_resource(show_spinner=False)
def _client(url: str):
    return dicomweb.connect(url)


def from_pacs(run_path: str) -> None:
    """The "From PACS" source: search, pick a study, classify its frontal films."""
    url = dicomweb_url()
    parts = urlsplit(url)
    st.caption(f"PACS: {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path} "
               "(DICOMweb)")
    with st.form("pacs_search"):
        columns = st.columns(4)
        patient = columns[0].text_input("Patient ID", key="pacs_patient")
        accession = columns[1].text_input("Accession number", key="pacs_accession")
        dates = columns[2].date_input("Study date", value=(), key="pacs_dates",
                                      min_value=datetime.date(1980, 1, 1), help="one day or a range; empty for any")
        modality = columns[3].selectbox("Modality", (ANY_MODALITY, *dicomweb.MODALITIES), key="pacs_modality")
        searched = st.form_submit_button("Search the PACS")
    if searched:
        try:
            st.session_state["pacs_studies"] = dicomweb.search_studies(
                _client(url), patient_id=patient.strip() or None, accession=accession.strip() or None,
                study_date=_date_range(dates), modality=None if modality == ANY_MODALITY else modality)
        except Exception as error:  # The PACS or the network; the query's identifiers are not repeated.
            st.error(f"The PACS did not answer the search ({type(error).__name__}). Check PARU_DICOMWEB_URL and "
                     "the credentials in the environment.")
            return
    studies = st.session_state.get("pacs_studies")
    if studies is None:
        st.info("Search the PACS by patient ID, accession number, study date or modality.")
        return
    if not studies:
        st.warning("No study matches.")
        return
    labels = {f"{_study_label(row)} · …{str(row['StudyInstanceUID'])[-6:]}": row["StudyInstanceUID"]
              for row in studies}
    study_uid = labels[st.selectbox(f"Study ({len(studies)} found)", list(labels), key="pacs_study")]
    try:
        films = dicomweb.study_films(_client(url), study_uid)
    except Exception as error:
        st.error(f"The PACS did not list the study's films ({type(error).__name__}).")
        return
    frontal = [film for film in films if film.skip_reason is None]
    for film in films:
        if film.skip_reason:
            st.caption(f"Skipped {film.sop_uid}: {film.skip_reason}")
    if not frontal:
        st.warning("This study has no frontal chest film to classify.")
        return
    store = st.checkbox("Store the results in the PACS (structured report and Grad-CAM secondary capture)",
                        key="pacs_store")
    if not st.button(f"Classify {len(frontal)} frontal film{'s' if len(frontal) > 1 else ''}", key="pacs_classify"):
        return
    predictor = cached.get_predictor(run_path)
    for number, film in enumerate(frontal):
        with st.container(border=True):
            _classify_one(run_path, predictor, url, film, store, number)


def _classify_one(run_path: str, predictor, url: str, film, store: bool, number: int) -> None:
    st.markdown(f"**{film.modality} {film.view or ''} · {film.sop_uid}**")
    try:
        data, source = dicomweb.retrieve(_client(url), film)
    except Exception as error:
        st.error(f"The film could not be fetched from the PACS ({type(error).__name__}).")
        return
    prediction = predictor.predict(data, name=film.sop_uid, with_cam=True, display=True,
                                   display_max_side=cached.DISPLAY_MAX_SIDE)
    try:
        audit.record(data, predictor.run.run_id, prediction, default_models_dir())
    except (OSError, RuntimeError) as error:  # As for uploads, an unwritable log does not stop a prediction.
        st.caption(f"Not recorded in the audit log: {error}")
    if prediction.error:
        st.error(prediction.error)
        return
    film_column, result_column = st.columns([1, 1.2])
    film_column.image(overlay_picture(prediction), caption="Grad-CAM (as stored in the PACS)", width="stretch")
    if prediction.gate is not None and not prediction.gate.passed:
        result_column.warning(f"No diagnosis shown: {prediction.gate.reason}")
    else:
        result_column.metric("Predicted", prediction.label, f"{prediction.confidence:.1%} probability",
                             delta_color="off")
        result_column.plotly_chart(figures.probability_chart(prediction.probabilities),
                                   key=f"pacs-probabilities-{number}", config={"displayModeBar": False})
    report, capture = result_datasets(source, prediction, predictor.run)
    if store:
        try:
            dicomweb.store(_client(url), [report, capture])
            result_column.success("Stored in the PACS: structured report and secondary capture.")
        except Exception as error:
            result_column.error(f"The PACS refused the results ({type(error).__name__}: {error}).")
    _downloads(result_column, report, capture, prediction, predictor.run, str(source.StudyInstanceUID),
               f"pacs-{number}")


def dicom_downloads(run, prediction, data: bytes, key: str, raw: bool = False) -> None:
    """SR, Secondary Capture and FHIR downloads for a film that is DICOM (nothing for other formats).

    `raw`: the user asked for a refused film's raw output, which the files then carry, marked as such."""
    source = _dicom_or_none(data)
    if source is None or prediction.error or prediction.cam is None:
        return
    try:
        report, capture = result_datasets(source, prediction, run, raw=raw)
    except Exception as error:  # A header highdicom cannot build on (for example no Study Instance UID).
        st.caption(f"No DICOM results for this file: {error}")
        return
    _downloads(st, report, capture, prediction, run, str(source.get("StudyInstanceUID", "")), key, raw)


def _downloads(where, report, capture, prediction, run, study_uid: str, key: str, raw: bool = False) -> None:
    columns = where.columns(3)
    columns[0].download_button("Report (DICOM SR)", dataset_bytes(report), file_name=f"paru-{key}-sr.dcm",
                               mime="application/dicom", key=f"{key}-sr")
    columns[1].download_button("Overlay (DICOM SC)", dataset_bytes(capture), file_name=f"paru-{key}-sc.dcm",
                               mime="application/dicom", key=f"{key}-sc")
    observation = fhir.observation(prediction, run, raw=raw, study_uid=study_uid or None,
                                   report_uid=str(report.SOPInstanceUID))
    columns[2].download_button("FHIR Observation", json.dumps(observation, indent=2),
                               file_name=f"paru-{key}-observation.json", mime="application/fhir+json",
                               key=f"{key}-fhir")


def _dicom_or_none(data: bytes):
    if data[128:132] != b"DICM":
        return None
    import pydicom

    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception:
        return None


def _date_range(dates) -> str | None:
    if not dates:
        return None
    days = [day.strftime("%Y%m%d") for day in (dates if isinstance(dates, (list, tuple)) else [dates])]
    return days[0] if len(days) == 1 else f"{days[0]}-{days[-1]}"


def _study_label(row: dict) -> str:
    date = str(row["StudyDate"])
    when = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date or "no date"
    return (f"{when} · {row['StudyDescription'] or 'no description'} · {row['ModalitiesInStudy'] or '?'} · "
            f"patient {row['PatientID'] or '?'} · accession {row['AccessionNumber'] or '?'}")
