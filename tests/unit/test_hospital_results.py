"""The DICOM results without a model: the SR's content tree, the device UID per trained run, the Secondary
Capture's picture, which objects of a study are classified, and the FHIR Observation; a film the gate refused
carries no diagnosis in any of them (its raw output only on request, marked as raw)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import core
from core.hospital import dicomweb, fhir, pacs
from core.hospital.dicomweb import skip_reason
from core.hospital.results import (device_uid, overlay_picture, read_report, secondary_capture,
                                   structured_report)
from core.serving.gate import GateResult
from core.serving.results import RAW_NOTE
from core.settings import PROJECT_ROOT
from pacs_fixture import dicom_film, synthetic_film

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

PROBABILITIES = {"Normal": 0.1, "Pneumonia": 0.2, "Cardiomegaly": 0.6, "Pneumothorax": 0.1}
RAW = {"Normal": 0.15, "Pneumonia": 0.25, "Cardiomegaly": 0.5, "Pneumothorax": 0.1}
REFUSED = GateResult(False, "looks like a photograph")


def prediction(**changes):
    values = dict(file="film", error=None, label="Cardiomegaly", confidence=0.6, probabilities=PROBABILITIES,
                  raw_probabilities=RAW, calibrated=True, engine="Keras", gate=GateResult(True, "ok"),
                  gray=np.full((200, 240), 90, np.uint8), cam=np.linspace(0, 1, 49).reshape(7, 7))
    return SimpleNamespace(**{**values, **changes})


def run(run_id="20261128-031047-nih-cxr4-paper", started="2026-11-28T03:10:47+00:00"):
    return SimpleNamespace(run_id=run_id, status={"started": started}, path=Path(run_id))


def reread(dataset):
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def test_sr_content_tree_carries_classes_set_gate_algorithm_and_source():
    source = dicom_film(synthetic_film(64))
    result = prediction(prediction_set=["Cardiomegaly", "Pneumonia"])
    sr = reread(structured_report(source, result, run()))
    content = read_report(sr)
    assert content["probabilities"] == PROBABILITIES and content["raw"] == {}
    assert content["label"] == "Cardiomegaly" and content["prediction_set"] == ["Cardiomegaly", "Pneumonia"]
    assert content["gate_passed"] is True and content["gate_reason"] == "ok"
    assert content["run_id"] == run().run_id and content["version"] == core.__version__
    assert content["device_uid"] == device_uid(run()) and content["source_instance"] == source.SOPInstanceUID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"


def test_device_uid_is_stable_per_run_and_differs_between_runs():
    assert device_uid(run()) == device_uid(run())
    assert device_uid(run()) != device_uid(run(run_id="20261128-031047-nih-cxr4-recommended"))
    assert device_uid(run()) != device_uid(run(started="2026-12-01T10:00:00+00:00"))  # same name, retrained
    assert device_uid(run()).startswith("2.25.") and len(device_uid(run())) <= 64


def test_secondary_capture_is_the_overlay_with_a_text_band():
    source = dicom_film(synthetic_film(64))
    result = prediction()
    picture = overlay_picture(result)
    assert picture.shape[1:] == (240, 3) and picture.shape[0] > 200
    sc = reread(secondary_capture(source, result))
    np.testing.assert_array_equal(sc.pixel_array, picture)
    assert sc.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSTIC USE" in sc.SeriesDescription


def test_only_frontal_projection_radiographs_are_classified():
    def header(**tags):
        return dicom_film(synthetic_film(16), **tags)

    assert skip_reason(header(view="PA")) is None and skip_reason(header(view="AP")) is None
    assert "lateral" in skip_reason(header(view="LL"))
    assert "not a frontal view" in skip_reason(header(view="LLO"))
    assert "not a projection radiograph" in skip_reason(header(modality="CT"))
    assert "not an image" in skip_reason(header(), has_pixels=False)
    paru = header()
    paru.Manufacturer = "Paru"
    assert "Paru wrote" in skip_reason(paru)


def test_fhir_observation_has_no_patient_identifier():
    resource = fhir.observation(prediction(), run(), study_uid="1.2.3", report_uid="1.2.3.4")
    assert resource["valueCodeableConcept"]["coding"][0] == {"system": "http://snomed.info/sct",
                                                             "code": "8186001", "display": "Cardiomegaly"}
    assert [ref["identifier"]["value"] for ref in resource["derivedFrom"]] == ["urn:oid:1.2.3", "urn:oid:1.2.3.4"]
    assert "subject" not in resource and "NOT FOR DIAGNOSTIC USE" in resource["note"][0]["text"]


def test_sr_of_a_refused_film_holds_only_the_gate_verdict_and_its_raw_output_only_on_request():
    source = dicom_film(synthetic_film(64))
    result = prediction(prediction_set=["Cardiomegaly", "Pneumonia"], gate=REFUSED)
    content = read_report(reread(structured_report(source, result, run())))
    assert content["gate_passed"] is False and content["gate_reason"] == "looks like a photograph"
    assert content["probabilities"] == {} and content["raw"] == {}
    assert content["label"] is None and content["prediction_set"] == []
    assert content["run_id"] == run().run_id and content["source_instance"] == source.SOPInstanceUID

    shown = read_report(reread(structured_report(source, result, run(), raw=True)))
    assert shown["raw"] == RAW  # the softmax before calibration, as the CSV and the JSON give it
    assert shown["probabilities"] == {} and shown["label"] is None and shown["prediction_set"] == []
    assert shown["gate_passed"] is False


def test_secondary_capture_of_a_refused_film_burns_in_the_verdict_not_a_label():
    source = dicom_film(synthetic_film(64))
    result = prediction(gate=REFUSED)
    sc = reread(secondary_capture(source, result))
    assert "Cardiomegaly" not in sc.ImageComments and "looks like a photograph" in sc.ImageComments
    film = sc.pixel_array[-200:]
    np.testing.assert_array_equal(film, np.repeat(result.gray[..., None], 3, axis=2))  # no heatmap
    # The band burns in the verdict and the disclaimer, nothing else.
    np.testing.assert_array_equal(sc.pixel_array,
                                  overlay_picture(result, "No diagnosis shown: looks like a photograph"))

    raw = reread(secondary_capture(source, result, raw=True))
    assert f"{RAW_NOTE}: Cardiomegaly" in raw.ImageComments
    assert not np.array_equal(raw.pixel_array[-200:], film)  # the heatmap, asked for


def test_fhir_observation_of_a_refused_film_has_no_value_only_the_gate_verdict():
    resource = fhir.observation(prediction(prediction_set=["Cardiomegaly"], gate=REFUSED), run())
    assert "valueCodeableConcept" not in resource
    assert resource["dataAbsentReason"]["coding"][0]["code"] == "not-applicable"
    assert "looks like a photograph" in resource["dataAbsentReason"]["text"]
    assert [c["code"]["text"] for c in resource["component"]] == ["Chest radiograph check passed",
                                                                   "Chest radiograph check reason"]
    assert "Cardiomegaly" not in str(resource)

    shown = fhir.observation(prediction(gate=REFUSED), run(), raw=True)
    raw = {c["code"]["text"]: c["valueQuantity"]["value"] for c in shown["component"] if "valueQuantity" in c}
    assert raw == {f"{RAW_NOTE}: Probability of {name}": p for name, p in RAW.items()}
    assert "valueCodeableConcept" not in shown


def test_pacs_json_of_a_refused_film_is_predicts_without_a_label(monkeypatch):
    from core.runs.registry import load_run

    shipped = load_run(PROJECT_ROOT / "models" / "demo-nih-cxr4")
    film = SimpleNamespace(sop_uid="1.2.3.4", study_uid="1.2", series_uid="1.2.3", skip_reason=None)
    monkeypatch.setattr(dicomweb, "retrieve", lambda client, item: (b"film", None))
    refused = prediction(gate=REFUSED, prediction_set=None, set_level=None, uncertain=None, notices=[],
                         seconds=0.1, similar=[],
                         to_json=lambda: {"file": "1.2.3.4", "label": "Cardiomegaly", "confidence": 0.6,
                                          "probabilities": PROBABILITIES, "gate": REFUSED.to_json()})
    predictor = SimpleNamespace(run=shipped, predict=lambda data, **options: refused)
    [(out, _, _)] = list(pacs.classify_study(predictor, None, "1.2", films=[film]))
    assert out["label"] is None and out["confidence"] is None and "probabilities" not in out
    assert out["gate"]["passed"] is False and out["raw"]["probabilities"] == RAW
    assert out["run"] == shipped.run_id and out["study"] == "1.2" and out["file"] == "1.2.3.4"
