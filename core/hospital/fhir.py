"""A prediction as a FHIR R4 Observation (JSON), mapped as the HL7 "DICOM SR to FHIR Resource Mapping"
implementation guide maps a TID 1501 qualitative evaluation:

- code = the evaluation's concept name (DCM 121071 "Finding"); valueCodeableConcept = the predicted class
  (SNOMED CT for the paper's classes, text only for any other class);
- identifier = the observation UID (urn:dicom:uid); category "imaging"; status "preliminary" (nobody has
  verified it); issued = when it was made;
- one component per class with its probability (DCM 122157 "Probability", UCUM "1"), one per member of
  the prediction set, and the chest-radiograph gate's verdict (valueBoolean);
- device = the run's device UID (core.hospital.results.device_uid), as the SR's device observer;
- derivedFrom = the source study and, when given, the SR it mirrors, by DICOM UID;
- a note saying that it is not for diagnostic use.

The gate is honoured as in core.serving.results: for a film the gate refused there is no value, only a
dataAbsentReason ("not-applicable", with the gate's reason as its text) and the gate's verdict and reason as
components; no class, probability or set. With `raw=True` (the user asked for the raw output) each class's raw
probability is added as a component whose text begins with core.serving.results.RAW_NOTE.

No patient identifier is written: the receiving system links the Observation to its patient through the
study it is derived from.
"""

from __future__ import annotations

from datetime import datetime, timezone

import core
from core.hospital.results import (CLASS_CODES, DISCLAIMER, FINDING, PROBABILITY, device_uid,
                                   prediction_set_of)
from core.serving.results import RAW_NOTE, is_refused, raw_output

SYSTEMS = {"SCT": "http://snomed.info/sct", "DCM": "http://dicom.nema.org/resources/ontology/DCM",
           "UCUM": "http://unitsofmeasure.org"}
IMAGING_CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging",
                    "display": "Imaging"}
DATA_ABSENT_NOT_APPLICABLE = {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                              "code": "not-applicable", "display": "Not Applicable"}
OBSERVATION_UID_TYPE = {"system": "http://hl7.org/fhir/uv/dicom-sr/CodeSystem/dicom-identifier-type",
                        "code": "observation-uid", "display": "Observation UID"}


def _concept(triple) -> dict:
    value, scheme, meaning = triple
    return {"coding": [{"system": SYSTEMS[scheme], "code": value, "display": meaning}], "text": meaning}


def _class_concept(name: str) -> dict:
    return _concept(CLASS_CODES[name]) if name in CLASS_CODES else {"text": name}


def _uid_reference(resource_type: str, uid: str) -> dict:
    return {"type": resource_type, "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}}


def observation(prediction, run, *, raw: bool = False, study_uid: str | None = None,
                report_uid: str | None = None, observation_uid: str | None = None, issued: str | None = None) -> dict:
    """The Observation (a JSON-ready dict) of one prediction without error (`raw`: see the module's note)."""
    if prediction.error:
        raise ValueError(f"No observation for a film that failed: {prediction.error}")
    refused = is_refused(prediction)
    prefix = f"{RAW_NOTE}: " if refused else ""
    shown = raw_output(prediction) if refused and raw else {} if refused else prediction.probabilities
    components = [
        {"code": {**_class_concept(name), "text": f"{prefix}{PROBABILITY[2]} of {name}"},
         "valueQuantity": {"value": round(float(probability), 6), "unit": "1", "system": SYSTEMS["UCUM"],
                           "code": "1"}}
        for name, probability in shown.items()
    ]
    components += [{"code": {"text": "Prediction set member"}, "valueCodeableConcept": _class_concept(member)}
                   for member in ([] if refused else prediction_set_of(prediction))]
    if prediction.gate is not None:
        components.append({"code": {"text": "Chest radiograph check passed"},
                           "valueBoolean": bool(prediction.gate.passed)})
    notes = [f"{DISCLAIMER}. Made by Paru {core.__version__}, run {run.run_id}."]
    if refused:
        components.append({"code": {"text": "Chest radiograph check reason"},
                           "valueString": str(prediction.gate.reason)})
        notes.append(f"No diagnosis shown: {prediction.gate.reason}")
    resource = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [IMAGING_CATEGORY]}],
        "code": _concept(FINDING),
        "issued": issued or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"dataAbsentReason": {"coding": [DATA_ABSENT_NOT_APPLICABLE],
                                 "text": f"No diagnosis shown: {prediction.gate.reason}"}} if refused
           else {"valueCodeableConcept": _class_concept(prediction.label)}),
        "device": {"display": f"Paru {core.__version__} (run {run.run_id})",
                   "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{device_uid(run)}"}},
        "method": {"text": "MobileNetV2 classifier with Grad-CAM; probabilities "
                           + ("temperature-calibrated" if prediction.calibrated else "uncalibrated")},
        "component": components,
        "note": [{"text": text} for text in notes],
    }
    if observation_uid:
        resource["identifier"] = [{"type": {"coding": [OBSERVATION_UID_TYPE]}, "system": "urn:dicom:uid",
                                   "value": f"urn:oid:{observation_uid}"}]
    derived = ([_uid_reference("ImagingStudy", study_uid)] if study_uid else []) + (
        [_uid_reference("DocumentReference", report_uid)] if report_uid else [])
    if derived:
        resource["derivedFrom"] = derived
    return resource
