"""The PACS round trip end to end with the shipped demo run (read-only) and a real film: a JPEG 2000 DX
film in Orthanc, found by patient ID with `python -m core pacs --store` (in process), classified, its SR
and Secondary Capture stored back and read back from Orthanc."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT, SHARED_DATA
from core.cli import main
from core.hospital import dicomweb
from core.hospital.results import read_report
from pacs_fixture import dicom_film, synthetic_film

pydicom = pytest.importorskip("pydicom")
DEMO_RUN = PROJECT_ROOT / "models" / "demo-nih-cxr4"


def real_film() -> np.ndarray:
    """A real chest film of the samples (Cardiomegaly), else a synthetic one where ../shared is absent."""
    films = sorted((SHARED_DATA / "samples" / "Cardiomegaly").glob("*.png"))
    return np.asarray(Image.open(films[0]).convert("L")) if films else synthetic_film(256, seed=1, bits=8)


def test_demo_run_round_trip_through_the_cli(orthanc, capsys):
    film = dicom_film(real_film(), patient_id="PARU-SYS-1", patient_name="System^Test", accession="ACC-SYS-1")
    film.compress("1.2.840.10008.1.2.4.90")
    lateral = dicom_film(real_film(), view="LL", patient_id="PARU-SYS-1", accession="ACC-SYS-1",
                         study_uid=film.StudyInstanceUID, instance_number=2)
    orthanc.upload(film)
    orthanc.upload(lateral)

    status = main(["pacs", "--url", orthanc.dicomweb, "--patient", "PARU-SYS-1", "--model", str(DEMO_RUN),
                   "--store", "--json"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    outcomes = [json.loads(line) for line in printed.splitlines()]
    classified = [out for out in outcomes if "label" in out]
    assert len(classified) == 1 and any("lateral view" in out.get("skipped", "") for out in outcomes)
    result = classified[0]
    assert "PARU-SYS-1" not in printed and "System" not in printed

    client = dicomweb.connect(orthanc.dicomweb)
    study = str(film.StudyInstanceUID)
    by_uid = {item.sop_uid: item for item in dicomweb.study_films(client, study)}
    sr = client.retrieve_instance(study, by_uid[result["stored"]["sr"]].series_uid, result["stored"]["sr"])
    content = read_report(sr)
    classes = json.loads((DEMO_RUN / "classes.json").read_text())
    assert list(content["probabilities"]) == classes
    assert content["probabilities"] == pytest.approx(result["probabilities"], abs=1e-6)
    assert content["run_id"] == "demo-nih-cxr4" and content["label"] == result["label"]
    assert content["source_instance"] == result["file"]

    sc = client.retrieve_instance(study, by_uid[result["stored"]["sc"]].series_uid, result["stored"]["sc"])
    pixels = sc.pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.shape[1] == film.Columns
    band = pixels.shape[0] - film.Rows
    assert band > 0 and pixels[:band].max() > 200  # the burned-in label and disclaimer
    picture = pixels[band:].astype(int)
    assert np.abs(picture[..., 0] - picture[..., 2]).max() > 30  # the heatmap's colour over the film
