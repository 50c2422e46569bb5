"""The heatmap faithfulness report where heatmaps are read: the Evaluation page's section with its curves, and
the run's verdict beside the heatmap on Predict (a warning where the maps are no better than random). The
report is written by hand here; core.explain.faithfulness computes real ones (tests/pipeline)."""

from __future__ import annotations

from app.conftest import chart_specs, open_page, png_bytes, texts
from core.explain.faithfulness import verdict
from core.runs.artifacts import EXPLAIN_CHECK_FILE_NAME, write_json_atomic
from core.ui import navigation

FRACTIONS = [0.0, 0.25, 0.5, 0.75, 1.0]


def write_report(run, *, ratio: float, low: float) -> dict:
    curve = {"fractions": FRACTIONS, "curve_map": [0.9, 0.5, 0.4, 0.3, 0.3], "curve_random": [0.9, 0.7, 0.5, 0.4, 0.3]}
    report = {
        "method": "gradcam", "method_label": "Grad-CAM (fast)", "layer": "out_relu", "n_films": 8, "grid": 7,
        "replacement_text": "each deleted cell is replaced by the mean pixel value of its own film",
        "random_orders": 3,
        "deletion": {"map_auc": 0.5 * ratio, "random_auc": 0.5, "ratio": ratio, "difference_ci95": [low, low + 0.1],
                     **curve},
        "insertion": {"map_auc": 0.6, "random_auc": 0.5, **curve},
        "randomisation": [{"step": "head", "spearman": 0.1}, {"step": "block_14", "spearman": 0.05}],
        "class_sensitivity": {"spearman": -0.4},
    }
    report["verdict"] = verdict(report)
    write_json_atomic(run.path / EXPLAIN_CHECK_FILE_NAME, report)
    return report


def test_evaluation_says_how_to_check_and_then_shows_the_report(run_copy):
    at = open_page(navigation.EVALUATION.script)
    assert not at.exception, at.exception
    assert "Are the heatmaps faithful?" in texts(at.subheader)
    assert "python -m core explain-check --model" in texts(at.info)
    report = write_report(run_copy, ratio=0.6, low=0.05)
    at = open_page(navigation.EVALUATION.script)
    assert not at.exception, at.exception
    assert report["verdict"]["text"] in texts(at.success)
    assert "Deletion (lower is better)" in chart_specs(at) and "random order" in chart_specs(at)
    assert "block_14 0.05" in texts(at.caption)


def test_predict_warns_beside_the_heatmap_when_the_maps_are_no_better_than_random(with_run):
    report = write_report(with_run, ratio=1.02, low=-0.05)
    try:  # On the tier's shared run, whose loaded model the page keeps: the report is taken away after.
        at = open_page(navigation.PREDICT.script)
        at.file_uploader[0].upload("film.png", png_bytes(), "image/png").run()
        assert not at.exception, at.exception
        assert report["verdict"]["text"].startswith("Warning: maps are no better than random")
        assert report["verdict"]["text"] in texts(at.warning)
    finally:
        (with_run.path / EXPLAIN_CHECK_FILE_NAME).unlink(missing_ok=True)


def test_review_offers_every_method_and_says_the_verdict_beside_each_map(review_run):
    run, _ = review_run
    report = write_report(run, ratio=0.6, low=0.05)
    try:
        at = open_page(navigation.REVIEW.script)
        assert not at.exception, at.exception
        assert report["verdict"]["text"] in texts(at.caption)
        at.radio(key="review_cam_method").set_value("LayerCAM (tf-keras-vis, finer, mid layer)").run()
        assert not at.exception, at.exception
        assert not at.error, texts(at.error)
        assert "Faithfulness was checked for Grad-CAM (fast), not for LayerCAM" in texts(at.caption)
    finally:
        (run.path / EXPLAIN_CHECK_FILE_NAME).unlink(missing_ok=True)
