"""One film's result as the Predict page, its CSV download and `python -m core predict --json` present it.

Contracts every output keeps:
- The gate is honoured: a film the gate refused (core.serving.predict.Prediction.gate not passed) has no
  label, confidence, probabilities or prediction set, only the gate's verdict {"passed", "kind", "reason"};
  the model's raw output is given only on request and marked as such ("raw" in the JSON, a "raw_output"
  cell beginning "RAW" in the CSV).
- An uncertain answer (a prediction set of more than one class, or, for a run without sets, a low top
  probability) is said as the classes it cannot tell apart, "Normal or Pneumonia (90% set)", never as one label.
- Every result carries its model's context (core.runs.context.ModelContext).
- CSV cells that a spreadsheet would read as a formula are neutralised (core.csvsafe.neutralise), so an
  upload named "=HYPERLINK(...).png" stays text.

The prediction set, its level and the similar training films are read from the Prediction as the Predictor
gives them (`prediction_set`, `set_level`, `uncertain`, `similar`); nothing here computes them.
Nothing here imports TensorFlow or Streamlit.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from core.csvsafe import neutralise
from core.runs.context import ModelContext

LOW_CONFIDENCE = 0.6
"""For a run without prediction sets: a top probability below this is shown as uncertain (the top two classes,
and any other at least half as probable as the top one)."""
FLAT_CAM_RANGE = 0.1
"""A heatmap whose values span less than this (of its [0, 1] range) says nothing about where the model looked."""
FLAT_CAM_NOTE = ("The model's map is flat for this film: the heatmap shows no region the answer depends on "
                 "more than another, so it explains nothing here.")
RAW_NOTE = "RAW output of a refused film, not a diagnosis"
"""How every output marks the raw output of a film the gate refused (given only on request)."""
GATE_KINDS = ("ok", "not_a_chest_film", "unlike_training_films")
"""The gate verdict's kinds every output may carry (a gate may add others, such as a mis-prepared film)."""


def gate_verdict(prediction) -> dict | None:
    """{"passed", "kind", "reason"} of the film's gate, or None when the film was not gated.

    A gate that gives no kind (the first gate version) is read as "ok" when it passed and "not_a_chest_film"
    when it did not, which is all that version could say."""
    gate = getattr(prediction, "gate", None)
    if gate is None:
        return None
    data = gate.to_json() if hasattr(gate, "to_json") else dict(gate)
    passed = bool(data.get("passed"))
    kind = data.get("kind") or getattr(gate, "kind", None) or ("ok" if passed else "not_a_chest_film")
    return {"passed": passed, "kind": str(kind), "reason": str(data.get("reason") or "")}


def is_refused(prediction) -> bool:
    """True when the gate refused the film: no diagnosis may be given for it."""
    verdict = gate_verdict(prediction)
    return verdict is not None and not verdict["passed"]


def answer_set(prediction) -> tuple[list[str], float | None]:
    """(classes the answer cannot tell apart, most probable first; the set's level or None).

    The Predictor's prediction set when it gives one; otherwise the top class alone, or, when its probability
    is below LOW_CONFIDENCE, the top two classes and any other at least half as probable as the top (level
    None)."""
    members = getattr(prediction, "prediction_set", None)
    if members:
        level = getattr(prediction, "set_level", None)
        return list(members), float(level) if isinstance(level, (int, float)) else None
    if prediction.label is None:
        return [], None
    if (prediction.confidence or 0.0) >= LOW_CONFIDENCE:
        return [prediction.label], None
    ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])
    return [name for index, (name, p) in enumerate(ranked) if index < 2 or p >= prediction.confidence / 2], None


def is_uncertain(prediction) -> bool:
    """True when the answer is more than one class (see answer_set)."""
    flag = getattr(prediction, "uncertain", None)
    if isinstance(flag, bool) and getattr(prediction, "prediction_set", None):
        return flag
    return len(answer_set(prediction)[0]) > 1


def answer_text(prediction) -> str:
    """"Pneumonia", or for an uncertain answer "Normal or Pneumonia (90% set)" / "... (low confidence)"."""
    members, level = answer_set(prediction)
    if len(members) <= 1:
        return members[0] if members else ""
    names = ", ".join(members[:-1]) + f" or {members[-1]}"
    return f"{names} ({level:.0%} set)" if level is not None else f"{names} (low confidence)"


def cam_is_flat(cam) -> bool:
    """True when a heatmap (values in [0, 1]) is missing, not finite or spans less than FLAT_CAM_RANGE."""
    if cam is None:
        return True
    cam = np.asarray(cam, dtype=np.float32)
    if cam.size == 0 or not np.isfinite(cam).all():
        return True
    return float(cam.max() - cam.min()) < FLAT_CAM_RANGE


def similar_cases(prediction) -> list[dict]:
    """The Predictor's nearest training films [{"file", "label", "distance"}] ([] when the run has none or
    the film was refused: neighbours of an image that is no film of this population mean nothing)."""
    if prediction.error or is_refused(prediction):
        return []
    return [dict(item) for item in (getattr(prediction, "similar", None) or ())]


def raw_output(prediction) -> dict[str, float]:
    """The model's output for a film, class -> probability rounded to 6 places: the softmax before temperature
    scaling when the Predictor gives it, else the probabilities. What a refused film's "raw" output shows, in
    every format, once it is asked for."""
    return _rounded(getattr(prediction, "raw_probabilities", None) or prediction.probabilities)


def result_json(prediction, context: ModelContext) -> dict:
    """The `predict --json` object of one film: Prediction.to_json() with the gate honoured, the answer's set,
    the similar training films, "run" (the run id) and "model" (ModelContext.to_json())."""
    out = prediction.to_json()
    out["run"] = context.run_id
    out["model"] = context.to_json()
    if prediction.error:
        return out
    verdict = gate_verdict(prediction)
    if verdict is not None:
        out["gate"] = verdict
    if is_refused(prediction):
        out.update(label=None, confidence=None, prediction_set=None, set_level=None, uncertain=None)
        out.pop("probabilities", None)
        out.pop("similar", None)
        out["raw"] = {"note": "The model's output for a film the gate refused; not a diagnosis.",
                      "probabilities": raw_output(prediction)}
        return out
    members, level = answer_set(prediction)
    out.update(prediction_set=members, set_level=level, uncertain=is_uncertain(prediction))
    out["similar"] = similar_cases(prediction)
    return out


def csv_row(prediction, sha256: str, time: str, context: ModelContext, class_names: list[str],
            raw_shown: bool = False) -> dict:
    """One film's CSV row (see results_csv for the columns)."""
    verdict = gate_verdict(prediction)
    refused = is_refused(prediction)
    answered = prediction.error is None and not refused
    members, level = answer_set(prediction) if answered else ([], None)
    row = {"time": time, "run_id": context.run_id, "sha256": sha256, "file": prediction.file,
           "engine": prediction.engine, "gate_passed": None if verdict is None else verdict["passed"],
           "gate_kind": None if verdict is None else verdict["kind"],
           "gate_reason": None if verdict is None else verdict["reason"], "error": prediction.error,
           "label": prediction.label if answered else None,
           "confidence": round(prediction.confidence, 6) if answered else None,
           "prediction_set": " | ".join(members) if answered else None, "set_level": level,
           "uncertain": is_uncertain(prediction) if answered else None,
           "calibrated": prediction.calibrated if answered else None, "seconds": round(prediction.seconds, 3)}
    for name in class_names:
        row[f"p_{name}"] = round(prediction.probabilities[name], 6) if answered else None
    row["raw_output"] = None
    if refused and raw_shown and prediction.error is None:
        row["raw_output"] = f"{RAW_NOTE}: " + "; ".join(
            f"{name} {p:.4f}" for name, p in raw_output(prediction).items())
    model = context.to_json()
    row.update(model_dataset=model["dataset"], model_training_films=model["training_films"],
               model_test_accuracy=model["test_accuracy"], model_test_accuracy_ci95=_pair_text(model["test_accuracy_ci95"]),
               model_macro_f1=model["macro_f1"], model_macro_f1_ci95=_pair_text(model["macro_f1_ci95"]),
               model_warning=model["warning"])
    return row


def results_csv(rows: list[dict]) -> bytes:
    """CSV bytes of csv_row rows: time, run_id, sha256, file, engine, gate_passed, gate_kind, gate_reason,
    error, label, confidence, prediction_set, set_level, uncertain, calibrated, seconds, one p_<class> column
    per class, raw_output, then the model's context (model_dataset, model_training_films, model_test_accuracy
    and _ci95, model_macro_f1 and _ci95, model_warning). Empty cells for what a film does not have; every cell
    neutralised (core.csvsafe.neutralise)."""
    buffer = io.StringIO()
    columns = list(rows[0]) if rows else ["time", "run_id", "sha256", "file", "gate_kind", "label"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if value is None else neutralise(value)) for key, value in row.items()})
    return buffer.getvalue().encode()


def _rounded(probabilities: dict) -> dict:
    return {name: round(float(p), 6) for name, p in probabilities.items() if math.isfinite(float(p))}


def _pair_text(pair) -> str | None:
    return None if pair is None else f"{pair[0]:.4f}-{pair[1]:.4f}"
