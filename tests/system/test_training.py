"""Training for real: on real films with the patient-aware split (the distributed strategies:
test_multiworker.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CLASS_NAMES, SHARED_DATA, tiny_config


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir(), reason="../shared/data/samples is absent")
def test_end_to_end_on_real_films_with_patient_aware_split(tmp_path):
    from core.runs.artifacts import read_split_csv
    from core.serving.predict import Predictor
    from core.training.run import train_run

    run_dir = train_run(SHARED_DATA / "samples", tiny_config(image_size=96, epochs=1),
                        models_dir=tmp_path, log=lambda line: None)
    rows = read_split_csv(run_dir / "split.csv")
    assert len(rows) == 40
    subsets_of_patient = {}
    for row in rows:
        subsets_of_patient.setdefault(row["patient_id"], set()).add(row["subset"])
    assert all(len(s) == 1 for s in subsets_of_patient.values())
    film = next((SHARED_DATA / "samples" / "Pneumothorax").glob("*.png"))
    result = Predictor(run_dir).predict(film, with_cam=True, display=True)
    assert result.error is None and result.label in CLASS_NAMES
    assert result.gray.ndim == 2 and np.isfinite(result.cam).all()

