"""One film's result as the page's CSV and `predict --json` give it: the gate honoured, uncertainty said,
the model's context on every row, no formula a spreadsheet would run."""

import csv
import io

import numpy as np

from core.runs.context import model_context
from core.runs.registry import load_run
from core.serving.gate import GateResult
from core.serving.predict import Prediction
from core.csvsafe import neutralise
from core.serving.results import answer_text, cam_is_flat, csv_row, is_uncertain, result_json, results_csv
from core.settings import PROJECT_ROOT

CLASSES = ["Normal", "Pneumonia"]
CONTEXT = model_context(load_run(PROJECT_ROOT / "models" / "demo-nih-cxr4"))


def _prediction(file="film.png", probabilities=(0.8, 0.2), gate=True, **extra) -> Prediction:
    probabilities = dict(zip(CLASSES, probabilities))
    label = max(probabilities, key=probabilities.get)
    prediction = Prediction(file, label, probabilities[label], probabilities, dict(probabilities), engine="Keras",
                            gate=GateResult(gate, "ok" if gate else "Colour photograph."), seconds=0.01)
    for name, value in extra.items():
        setattr(prediction, name, value)
    return prediction


def _rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_a_refused_film_has_no_label_in_the_csv_or_the_json_only_the_gate_verdict():
    refused = _prediction("colour_astronaut.jpg", (0.015, 0.985), gate=False)
    row = _rows(results_csv([csv_row(refused, "ab" * 32, "2026-12-01T00:00:00+00:00", CONTEXT, CLASSES)]))[0]
    assert row["label"] == row["confidence"] == row["prediction_set"] == row["p_Pneumonia"] == ""
    assert row["gate_passed"] == "False" and row["gate_kind"] == "not_a_chest_film" and row["gate_reason"]
    assert row["run_id"] == CONTEXT.run_id and row["sha256"] == "ab" * 32 and row["engine"] == "Keras"
    assert row["time"] and row["model_dataset"] == "nih-cxr4" and row["model_warning"]
    assert "Pneumonia" not in row["raw_output"]
    shown = _rows(results_csv([csv_row(refused, "ab" * 32, "t", CONTEXT, CLASSES, raw_shown=True)]))[0]
    assert shown["label"] == "" and shown["raw_output"].startswith("RAW") and "Pneumonia 0.9850" in shown["raw_output"]

    out = result_json(refused, CONTEXT)
    assert out["label"] is None and out["confidence"] is None and "probabilities" not in out
    assert out["gate"] == {"passed": False, "kind": "not_a_chest_film", "reason": "Colour photograph."}
    assert out["raw"]["probabilities"]["Pneumonia"] == 0.985 and "not a diagnosis" in out["raw"]["note"]
    assert out["run"] == CONTEXT.run_id and out["model"]["dataset"] == "nih-cxr4"


def test_an_answered_film_carries_its_set_its_context_and_its_similar_films():
    similar = ({"file": "Normal/1.png", "label": "Normal", "distance": 0.1},)
    prediction = _prediction(prediction_set=["Normal", "Pneumonia"], set_level=0.9, uncertain=True, similar=similar)
    out = result_json(prediction, CONTEXT)
    assert out["label"] == "Normal" and out["prediction_set"] == ["Normal", "Pneumonia"] and out["set_level"] == 0.9
    assert out["uncertain"] is True and out["similar"] == list(similar)
    assert out["gate"]["kind"] == "ok" and out["model"]["macro_f1_ci95"]
    row = _rows(results_csv([csv_row(prediction, "cd" * 32, "t", CONTEXT, CLASSES)]))[0]
    assert row["label"] == "Normal" and row["prediction_set"] == "Normal | Pneumonia" and row["uncertain"] == "True"


def test_an_uncertain_answer_names_the_classes_it_cannot_tell_apart():
    assert answer_text(_prediction(prediction_set=["Normal", "Pneumonia"], set_level=0.9)) == \
        "Normal or Pneumonia (90% set)"
    assert answer_text(_prediction(prediction_set=["Normal"], set_level=0.9)) == "Normal"
    assert not is_uncertain(_prediction(prediction_set=["Normal"], set_level=0.9, uncertain=False))
    # A run without sets: a low top probability is uncertain too.
    low = _prediction(probabilities=(0.45, 0.55))
    assert is_uncertain(low) and answer_text(low) == "Pneumonia or Normal (low confidence)"
    assert answer_text(_prediction(probabilities=(0.9, 0.1))) == "Normal"
    four = Prediction("f.png", "Normal", 0.5, {"Normal": 0.5, "Pneumonia": 0.08, "Cardiomegaly": 0.23,
                                               "Pneumothorax": 0.19})
    assert answer_text(four) == "Normal or Cardiomegaly (low confidence)"  # Below 60%: never one label.


def test_cells_a_spreadsheet_would_run_as_formulas_are_neutralised():
    for name in ("=HYPERLINK(\"http://x\",\"y\").png", "+1.png", "-2.png", "@SUM(A1).png", "\tx.png"):
        assert neutralise(name).startswith("'")
    assert neutralise("film.png") == "film.png" and neutralise(-0.5) == -0.5
    text = results_csv([csv_row(_prediction("=HYPERLINK(\"http://evil\").png"), "ef" * 32, "t", CONTEXT,
                                CLASSES)]).decode()
    assert _rows(text.encode())[0]["file"].startswith("'=")
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in csv.reader(io.StringIO(text)) for cell in row)


def test_a_flat_or_empty_heatmap_is_recognised():
    assert cam_is_flat(None) and cam_is_flat(np.zeros((7, 7))) and cam_is_flat(np.full((7, 7), 0.5))
    assert cam_is_flat(np.full((7, 7), np.nan))
    peaked = np.zeros((7, 7))
    peaked[3, 3] = 1.0
    assert not cam_is_flat(peaked)
