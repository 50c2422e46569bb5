"""What every result says about the model that gave it: which run, trained on what population, knowing which
classes, how good it was on its test split, and whether it is only a demonstration or weak.

A prediction read without this is easy to over-trust: "Normal 45.8%" from a model at chance on the diagnoses
that matter reads the same as from a good one. The Predict page, its CSV and `python -m core predict --json`
all show `model_context(run)`, so the three never disagree.

Nothing here imports TensorFlow or Streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from core.runs.registry import SHIPPED_RUN_PREFIX, Run

WEAK_MACRO_F1 = 0.7
"""A run whose test macro-F1 is below this is called weak on every result it gives (the bar a lecturer can
show to clinicians without apology is higher; below it most films of some class are missed)."""

KNOWN_SOURCES = {
    "nih-cxr4": "NIH ChestX-ray14 (NIH Clinical Center), adult frontal films",
    "samples": "NIH ChestX-ray14 (NIH Clinical Center), adult frontal films",
    "pediatric-pneumonia": "Guangzhou Women and Children's Medical Center, paediatric films (Kermany et al., 2018)",
}
"""Where the datasets this project knows by folder name come from; a run may say so itself ("source" in its
config.json or data_report.json), which wins."""


@dataclass(frozen=True)
class ModelContext:
    """The model behind a result.

    run_id; dataset: the training folder's name (never a path of the machine that trained it); training_films:
    films in the training split (None when the run does not record it); source: where the films come from
    ("" when unknown); classes; accuracy, macro_f1: test figures with their 95% intervals ([low, high] or
    None); test_films; demo: a run shipped or marked as a demonstration; weak: test macro-F1 below
    WEAK_MACRO_F1, or no test figures at all.
    """

    run_id: str
    dataset: str
    training_films: int | None
    source: str
    classes: tuple[str, ...]
    accuracy: float | None
    accuracy_ci95: tuple[float, float] | None
    macro_f1: float | None
    macro_f1_ci95: tuple[float, float] | None
    test_films: int | None
    demo: bool
    weak: bool

    def population(self) -> str:
        """"nih-cxr4, 162 training films (NIH ChestX-ray14 ...)"."""
        films = f", {self.training_films} training films" if self.training_films is not None else ""
        source = f" ({self.source})" if self.source else ""
        return f"{self.dataset or 'unknown dataset'}{films}{source}"

    def figures(self) -> str:
        """"test accuracy 38.2% (95% CI 23.5–55.9%), macro-F1 19.8% (95% CI 11.0–30.9%) on 34 films"."""
        if self.accuracy is None:
            return "no test figures recorded"
        parts = [f"test accuracy {_figure(self.accuracy, self.accuracy_ci95)}"]
        if self.macro_f1 is not None:
            parts.append(f"macro-F1 {_figure(self.macro_f1, self.macro_f1_ci95)}")
        films = f" on {self.test_films} films" if self.test_films else ""
        return ", ".join(parts) + films

    def warning(self) -> str | None:
        """The banner a result of this run carries, or None for a run that is neither a demo nor weak."""
        if not (self.demo or self.weak):
            return None
        what = "a demonstration model" if self.demo else "a weak model"
        if self.macro_f1 is None:
            why = "it records no test macro-F1"
        elif self.weak:
            why = f"its test macro-F1 is {self.macro_f1:.0%}, below {WEAK_MACRO_F1:.0%}"
        else:
            why = f"its test macro-F1 is {self.macro_f1:.0%}"
        return (f"This is {what}: {why}. Its answers show how the tool works; they are no reading of the film. "
                "Do not use them for any patient.")

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "dataset": self.dataset, "training_films": self.training_films,
                "source": self.source or None, "classes": list(self.classes),
                "test_accuracy": _rounded(self.accuracy), "test_accuracy_ci95": _rounded_pair(self.accuracy_ci95),
                "macro_f1": _rounded(self.macro_f1), "macro_f1_ci95": _rounded_pair(self.macro_f1_ci95),
                "test_films": self.test_films, "demo": self.demo, "weak": self.weak, "warning": self.warning()}


def model_context(run: Run) -> ModelContext:
    """The context of a run, from its config, data report and metrics (each may be missing in an old run)."""
    config = run.config if isinstance(run.config, dict) else {}
    report = run.data_report or {}
    metrics = run.metrics or {}
    dataset = Path(str(report.get("root") or config.get("dataset") or "")).name
    train = (report.get("subsets") or {}).get("train")
    training_films = sum(v for v in train.values() if _is_number(v)) if isinstance(train, dict) else None
    source = str(config.get("source") or report.get("source") or KNOWN_SOURCES.get(dataset, ""))
    ci95 = metrics.get("ci95") if isinstance(metrics.get("ci95"), dict) else {}
    macro = metrics.get("macro") if isinstance(metrics.get("macro"), dict) else {}
    accuracy, macro_f1 = _number(metrics.get("accuracy")), _number(macro.get("f1"))
    # A run is marked as a demonstration in its status.json ("demo": true, as the shipped runs are); the
    # config holds only the recipe, which the model card reloads strictly.
    status = run.status if isinstance(run.status, dict) else {}
    demo = run.run_id.startswith(SHIPPED_RUN_PREFIX) or status.get("demo") is True
    return ModelContext(
        run_id=run.run_id, dataset=dataset, training_films=training_films, source=source,
        classes=tuple(run.classes), accuracy=accuracy, accuracy_ci95=_pair(ci95.get("accuracy")),
        macro_f1=macro_f1, macro_f1_ci95=_pair(ci95.get("macro_f1")),
        test_films=int(metrics["n"]) if _is_number(metrics.get("n")) else None,
        demo=demo, weak=macro_f1 is None or macro_f1 < WEAK_MACRO_F1)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value) -> float | None:
    return float(value) if _is_number(value) else None


def _pair(value) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def _figure(value: float, interval: tuple[float, float] | None) -> str:
    return f"{value:.1%}" + (f" (95% CI {interval[0]:.1%}–{interval[1]:.1%})" if interval else "")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _rounded_pair(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [round(pair[0], 4), round(pair[1], 4)]
