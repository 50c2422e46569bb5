"""A round trip with a real PACS (Orthanc on loopback): find a study, classify its frontal film, store the
SR and the Secondary Capture back, read them back and check what they say. Runs on the session's tiny run
(fast); tests/system/test_pacs.py does the same with the shipped demo run and real films."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from core.hospital import dicomweb, fhir
from core.hospital.pacs import classify_study, find_study_uids
from core.hospital.results import device_uid, overlay_picture, prediction_set_of, read_report
from pacs_fixture import dicom_film, synthetic_film

pydicom = pytest.importorskip("pydicom")

PATIENT_ID, PATIENT_NAME, ACCESSION = "PARU-PRIV-4711", "Secret^Person", "ACC-PIPE-1"


def non_image(study_uid: str):
    """A Basic Text SR from another system: an object of the study without pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.StudyInstanceUID, report.SeriesInstanceUID = study_uid, generate_uid()
    report.PatientID, report.PatientName, report.AccessionNumber = PATIENT_ID, PATIENT_NAME, ACCESSION
    report.Modality, report.SeriesNumber, report.InstanceNumber = "SR", 2, 1
    report.ValueType, report.Manufacturer = "CONTAINER", "Other Vendor"
    return report


@pytest.fixture(scope="module")
def study(orthanc):
    """A study of three objects: a PA film (JPEG-LS compressed, as PACS exports often are), a lateral film
    and a text report."""
    frontal = dicom_film(synthetic_film(256, seed=5), patient_id=PATIENT_ID, patient_name=PATIENT_NAME,
                         accession=ACCESSION)
    frontal.compress("1.2.840.10008.1.2.4.80")
    lateral = dicom_film(synthetic_film(256, seed=6), view="LL", patient_id=PATIENT_ID,
                         patient_name=PATIENT_NAME, accession=ACCESSION, study_uid=frontal.StudyInstanceUID,
                         series_uid=frontal.SeriesInstanceUID, instance_number=2)
    for dataset in (frontal, lateral, non_image(frontal.StudyInstanceUID)):
        orthanc.upload(dataset)
    return frontal


def test_search_finds_the_study_by_patient_accession_date_and_modality(orthanc, study):
    client = dicomweb.connect(orthanc.dicomweb)
    uid = str(study.StudyInstanceUID)
    assert find_study_uids(client, patient=PATIENT_ID) == [uid]
    assert find_study_uids(client, accession=ACCESSION) == [uid]
    assert find_study_uids(client, study=uid) == [uid]
    rows = dicomweb.search_studies(client, study_date="20240101-20240201", modality="DX")
    assert uid in [row["StudyInstanceUID"] for row in rows]
    assert dicomweb.search_studies(client, patient_id="NOBODY") == []
    with pytest.raises(ValueError, match="projection radiographs"):
        dicomweb.search_studies(client, modality="CT")


def test_round_trip_classifies_the_frontal_film_and_stores_sr_and_sc(orthanc, study, keras_predictor):
    client = dicomweb.connect(orthanc.dicomweb)
    uid = str(study.StudyInstanceUID)
    outcomes = list(classify_study(keras_predictor, client, uid, store=True))
    assert len(outcomes) == 3
    (classified, prediction, source), lateral, report = outcomes  # by series and instance number
    assert "lateral view" in lateral[0]["skipped"] and "not an image" in report[0]["skipped"]
    assert "gate" in classified and classified["file"] == str(study.SOPInstanceUID), classified
    # The gate is honoured (tests/unit/test_hospital_results.py checks both sides on fixed predictions).
    answered = _answered(prediction)
    if answered:
        assert classified["label"] in keras_predictor.class_names
        assert set(classified["probabilities"]) == set(keras_predictor.class_names)
    else:
        assert classified["label"] is None and "probabilities" not in classified
        assert set(classified["raw"]["probabilities"]) == set(keras_predictor.class_names)
    assert str(source.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80"  # fetched as stored
    # No patient identifier in what Paru prints.
    assert PATIENT_ID not in json.dumps([outcome[0] for outcome in outcomes])

    stored = classified["stored"]
    sr = client.retrieve_instance(uid, _series_of(orthanc, uid, stored["sr"]), stored["sr"])
    content = read_report(sr)
    if answered:
        assert content["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-6)
        assert content["label"] == prediction.label and content["prediction_set"] == prediction_set_of(prediction)
    else:
        assert content["probabilities"] == content["raw"] == {} and content["label"] is None
    assert content["run_id"] == keras_predictor.run.run_id
    assert content["device_uid"] == device_uid(keras_predictor.run)
    assert content["source_instance"] == str(study.SOPInstanceUID)
    assert content["gate_passed"] == (prediction.gate.passed if prediction.gate else None)
    assert "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription and sr.PatientID == PATIENT_ID

    sc = client.retrieve_instance(uid, _series_of(orthanc, uid, stored["sc"]), stored["sc"])
    np.testing.assert_array_equal(sc.pixel_array, overlay_picture(prediction))
    assert sc.StudyInstanceUID == uid and "NOT FOR DIAGNOSTIC USE" in sc.SeriesDescription
    # The results are in the study now, and a second pass skips them as Paru's own.
    again = [outcome[0] for outcome in classify_study(keras_predictor, client, uid)]
    assert sum("Paru wrote" in out.get("skipped", "") for out in again) == 2


def test_fhir_observation_mirrors_the_prediction(keras_predictor, study):
    data = io.BytesIO()
    study.save_as(data, enforce_file_format=True)
    prediction = keras_predictor.predict(data.getvalue(), name="film")
    resource = fhir.observation(prediction, keras_predictor.run, study_uid=str(study.StudyInstanceUID))
    assert resource["resourceType"] == "Observation" and resource["status"] == "preliminary"
    assert resource["code"]["coding"][0]["code"] == "121071"
    probabilities = {c["code"]["text"]: c["valueQuantity"]["value"] for c in resource["component"]
                     if "valueQuantity" in c}
    if _answered(prediction):
        assert resource["valueCodeableConcept"]["text"] == prediction.label
        assert probabilities == {f"Probability of {k}": pytest.approx(v, abs=1e-6)
                                 for k, v in prediction.probabilities.items()}
    else:  # A refused film: the gate's verdict only.
        assert "valueCodeableConcept" not in resource and probabilities == {}
        assert prediction.gate.reason in resource["dataAbsentReason"]["text"]
    assert device_uid(keras_predictor.run) in resource["device"]["identifier"]["value"]
    assert PATIENT_ID not in json.dumps(resource) and PATIENT_NAME not in json.dumps(resource)


def _answered(prediction) -> bool:
    """Whether the gate let the film through (the synthetic films may or may not pass the tiny run's gate)."""
    return prediction.gate is None or prediction.gate.passed


def _series_of(orthanc, study_uid: str, sop_uid: str) -> str:
    for instance in orthanc.instances_of(study_uid):
        if instance["MainDicomTags"]["SOPInstanceUID"] == sop_uid:
            import requests

            series = requests.get(f"{orthanc.url}/instances/{instance['ID']}/series", timeout=30).json()
            return series["MainDicomTags"]["SeriesInstanceUID"]
    raise AssertionError(f"{sop_uid} is not in the PACS")


def test_cli_pacs_prints_one_predict_shaped_object_per_film_and_stores(orthanc, tiny_run, keras_predictor,
                                                                         cli_predictor, capsys):
    from core.cli import main

    # The session's loaded predictor of the same run (tests/system/test_pacs.py lets the CLI load its own).
    accession = "ACC-CLI-2"
    film = dicom_film(synthetic_film(256, seed=9), patient_id=PATIENT_ID, patient_name=PATIENT_NAME,
                      accession=accession)
    orthanc.upload(film)
    argv = ["pacs", "--url", orthanc.dicomweb, "--accession", accession, "--model", str(tiny_run), "--json",
            "--engine", "keras", "--store"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    lines = [json.loads(line) for line in printed.splitlines()]
    assert len(lines) == 1 and lines[0]["file"] == str(film.SOPInstanceUID)
    assert {"label", "confidence", "calibrated", "notices", "gate", "run", "model"} <= set(lines[0])  # as predict's
    assert lines[0]["run"] == keras_predictor.run.run_id
    assert ("probabilities" in lines[0]) == lines[0]["gate"]["passed"] != ("raw" in lines[0])
    assert PATIENT_ID not in printed and "Secret" not in printed
    assert len(orthanc.instances_of(str(film.StudyInstanceUID))) == 3  # the film, its SR and its SC
    assert cli_predictor[0][1]["engine"] == "keras"

    assert main(["pacs", "--url", orthanc.dicomweb, "--patient", "NOBODY", "--model", str(tiny_run)]) == 2
    assert "no study in the PACS matches" in capsys.readouterr().err
    closed = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    assert main(["pacs", "--url", closed, "--patient", PATIENT_ID, "--model", str(tiny_run)]) == 2
    error = capsys.readouterr().err
    assert "did not answer" in error and PATIENT_ID not in error


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
