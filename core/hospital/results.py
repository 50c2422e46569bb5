"""A prediction as DICOM a PACS stores and a viewer shows: a structured report and a secondary capture.

`structured_report` builds a Comprehensive SR in the shape of IHE AI Results: a TID 1500 Imaging
Measurement Report whose one measurement group (TID 1501) references the classified film and holds

- one qualitative evaluation per class: Finding = the class, with its Probability (0..1, UCUM "1") as a
  HAS PROPERTIES child;
- the predicted class, and the prediction set (each member; the label alone when the prediction has none);
- the chest-radiograph gate's verdict (passed/failed) with its reason;
- algorithm identification (TID 4019): Paru, `core.__version__`, the run id as a parameter;
- a device observer (TID 1004) whose UID is `device_uid(run)`: the same for every result of one trained
  run, different for every other run.

`secondary_capture` builds an RGB Secondary Capture of the Grad-CAM overlay with the label and the
disclaimer burned into a band above the film. Both carry "NOT FOR DIAGNOSTIC USE" in their series
description and copy the patient and study of the source film (highdicom does), so they file beside it.

The gate is honoured as in core.serving.results: for a film the gate refused, the SR holds only the gate's
verdict and reason (no class, probability or set), and the Secondary Capture is the plain film with "No
diagnosis shown: <reason>" burned in (no heatmap). With `raw=True` (the user asked for the raw output) the SR
adds each class's raw probability under a "raw output" concept, never a Finding, and the picture its heatmap,
each marked core.serving.results.RAW_NOTE; still no predicted class or set.

highdicom and pydicom are imported inside the functions (they are heavy); nothing here needs TensorFlow.
"""

from __future__ import annotations

import uuid

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import core
from core.explain.overlay import overlay
from core.serving.results import RAW_NOTE, is_refused, raw_output

DISCLAIMER = "NOT FOR DIAGNOSTIC USE"
SR_SERIES_DESCRIPTION = f"Paru AI result - {DISCLAIMER}"
SC_SERIES_DESCRIPTION = f"Paru Grad-CAM - {DISCLAIMER}"
MANUFACTURER = "Paru"
# Private coding scheme for the concepts DICOM does not define (designators starting "99" are private).
PRIVATE_SCHEME = "99PARU"
# SNOMED CT concepts of the paper's classes; any other class name is coded in the private scheme.
CLASS_CODES = {
    "Normal": ("17621005", "SCT", "Normal"),
    "Pneumonia": ("233604007", "SCT", "Pneumonia"),
    "Cardiomegaly": ("8186001", "SCT", "Cardiomegaly"),
    "Pneumothorax": ("36118008", "SCT", "Pneumothorax"),
}
FINDING = ("121071", "DCM", "Finding")
PROBABILITY = ("122157", "DCM", "Probability")
PREDICTED_CLASS = ("PREDICTED", PRIVATE_SCHEME, "Predicted class")
PREDICTION_SET = ("PREDICTION-SET", PRIVATE_SCHEME, "Prediction set member")
GATE = ("GATE", PRIVATE_SCHEME, "Chest radiograph check")
GATE_PASSED = ("GATE-PASSED", PRIVATE_SCHEME, "Passed")
GATE_FAILED = ("GATE-FAILED", PRIVATE_SCHEME, "Failed")
GATE_REASON = ("GATE-REASON", PRIVATE_SCHEME, "Chest radiograph check reason")
RAW_OUTPUT = ("RAW-OUTPUT", PRIVATE_SCHEME, f"{RAW_NOTE} (class)")
PROCEDURE = ("399208008", "SCT", "Plain chest X-ray")
# The namespace of device UIDs: uuid5(namespace, run identity) -> "2.25.<128-bit integer>".
_DEVICE_NAMESPACE = uuid.UUID("6c0f3b9e-5d0a-4f3c-9a55-2f1d9e8a7b41")


def device_uid(run) -> str:
    """The device UID of a trained run: a UUID-derived "2.25." UID from the run id and its start time.

    Deterministic (every result of one run names the same device), and different for each trained run,
    including two runs of the same name trained at different times or on different machines.
    """
    status = getattr(run, "status", None) or {}
    identity = f"{run.run_id}|{status.get('started', '')}"
    return f"2.25.{uuid.uuid5(_DEVICE_NAMESPACE, identity).int}"


def class_code(name: str) -> tuple[str, str, str]:
    """(value, scheme, meaning) of a class: SNOMED CT for the paper's classes, else the private scheme."""
    return CLASS_CODES.get(name) or (name[:64], PRIVATE_SCHEME, name[:64])


def prediction_set_of(prediction) -> list[str]:
    """The classes of the prediction's set when it has one, else just its label."""
    members = getattr(prediction, "prediction_set", None)
    return list(members) if members else [prediction.label]


def structured_report(source, prediction, run, *, raw: bool = False, series_uid: str | None = None,
                      sop_uid: str | None = None):
    """A highdicom ComprehensiveSR of one prediction, referencing the `source` film (a pydicom Dataset).

    `prediction` is a core.serving.predict.Prediction without error; `run` is its core.runs.registry.Run.
    `raw`: for a film the gate refused, add the model's raw output, marked as such (see the module's note).
    """
    import highdicom as hd
    from highdicom.sr import NumContentItem, TextContentItem
    from pydicom.sr.coding import Code

    def code(triple) -> Code:
        value, scheme, meaning = triple
        return Code(value, scheme, meaning)

    if prediction.error:
        raise ValueError(f"No report for a film that failed: {prediction.error}")
    def evaluation(name, value, *children):
        # One TID 1501 qualitative evaluation (a CODE item), with its HAS PROPERTIES children.
        template = hd.sr.QualitativeEvaluation(name=code(name), value=code(value))
        if children:
            template[0].ContentSequence = list(children)
        return template

    unit = Code("1", "UCUM", "no units")
    refused = is_refused(prediction)
    # A refused film: no Finding, no class, no set; its raw output only on request, under its own concept.
    shown = raw_output(prediction) if refused and raw else {} if refused else prediction.probabilities
    evaluations = [
        evaluation(RAW_OUTPUT if refused else FINDING, class_code(name), NumContentItem(
            name=code(PROBABILITY), value=round(float(probability), 6), unit=unit,
            relationship_type="HAS PROPERTIES"))
        for name, probability in shown.items()
    ]
    if not refused:
        evaluations.append(evaluation(PREDICTED_CLASS, class_code(prediction.label)))
        evaluations.extend(evaluation(PREDICTION_SET, class_code(member))
                           for member in prediction_set_of(prediction))
    if prediction.gate is not None:
        evaluations.append(evaluation(
            GATE, GATE_PASSED if prediction.gate.passed else GATE_FAILED,
            TextContentItem(name=code(GATE_REASON), value=str(prediction.gate.reason)[:1024] or "-",
                            relationship_type="HAS PROPERTIES")))

    algorithm = hd.sr.AlgorithmIdentification(
        name="Paru MobileNetV2 chest X-ray classifier", version=core.__version__, manufacturer=MANUFACTURER,
        parameters=[f"run_id={run.run_id}", f"calibrated={prediction.calibrated}", f"engine={prediction.engine}"])
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Paru classification"),
        finding_type=code(FINDING), algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=Code("816094009", "SCT", "Chest"))],
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    observer = hd.sr.ObserverContext(
        observer_type=Code("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(run), name="Paru", manufacturer_name=MANUFACTURER,
            model_name=f"Paru {core.__version__}", serial_number=run.run_id[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=code(PROCEDURE), imaging_measurements=[group])
    return hd.sr.ComprehensiveSR(
        evidence=[source], content=report[0], series_instance_uid=series_uid or hd.UID(), series_number=9001,
        sop_instance_uid=sop_uid or hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        series_description=SR_SERIES_DESCRIPTION, is_complete=True, is_final=False, is_verified=False)


def read_report(dataset) -> dict:
    """What a Paru SR says, read back from its content tree: {"probabilities", "raw", "label",
    "prediction_set", "gate_passed", "gate_reason", "run_id", "version", "device_uid", "source_instance"}
    ("raw": a refused film's raw output, class -> probability, when it was asked for)."""
    out = {"probabilities": {}, "raw": {}, "prediction_set": [], "label": None, "gate_passed": None,
           "gate_reason": None, "run_id": None, "version": None, "device_uid": None, "source_instance": None}
    for item in _walk(dataset.ContentSequence):
        name = _concept(item, "ConceptNameCodeSequence")
        value = _concept(item, "ConceptCodeSequence")
        if name in (FINDING[:2], RAW_OUTPUT[:2]) and value is not None:
            into = out["probabilities"] if name == FINDING[:2] else out["raw"]
            for child in item.get("ContentSequence", []):
                if _concept(child, "ConceptNameCodeSequence") == PROBABILITY[:2]:
                    meaning = item.ConceptCodeSequence[0].CodeMeaning
                    into[meaning] = float(child.MeasuredValueSequence[0].NumericValue)
        elif name == PREDICTED_CLASS[:2]:
            out["label"] = item.ConceptCodeSequence[0].CodeMeaning
        elif name == PREDICTION_SET[:2]:
            out["prediction_set"].append(item.ConceptCodeSequence[0].CodeMeaning)
        elif name == GATE[:2]:
            out["gate_passed"] = value == GATE_PASSED[:2]
        elif name == GATE_REASON[:2]:
            out["gate_reason"] = str(item.TextValue)
        elif name == ("111002", "DCM") and str(item.TextValue).startswith("run_id="):
            out["run_id"] = str(item.TextValue).split("=", 1)[1]
        elif name == ("111003", "DCM"):
            out["version"] = str(item.TextValue)
        elif name == ("121012", "DCM"):
            out["device_uid"] = str(item.UID)
        elif item.get("ValueType") == "IMAGE" and "ReferencedSOPSequence" in item:
            out["source_instance"] = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return out


def _walk(sequence):
    for item in sequence:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _concept(item, keyword: str):
    codes = item.get(keyword)
    if not codes:
        return None
    value = codes[0].get("CodeValue") or codes[0].get("LongCodeValue")  # values over 16 characters are long
    return str(value), str(codes[0].CodingSchemeDesignator)


def overlay_picture(prediction, label_text: str | None = None, *, raw: bool = False) -> np.ndarray:
    """The film with its Grad-CAM and a band above it carrying the result and the disclaimer (RGB uint8).

    The prediction must have been made with `with_cam=True, display=True` (it then holds `gray` and `cam`).
    A film the gate refused is shown without its heatmap, under the gate's verdict, unless `raw` (the user
    asked for the raw output): then with its heatmap and the raw output, marked as such.
    """
    plain = is_refused(prediction) and not raw
    if prediction.gray is None or (prediction.cam is None and not plain):
        raise ValueError("The overlay needs the film and its Grad-CAM: predict with with_cam=True, display=True.")
    picture = (Image.fromarray(prediction.gray).convert("RGB") if plain
               else Image.fromarray(overlay(prediction.gray, prediction.cam)))
    width, height = picture.size
    font_size = max(10, width // 40)
    font = _font(font_size)
    lines = [label_text] if label_text else _result_lines(prediction, raw)
    lines.append(f"{DISCLAIMER}. Paru {core.__version__}.")
    band = (font_size + font_size // 2) * len(lines) + font_size // 2
    canvas = Image.new("RGB", (width, height + band), (0, 0, 0))
    canvas.paste(picture, (0, band))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(lines):
        draw.text((font_size // 2, font_size // 4 + number * (font_size + font_size // 2)), line,
                  fill=(255, 255, 0) if number == len(lines) - 1 else (255, 255, 255), font=font)
    return np.asarray(canvas)


def overlay_band_height(picture: np.ndarray, film_height: int) -> int:
    """Rows of text band above the film in an `overlay_picture` of a film `film_height` rows high."""
    return int(picture.shape[0]) - int(film_height)


def _result_lines(prediction, raw: bool = False) -> list[str]:
    """The result as burned in: the label, or for a refused film the gate's verdict (and, when asked for,
    the raw output's top class marked as such)."""
    if not is_refused(prediction):
        return [f"{prediction.label} {prediction.confidence:.1%} (Grad-CAM of {prediction.label})"]
    lines = [f"No diagnosis shown: {prediction.gate.reason}"[:120]]
    if raw:
        top, probability = max(raw_output(prediction).items(), key=lambda item: item[1])
        lines.append(f"{RAW_NOTE}: {top} {probability:.1%} (Grad-CAM of {top})"[:120])
    return lines


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def secondary_capture(source, prediction, *, raw: bool = False, series_uid: str | None = None,
                      sop_uid: str | None = None):
    """A highdicom SCImage (RGB) of `overlay_picture(prediction, raw=raw)`, in the source film's study."""
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian

    picture = overlay_picture(prediction, raw=raw)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=picture, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid or hd.UID(), series_number=9002,
        sop_instance_uid=sop_uid or hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"), transfer_syntax_uid=ExplicitVRLittleEndian)
    image.SeriesDescription = SC_SERIES_DESCRIPTION
    image.BurnedInAnnotation = "YES"
    image.ImageComments = f"{'. '.join(_result_lines(prediction, raw))}. {DISCLAIMER}."[:10240]
    return image
