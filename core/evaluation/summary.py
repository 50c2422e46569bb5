"""One wording of the headline figures and of the overlap warnings, for the app, the model card and the CLI.

The three headline figures are named for what they are: the overall accuracy (share of films given the right
class), the macro-F1, and the mean one-vs-rest accuracy, which is what the paper reports as "accuracy" and is
always at least the overall accuracy. Every place that shows them takes the names, help texts and sentences
from here; only the number format differs by medium (percentages in the app and the card, four decimals on
the command line). Pure: dicts in, strings out.
"""

from __future__ import annotations

PAPER_FIGURE_NOTE = "the paper's 'accuracy' figure"

HEADLINE_FIGURES = (
    {"key": "accuracy", "short_name": "Overall accuracy", "name": "Overall accuracy",
     "help": "Share of test films whose predicted class is the true class."},
    {"key": "macro_f1", "short_name": "Macro-F1", "name": "Macro-F1",
     "help": "F1 averaged over classes with equal weight: a weak rare class pulls it down."},
    {"key": "mean_ovr_accuracy", "short_name": "Mean one-vs-rest accuracy",
     "name": f"Mean one-vs-rest accuracy ({PAPER_FIGURE_NOTE})",
     "help": "Mean over classes of (TP + TN) / n. Always at least the overall accuracy."},
)
"""key (the metrics.json figure), short_name (a table row), name (a card or a headline), help."""


def headline_figures(metrics: dict | None) -> list[dict]:
    """The three headline figures of a metrics.json dict, in HEADLINE_FIGURES order.

    Returns:
        [{"key", "short_name", "name", "help", "value": float or None, "ci95": [low, high] or None}]. Only the
        overall accuracy and the macro-F1 have bootstrap intervals; missing figures are None.
    """
    metrics = metrics or {}
    ci95 = metrics.get("ci95") or {}
    values = {"accuracy": metrics.get("accuracy"), "macro_f1": (metrics.get("macro") or {}).get("f1"),
              "mean_ovr_accuracy": metrics.get("mean_ovr_accuracy")}
    return [{**figure, "value": values[figure["key"]], "ci95": ci95.get(figure["key"])}
            for figure in HEADLINE_FIGURES]


def percent(value, missing: str = "—", digits: int = 1) -> str:
    """'93.1%', or `missing` when the value is not a number."""
    return f"{value:.{digits}%}" if isinstance(value, (int, float)) else missing


def percent_with_ci(value, interval, missing: str = "—") -> str:
    """'93.1% (95% CI 90.2%–95.4%)', or just the value when there is no interval."""
    if interval and len(interval) == 2:
        return f"{percent(value, missing)} (95% CI {interval[0]:.1%}–{interval[1]:.1%})"
    return percent(value, missing)


NO_FILMS = "—, no films"
"""How an undefined per-class figure reads: the class has no films in the evaluated set (never "0.0%")."""
_UNDEFINED_WITHOUT_FILMS = ("recall", "f1", "roc_auc")


def class_figure_text(row: dict, key: str, number=percent) -> str:
    """A per-class figure of metrics.json as text: `number(value)`, or NO_FILMS where it is undefined because
    the class has no films (recall, F1 and ROC AUC always are then; precision when it is None). Older reports
    that stored 0 for such a class read NO_FILMS too."""
    value = row.get(key)
    if row.get("support") == 0 and (key in _UNDEFINED_WITHOUT_FILMS or value is None):
        return NO_FILMS
    return number(value)


def macro_classes(metrics: dict | None) -> list[str]:
    """The classes the macro averages of a report are taken over: those with films (``macro["classes"]``,
    or, in reports written before it existed, every class with a support above 0)."""
    metrics = metrics or {}
    recorded = (metrics.get("macro") or {}).get("classes")
    if recorded is not None:
        return list(recorded)
    return [name for name, row in (metrics.get("per_class") or {}).items() if row.get("support", 1) > 0]


def macro_note(metrics: dict | None) -> str | None:
    """'Macro averages are over Normal and Pneumonia only: Cardiomegaly has no films here.' when some class
    has no films, else None (every class is averaged)."""
    classes = list((metrics or {}).get("classes") or (metrics or {}).get("per_class") or [])
    averaged = macro_classes(metrics)
    left_out = [name for name in classes if name not in averaged]
    if not left_out:
        return None
    verb = "has" if len(left_out) == 1 else "have"
    return (f"Macro averages are over {_names(averaged) or 'no class'} only: {_names(left_out)} {verb} no films "
            "here, so their recall and F1 are undefined.")


def _names(names: list[str]) -> str:
    return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]


def headline_markdown(metrics: dict) -> list[str]:
    """The headline figures as Markdown bullet lines (the model card), e.g.
    '- Overall accuracy: 93.1% (95% CI 90.2%–95.4%)'."""
    return [f"- {figure['name']}: {percent_with_ci(figure['value'], figure['ci95'], 'n/a')}"
            for figure in headline_figures(metrics)]


def headline_text(metrics: dict) -> list[str]:
    """The headline figures as plain lines with four decimals (the command line), e.g.
    'overall accuracy 0.9310 (95% CI 0.9020-0.9540)'."""
    lines = []
    for figure in headline_figures(metrics):
        name = figure["name"][0].lower() + figure["name"][1:]
        value = figure["value"]
        line = f"{name} {value:.4f}" if isinstance(value, (int, float)) else f"{name} n/a"
        if figure["ci95"]:
            line += f" (95% CI {figure['ci95'][0]:.4f}-{figure['ci95'][1]:.4f})"
        lines.append(line)
    return lines


# --------------------------------------------------------------------------------------------------
# Overlap with the run's own training and validation films
# --------------------------------------------------------------------------------------------------


def has_overlap(overlap: dict | None) -> bool:
    """Whether an evaluated folder shares films, copies of films or patients with the run's training."""
    overlap = overlap or {}
    return bool(overlap.get("identical_files") or overlap.get("shared_patients") or overlap.get("near_duplicates"))


def overlap_warning(overlap: dict | None) -> str | None:
    """The sentence that warns about overlap (core.evaluation.overlap.check_overlap), or None without any."""
    if not has_overlap(overlap):
        return None
    return (f"{overlap.get('identical_files', 0)} films are identical to training/validation films, "
            f"{overlap.get('near_duplicates', 0)} are resized or re-encoded copies of them (perceptual hash) "
            f"and {overlap.get('shared_patients', 0)} share a patient with them: this is not an independent "
            "test and the figures are optimistic.")


def perceptual_check_note(overlap: dict | None) -> str:
    """What the perceptual (resized or re-encoded copy) check compared, or why it could not be run."""
    overlap = overlap or {}
    perceptual = overlap.get("perceptual") or {}
    if perceptual.get("checked"):
        return (f"Perceptual check: {perceptual['near_duplicates']} near-duplicates among the run's "
                f"{perceptual['seen_films']} training/validation films (a Hamming distance of at most "
                f"{perceptual['threshold']} of {perceptual['bits']} bits counts as the same film).")
    return ("The perceptual check (resized or re-encoded copies) could not be run: "
            f"{perceptual.get('reason') or overlap.get('reason', 'unknown reason')}.")
