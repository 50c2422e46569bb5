"""A PACS over DICOMweb: find studies (QIDO-RS), list and fetch their films (WADO-RS), store results (STOW-RS).

The PACS is named by a URL (`--url`, or $PARU_DICOMWEB_URL) and credentials come from the environment
only (core.settings.dicomweb_credentials). Films are fetched in the transfer syntax the PACS stores them
in, so compressed films go through the same DICOM loader as files.

Which objects are classified is decided from the series metadata, before any pixel data is fetched:
frontal (PA/AP) projection radiographs only. Lateral and oblique views, non-image objects (reports,
presentation states, key-object selections) and the results Paru itself wrote are skipped with a reason.

Privacy: patient identifiers are returned to the caller as the PACS gives them (the page shows them) but
are never logged here; the HTTP library's logger is kept at WARNING because its debug lines carry the
query parameters.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from core.settings import dicomweb_credentials, dicomweb_url

# The modalities of projection radiographs Paru classifies; the search offers these choices.
MODALITIES = ("CR", "DX")
FRONTAL_VIEWS = ("PA", "AP", "")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT")
_PIXEL_DATA_TAGS = ("7FE00010", "7FE00008", "7FE00009")
# Tags of the study-level attributes a search returns (a study row of the page and the CLI).
_STUDY_FIELDS = {
    "StudyInstanceUID": "0020000D", "StudyDate": "00080020", "StudyDescription": "00081030",
    "AccessionNumber": "00080050", "PatientID": "00100020", "PatientName": "00100010",
    "ModalitiesInStudy": "00080061", "NumberOfStudyRelatedInstances": "00201208",
}

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)


@dataclass(frozen=True)
class FilmRef:
    """One object of a study: where it is, what it is, and why it is skipped (None: classify it)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    view: str
    skip_reason: str | None = None


def connect(url: str | None = None, timeout: float = 30.0):
    """A dicomweb_client.DICOMwebClient for `url` (default $PARU_DICOMWEB_URL), with the environment's
    credentials. ValueError when no URL is given or configured."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    url = (url or dicomweb_url() or "").rstrip("/")
    if not url:
        raise ValueError("No PACS is configured: pass --url or set PARU_DICOMWEB_URL to the DICOMweb root "
                         "(for Orthanc, http://HOST:8042/dicom-web).")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not a DICOMweb URL: it must start with http:// or https://.")
    session = requests.Session()
    credentials = dicomweb_credentials()
    if "token" in credentials:
        session.headers["Authorization"] = f"Bearer {credentials['token']}"
    elif credentials:
        session.auth = (credentials["user"], credentials["password"])
    client = DICOMwebClient(url, session=session, timeout=timeout)
    # Retry a busy server (HTTP 429/503/504) or a refused connection briefly, not the client's default
    # five times over about 30 s: a PACS that is down is reported within seconds.
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=250)
    return client


def search_studies(client, *, patient_id: str | None = None, accession: str | None = None,
                   study_date: str | None = None, modality: str | None = None,
                   study_uid: str | None = None, limit: int = 100) -> list[dict]:
    """QIDO-RS study search; each row {"StudyInstanceUID", "StudyDate", "StudyDescription",
    "AccessionNumber", "PatientID", "PatientName", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"}.

    study_date is a DICOM date or range ("20240131", "20240101-20240131"); modality one of MODALITIES.
    """
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"Got modality {modality!r}; Paru searches projection radiographs: {MODALITIES}.")
    filters = {key: value for key, value in (
        ("PatientID", patient_id), ("AccessionNumber", accession), ("StudyDate", study_date),
        ("ModalitiesInStudy", modality), ("StudyInstanceUID", study_uid)) if value}
    rows = client.search_for_studies(search_filters=filters, fields=list(_STUDY_FIELDS), limit=limit)
    return [{name: _json_value(row, tag) for name, tag in _STUDY_FIELDS.items()} for row in rows]


def study_films(client, study_uid: str) -> list[FilmRef]:
    """Every object of a study, by series and instance number, each with its skip reason or None."""
    from pydicom import Dataset

    films = []
    found = client.search_for_series(study_instance_uid=study_uid)
    for series in sorted(found, key=lambda row: int(_json_value(row, "00200011") or 0)):  # Series Number
        series_uid = _json_value(series, "0020000E")
        metadata = client.retrieve_series_metadata(study_uid, series_uid)
        entries = []
        for item in metadata:
            # Some servers (Orthanc) leave compressed Pixel Data out of the metadata: Rows and Columns (the
            # Image Pixel module) say that the object is an image as well.
            pixel = any(tag in item for tag in _PIXEL_DATA_TAGS) or ("00280010" in item and "00280011" in item)
            header = Dataset.from_json({tag: value for tag, value in item.items()
                                        if tag not in _PIXEL_DATA_TAGS and "BulkDataURI" not in value})
            entries.append((int(header.get("InstanceNumber") or 0), header, pixel))
        for _, header, pixel in sorted(entries, key=lambda entry: entry[0]):
            view = str(header.get("ViewPosition", "") or "").strip().upper()
            films.append(FilmRef(study_uid, series_uid, str(header.SOPInstanceUID),
                                 str(header.get("Modality", "") or "").upper(), view, skip_reason(header, pixel)))
    return films


def skip_reason(header, has_pixels: bool = True) -> str | None:
    """Why an object of a study is not classified, or None for a frontal projection radiograph."""
    from pydicom.uid import UID

    sop_class = UID(str(header.get("SOPClassUID", "") or ""))
    modality = str(header.get("Modality", "") or "").upper()
    if str(header.get("Manufacturer", "") or "") == "Paru":
        return "a result Paru wrote (structured report or secondary capture), not a film"
    if not has_pixels:
        return f"not an image ({sop_class.name or modality or 'no pixel data'})"
    if modality not in MODALITIES:
        return f"modality {modality or 'not given'} is not a projection radiograph ({'/'.join(MODALITIES)})"
    view = str(header.get("ViewPosition", "") or "").strip().upper()
    meanings = " ".join(str(code.get("CodeMeaning", "")) for code in header.get("ViewCodeSequence", []) or [])
    if view in LATERAL_VIEWS or "lateral" in meanings.lower():
        return f"lateral view (View Position {view or meanings}); Paru classifies frontal films only"
    if view not in FRONTAL_VIEWS:
        return f"not a frontal view (View Position {view}); Paru classifies PA and AP films only"
    return None


def retrieve(client, film: FilmRef) -> tuple[bytes, object]:
    """WADO-RS: the film's Part 10 bytes (in the PACS's stored transfer syntax) and its pydicom Dataset."""
    dataset = client.retrieve_instance(film.study_uid, film.series_uid, film.sop_uid,
                                       media_types=(("application/dicom", "*"),))
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), dataset


def store(client, datasets) -> list[str]:
    """STOW-RS the datasets; returns their SOP Instance UIDs. Raises when the PACS refuses one."""
    response = client.store_instances(datasets=list(datasets))
    failed = response.get("FailedSOPSequence") or []
    if failed:
        raise RuntimeError(f"The PACS refused {len(failed)} of the {len(datasets)} results (failure reason "
                           f"{failed[0].get('FailureReason', 'not given')}).")
    return [str(dataset.SOPInstanceUID) for dataset in datasets]


def _json_value(row: dict, tag: str):
    """The first value of a DICOM JSON attribute (a person name as its alphabetic string), or ""."""
    values = (row.get(tag) or {}).get("Value") or []
    if not values:
        return ""
    value = values[0]
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return "\\".join(str(v) for v in values) if len(values) > 1 else value
