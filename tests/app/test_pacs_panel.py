"""Predict's "From PACS" source against a real Orthanc (loopback): shown only with PARU_DICOMWEB_URL, search
by patient ID, pick the study, classify its frontal film, store the SR and SC back; and the DICOM result
downloads for an uploaded DICOM film. No patient identifier reaches the audit log."""

from __future__ import annotations

import io

from app.conftest import open_page, texts
from core.runs import audit
from core.ui import navigation
from pacs_fixture import dicom_film, synthetic_film

PREDICT = navigation.PREDICT.script
PATIENT_ID, PATIENT_NAME = "PARU-APP-77", "Page^Patient"


def test_no_pacs_source_without_a_configured_url(with_run, monkeypatch):
    monkeypatch.delenv("PARU_DICOMWEB_URL", raising=False)
    at = open_page(PREDICT)
    assert not [radio for radio in at.radio if radio.key == "film_source"]


def test_from_pacs_finds_classifies_and_stores(with_run, orthanc, monkeypatch):
    film = dicom_film(synthetic_film(256, seed=11), patient_id=PATIENT_ID, patient_name=PATIENT_NAME,
                      accession="ACC-APP-1")
    lateral = dicom_film(synthetic_film(256, seed=12), view="LL", patient_id=PATIENT_ID, accession="ACC-APP-1",
                         study_uid=film.StudyInstanceUID, instance_number=2)
    orthanc.upload(film)
    orthanc.upload(lateral)
    monkeypatch.setenv("PARU_DICOMWEB_URL", orthanc.dicomweb)

    at = open_page(PREDICT)
    at.radio(key="film_source").set_value("From PACS").run()
    at.text_input(key="pacs_patient").input(PATIENT_ID)
    next(button for button in at.button if button.label == "Search the PACS").click().run()
    assert not at.exception, at.exception
    assert PATIENT_ID in at.selectbox(key="pacs_study").value  # shown as the PACS gives it
    assert "lateral view" in texts(at.caption)
    at.checkbox(key="pacs_store").check().run()
    at.button(key="pacs_classify").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert any(metric.label == "Predicted" for metric in at.metric) or at.warning
    assert "Stored in the PACS" in texts(at.success)
    assert len(orthanc.instances_of(str(film.StudyInstanceUID))) == 4  # two films, the SR and the SC

    logged = (with_run.path.parent / audit.AUDIT_FILE_NAME).read_text()
    assert with_run.run_id in logged  # the prediction is in the audit log ...
    assert PATIENT_ID not in logged and "Page^Patient" not in logged  # ... without the patient's identifiers


def test_an_uploaded_dicom_film_offers_sr_sc_and_fhir(with_run, monkeypatch):
    monkeypatch.delenv("PARU_DICOMWEB_URL", raising=False)
    buffer = io.BytesIO()
    dicom_film(synthetic_film(256, seed=13)).save_as(buffer, enforce_file_format=True)
    at = open_page(PREDICT)
    at.file_uploader[0].upload("film.dcm", buffer.getvalue(), "application/dicom").run()
    assert not at.exception, at.exception
    if at.toggle:  # The gate refused the synthetic film: reveal the output, which then offers the files.
        at.toggle[0].set_value(True).run()
    labels = {button.label for button in at.get("download_button")}
    assert {"Report (DICOM SR)", "Overlay (DICOM SC)", "FHIR Observation"} <= labels
