"""pandas tables of the app, pure: metrics.json dicts, predictions.csv rows or results in, a DataFrame (or
CSV bytes) out.

Nothing here draws, reads files or touches Streamlit. Percentages are worded by core.evaluation.summary,
the one owner of how headline figures read. pandas is imported inside the builders, so importing this
module stays light.
"""

from __future__ import annotations

from core.evaluation.summary import class_figure_text, headline_figures, macro_classes, percent, percent_with_ci


def fixed(value, digits: int = 3) -> str:
    """'0.123', or '—' when the value is not a number."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "—"


def _headline_column(metrics: dict) -> dict:
    return {figure["short_name"]: percent_with_ci(figure["value"], figure["ci95"])
            for figure in headline_figures(metrics)}


def _dataset_name(run) -> str:
    root = (run.data_report or {}).get("root")
    return str(root).rstrip("/").rsplit("/", 1)[-1] if root else "?"


def compare_table(runs: list):
    """Dataset, classes, headline metrics and recipe of several runs (core.runs.registry.Run) side by side,
    one column each."""
    import pandas as pd

    columns = {}
    for run in runs:
        metrics = run.metrics or {}
        columns[run.run_id] = {
            "Dataset": _dataset_name(run),
            "Classes": ", ".join(metrics.get("classes") or run.classes),
            "Test films": metrics.get("n"),
            **_headline_column(metrics),
            "Preset": run.config.get("preset"),
            "Alpha": run.config.get("alpha"),
            "Image size": run.config.get("image_size"),
            "Epochs run": (metrics.get("training") or {}).get("epochs_run"),
            "ECE test (after calibration)": fixed((metrics.get("calibration") or {}).get("ece_test_after")),
        }
    return pd.DataFrame(columns).astype(str)


def compare_warning(runs: list) -> str | None:
    """A warning when runs were tested on different data (another dataset folder, other classes or another
    number of test films), so their figures do not compare; None when they match."""
    differences = []
    if len({_dataset_name(run) for run in runs}) > 1:
        differences.append("different dataset folders")
    if len({tuple((run.metrics or {}).get("classes") or run.classes) for run in runs}) > 1:
        differences.append("different classes")
    if len({(run.metrics or {}).get("n") for run in runs}) > 1:
        differences.append("different numbers of test films")
    if not differences:
        return None
    return ("These runs were tested on different data (" + ", ".join(differences) + "): their figures are not "
            "comparable. Evaluate both on one folder (External validation) to compare them.")


def external_vs_internal(internal: dict, external: dict):
    """Headline figures and per-class recall of the internal test set and an external folder, side by side."""
    import pandas as pd

    def column(metrics):
        values = {"Films": metrics.get("n"), **_headline_column(metrics),
                  "Macro averages over": ", ".join(macro_classes(metrics)) or "—"}
        for name, row in (metrics.get("per_class") or {}).items():
            values[f"Recall {name}"] = class_figure_text(row, "recall")
        return values

    return pd.DataFrame({"Internal test": column(internal), "External": column(external)}).astype(str)


def distribution_table(data_report: dict | None):
    """The paper's Table 1: films per class (rows) and subset (columns), with totals."""
    import pandas as pd

    subsets = (data_report or {}).get("subsets") or {}
    if not subsets:
        counts = (data_report or {}).get("class_counts") or {}
        return pd.DataFrame({"Total": counts}) if counts else pd.DataFrame()
    table = pd.DataFrame(subsets).fillna(0).astype(int)
    table = table[[name for name in ("train", "val", "test") if name in table.columns]]
    table["Total"] = table.sum(axis=1)
    table.loc["Total"] = table.sum(axis=0)
    return table


def counts_table(metrics: dict):
    """TP / FP / FN / TN and support per class."""
    import pandas as pd

    return pd.DataFrame({name: {"TP": row["tp"], "FP": row["fp"], "FN": row["fn"], "TN": row["tn"],
                                "Support": row["support"]}
                         for name, row in metrics["per_class"].items()}).T


PER_CLASS_COLUMNS = {"Precision": "precision", "Recall": "recall", "F1": "f1",
                     "One-vs-rest accuracy": "ovr_accuracy", "ROC AUC": "roc_auc"}


def per_class_table(metrics: dict):
    """Precision, recall, F1, one-vs-rest accuracy and ROC AUC per class, as text with three decimals; a
    figure that is undefined because the class has no films reads "—, no films" (never 0)."""
    import pandas as pd

    return pd.DataFrame({name: {column: class_figure_text(row, key, fixed) for column, key in PER_CLASS_COLUMNS.items()}
                         for name, row in metrics["per_class"].items()}).T


def calibration_table(metrics: dict):
    """Temperature and expected calibration error (core.evaluation.calibration.ECE_DEFINITION) before/after,
    or None when not recorded."""
    import pandas as pd

    calibration = metrics.get("calibration") or {}
    if not calibration:
        return None
    return pd.DataFrame({
        "Figure": ["Temperature", "ECE validation, before", "ECE validation, after",
                   "ECE test, before", "ECE test, after"],
        "Value": [fixed(calibration.get(key)) for key in
                  ("temperature", "ece_val_before", "ece_val_after", "ece_test_before", "ece_test_after")],
    })


def skipped_table(skipped: list[dict]):
    """The files a folder check or an evaluation skipped, each with its reason."""
    import pandas as pd

    return pd.DataFrame({"File": [item.get("path", "?") for item in skipped],
                         "Reason": [item.get("reason", "") for item in skipped]})


def near_duplicate_table(matches: list[dict]):
    """Evaluated films that are resized or re-encoded copies of training films, with their distance."""
    import pandas as pd

    return pd.DataFrame({"Evaluated film": [m["file"] for m in matches],
                         "Training/validation film": [m["seen_file"] for m in matches],
                         "Hamming distance": [m["distance"] for m in matches]})


def mixup_name(row: dict) -> str:
    """'true → predicted' of a predictions.csv row."""
    return f"{row['label']} → {row['predicted']}"


def default_mixups(options: list[str], classes: list[str]) -> list[str]:
    """Normal→Pneumonia and Pneumonia→Normal (those of them in `options`) when the run has both classes,
    else every mix-up."""
    if "Normal" in classes and "Pneumonia" in classes:
        return [name for name in ("Normal → Pneumonia", "Pneumonia → Normal") if name in options]
    return list(options)


def mixup_counts(wrong: list[dict]):
    """How many test films went each wrong way (true → predicted)."""
    import pandas as pd

    counts: dict[str, int] = {}
    for row in wrong:
        counts[mixup_name(row)] = counts.get(mixup_name(row), 0) + 1
    return pd.DataFrame({"Mix-up (true → predicted)": list(counts), "Films": list(counts.values())})


_REGIONS = (("central", "Central lung fields"), ("border", "Border band"), ("corners", "Corners"))


def cam_region_table(regions: dict):
    """Mean Grad-CAM mass shares of right and wrong answers, and of a uniform map, from cam_regions.json."""
    import pandas as pd

    summary, uniform = regions.get("summary") or {}, regions.get("uniform") or {}

    def row(name, group):
        return {"": name, "Films": group.get("n", ""),
                **{label: percent(group.get(f"mean_{key}")) for key, label in _REGIONS}}

    return pd.DataFrame([row("Right answers", summary.get("correct") or {}),
                         row("Wrong answers", summary.get("wrong") or {}),
                         {"": "Uniform map (area shares)", "Films": "",
                          **{label: percent(uniform.get(key)) for key, label in _REGIONS}}]).astype(str)


def flagged_films_table(flagged: list[dict]):
    """The films whose Grad-CAM mass lies mostly on the border band (cam_regions.json's flagged list)."""
    import pandas as pd

    return pd.DataFrame({"File": [f["file"] for f in flagged], "True": [f["label"] for f in flagged],
                         "Predicted": [f["predicted"] for f in flagged],
                         "Border share": [percent(f["border"]) for f in flagged],
                         "Corners share": [percent(f["corners"]) for f in flagged]})


def conformal_table(section: dict | None):
    """The prediction sets on the test split (metrics.json "conformal"): coverage and mean set size over all
    films, then per class (a small class may fall below the level: the promise is over all films), or None
    without a section."""
    import pandas as pd

    if not isinstance(section, dict):
        return None
    rows = [("All test films", section.get("n"), section.get("coverage"), section.get("mean_set_size"))]
    rows += [(name, item.get("n"), item.get("coverage"), item.get("mean_set_size"))
             for name, item in (section.get("per_class") or {}).items() if isinstance(item, dict)]
    return pd.DataFrame({"Films": [name for name, *_ in rows],
                         "n": [str(n) if isinstance(n, int) else "—" for _, n, _, _ in rows],
                         "Coverage": [percent(coverage) for _, _, coverage, _ in rows],
                         "Mean set size": [fixed(size, 2) for *_, size in rows]})
