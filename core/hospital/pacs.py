"""Classify a PACS study's frontal films and, when asked, store the results back (SR + Secondary Capture).

One JSON object per object of the study, exactly as `python -m core predict --json` gives it
(core.serving.results.result_json: the gate honoured, so a refused film has no label, only the gate's
verdict and its "raw" output marked as such), plus where the film is in the PACS:

    {"file": SOP Instance UID, "label", "confidence", "probabilities", "calibrated", "notices", "gate",
     "run", "model", "prediction_set", ..., "study": Study Instance UID, "series": Series Instance UID,
     "stored": {"sr": SOP Instance UID, "sc": SOP Instance UID}}          # with store=True
    {"file": SOP Instance UID, "study", "series", "skipped": reason}     # lateral views, non-images, ...
    {"file": SOP Instance UID, "study", "series", "error": message}      # a film that could not be used

A film's name is its SOP Instance UID, never a patient identifier, so the CLI's output and the audit log
(the page records predictions there) carry no patient name or ID. The SR and the Secondary Capture stored
back honour the gate too (core.hospital.results).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from core.hospital import dicomweb
from core.hospital.results import secondary_capture, structured_report
from core.runs.context import model_context
from core.serving.results import result_json


def find_study_uids(client, *, study: str | None = None, accession: str | None = None,
                    patient: str | None = None) -> list[str]:
    """The Study Instance UIDs that match one of: a study UID, an accession number, a patient ID."""
    rows = dicomweb.search_studies(client, study_uid=study, accession=accession, patient_id=patient)
    return [str(row["StudyInstanceUID"]) for row in rows if row["StudyInstanceUID"]]


def result_datasets(source, prediction, run, *, raw: bool = False) -> tuple[object, object]:
    """(structured report, secondary capture) of one prediction, both in the source film's study.

    `source` is the film's pydicom Dataset; the prediction must hold the film and its CAM
    (predict with with_cam=True, display=True). `raw`: for a film the gate refused, include the model's raw
    output, marked as such (only when the user asked for it)."""
    return (structured_report(source, prediction, run, raw=raw),
            secondary_capture(source, prediction, raw=raw))


def dataset_bytes(dataset) -> bytes:
    """A Part 10 file of a dataset (what the page offers for download)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def classify_study(predictor, client, study_uid: str, *, store: bool = False,
                   films: list | None = None) -> Iterator[tuple[dict, object | None, object | None]]:
    """Classify the study's frontal films one at a time: yields (JSON object, Prediction or None, source
    Dataset or None). With store=True the SR and the Secondary Capture of each film go back over STOW-RS.

    `films` restricts the work to some of `dicomweb.study_films(client, study_uid)` (the page's choice).
    """
    context = model_context(predictor.run)
    for film in films if films is not None else dicomweb.study_films(client, study_uid):
        where = {"study": film.study_uid, "series": film.series_uid}
        if film.skip_reason:
            yield {"file": film.sop_uid, **where, "skipped": film.skip_reason}, None, None
            continue
        try:
            data, source = dicomweb.retrieve(client, film)
        except Exception as error:  # the PACS or the network: report it on this film, go on with the next
            yield {"file": film.sop_uid, **where, "error": f"could not be fetched from the PACS ({error})"}, None, None
            continue
        prediction = predictor.predict(data, name=film.sop_uid, with_cam=store, display=store)
        out = {**result_json(prediction, context), **where}
        if store and prediction.error is None:
            report, capture = result_datasets(source, prediction, predictor.run)
            dicomweb.store(client, [report, capture])
            out["stored"] = {"sr": str(report.SOPInstanceUID), "sc": str(capture.SOPInstanceUID)}
        yield out, prediction, source
