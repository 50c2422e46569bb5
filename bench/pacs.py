"""PACS round trip on this machine: a real Orthanc (Debian's, on loopback), the shipped demo run.

    python bench/pacs.py [--model RUN_DIR] [--repeats 3]

Uploads a 1-film study and a 20-film study (DX films made from ../shared/data/samples, or synthetic films
where that folder is absent), then times, with the model already loaded (warm), what `python -m core pacs
--store` does per study: QIDO-RS search, series metadata, WADO-RS fetch of every film, classification with
Grad-CAM, the SR and the Secondary Capture built and stored with STOW-RS. Also times the same without
--store (search, fetch, classify). Writes bench/results/pacs.json (median of the repeats; each repeat
classifies the study again and stores another pair of results per film).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "tests"))
SAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "samples"


def films(count: int) -> tuple[list[np.ndarray], str]:
    paths = sorted(SAMPLES.glob("*/*.png"))[:count] if SAMPLES.is_dir() else []
    if len(paths) == count:
        return [np.asarray(Image.open(path).convert("L")) for path in paths], f"{SAMPLES.name} (256 px PNG)"
    from pacs_fixture import synthetic_film

    return [synthetic_film(256, seed=seed, bits=12) for seed in range(count)], "synthetic 12-bit 256 px"


def upload_study(orthanc, pixels: list[np.ndarray], accession: str) -> str:
    from pydicom.uid import generate_uid

    from pacs_fixture import dicom_film

    study, series = generate_uid(), generate_uid()
    for number, image in enumerate(pixels, start=1):
        orthanc.upload(dicom_film(image, accession=accession, study_uid=study, series_uid=series,
                                  instance_number=number))
    return study


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(PROJECT_ROOT / "models" / "demo-nih-cxr4"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from core.hospital import dicomweb
    from core.hospital.pacs import classify_study, find_study_uids
    from core.serving.predict import Predictor
    from core.settings import configure_keras_home
    from pacs_fixture import running_orthanc

    configure_keras_home()
    started = time.perf_counter()
    predictor = Predictor(args.model)
    load_seconds = time.perf_counter() - started
    results = {"model": Path(args.model).name, "engine": predictor.engine, "model_load_s": round(load_seconds, 2),
               "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs", "studies": {}}
    with tempfile.TemporaryDirectory() as folder, running_orthanc(Path(folder)) as orthanc:
        client = dicomweb.connect(orthanc.dicomweb)
        for count in (1, 20):
            pixels, source = films(count)
            accession = f"BENCH-{count}"
            upload_study(orthanc, pixels, accession)
            figures = {}
            for store in (False, True):
                samples = []
                for _ in range(args.repeats):
                    begun = time.perf_counter()
                    (study,) = find_study_uids(client, accession=accession)
                    films_of = [film for film in dicomweb.study_films(client, study) if film.skip_reason is None]
                    outcomes = list(classify_study(predictor, client, study, store=store, films=films_of))
                    samples.append(time.perf_counter() - begun)
                    assert sum("label" in out for out, _, _ in outcomes) == count, outcomes
                key = "search_fetch_classify_store_s" if store else "search_fetch_classify_s"
                figures[key] = round(statistics.median(samples), 3)
                figures[key[:-2] + "_per_film_s"] = round(statistics.median(samples) / count, 3)
            results["studies"][f"{count}_film"] = {"films": count, "film_source": source, **figures}
    results["repeats"] = args.repeats
    out = PROJECT_ROOT / "bench" / "results" / "pacs.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
