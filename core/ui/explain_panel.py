"""Whether a run's heatmaps are faithful, where the heatmaps are read: the report on the Evaluation page, and
the run's verdict beside every heatmap on Predict and Review (a warning where the maps were no better than
random). The report is core.explain.faithfulness's, read with core.runs.registry.load_explain_check (the run
folder's explain_check.json, or a shipped run's newer check from the user data dir)."""

from __future__ import annotations

import streamlit as st

from core.explain.methods import METHOD_LABELS
from core.runs.registry import load_explain_check
from core.ui import figures

CHECK_COMMAND = "python -m core explain-check --model {run}"
CAM_METHOD_LABELS = {label: method for method, label in METHOD_LABELS.items()}
"""The Explanation choices of Predict and Review: label shown -> core.explain.methods method."""


def explain_check_section(run) -> None:
    """The Evaluation page's section: the verdict, the deletion and insertion curves (map order against
    random order), the cascading randomisation and the class sensitivity, or how to compute them."""
    report = load_explain_check(run.path)
    if report is None:
        st.info("The heatmaps of this run have not been checked yet. Run `"
                + CHECK_COMMAND.format(run=run.path) + "` (a few minutes) and reload this page.")
        return
    verdict = report["verdict"]
    (st.success if verdict.get("faithful") else st.warning)(verdict.get("text", ""))
    for warning in verdict.get("warnings", []):
        st.warning(warning)
    st.plotly_chart(figures.faithfulness_curves(report))
    steps = ", ".join(f"{step['step']} {_number(step.get('spearman'))}" for step in report.get("randomisation", []))
    st.caption(
        f"{report.get('method_label')} at `{report.get('layer')}`, {report.get('n_films')} test films, "
        f"{report.get('grid')} x {report.get('grid')} cells ({report.get('replacement_text')}), "
        f"{report.get('random_orders')} random orders per film. Cascading randomisation, Spearman of the trained "
        f"and the randomised model's maps (near 0 is right): {steps}. Class sensitivity, Spearman of the "
        f"predicted and the runner-up class's maps: {_number((report.get('class_sensitivity') or {}).get('spearman'))}."
    )


def verdict_note(column, run_path: str, method: str) -> None:
    """Under a heatmap: the run's verdict on its maps, as a warning when they were no better than random."""
    report = load_explain_check(run_path)
    if report is None:
        column.caption("These heatmaps have not been checked for faithfulness on this run (Evaluation page).")
    elif report.get("method") != method:
        column.caption(f"Faithfulness was checked for {report.get('method_label')}, not for "
                       f"{METHOD_LABELS.get(method, method)}: {report['verdict'].get('text', '')}")
    elif report["verdict"].get("faithful"):
        column.caption(report["verdict"].get("text", ""))
    else:
        column.warning(" ".join([report["verdict"].get("text", ""), *report["verdict"].get("warnings", [])]))


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"
