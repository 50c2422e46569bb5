"""Model context: every result says which run, trained on what, how good, and whether it is weak or a demo."""

import json
import shutil

from core.runs.context import WEAK_MACRO_F1, model_context
from core.runs.registry import load_run
from core.settings import PROJECT_ROOT

DEMO = PROJECT_ROOT / "models" / "demo-nih-cxr4"


def test_the_shipped_demo_says_its_population_figures_and_that_it_is_a_demo():
    context = model_context(load_run(DEMO))
    assert context.run_id == DEMO.name and context.dataset == "nih-cxr4" and "/" not in context.dataset
    assert context.training_films == 162 and "NIH" in context.source
    assert context.classes == tuple(load_run(DEMO).classes)
    assert context.accuracy_ci95 and context.macro_f1_ci95 and context.demo
    warning = context.warning()
    assert warning and "demonstration" in warning and "macro-F1" in warning
    assert "95% CI" in context.figures() and "162 training films" in context.population()
    assert json.dumps(context.to_json())


def test_a_good_run_has_no_banner_and_a_weak_one_has(tmp_path):
    run_dir = tmp_path / "20260101-000000-nih-cxr4-recommended"
    shutil.copytree(DEMO, run_dir, ignore=shutil.ignore_patterns("model.keras"))
    (run_dir / "model.keras").write_bytes(b"")
    # A run trained here: not marked as a demonstration in its status.json.
    status = json.loads((run_dir / "status.json").read_text())
    status.pop("demo", None)
    (run_dir / "status.json").write_text(json.dumps(status))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["macro"]["f1"] = WEAK_MACRO_F1 + 0.1
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert model_context(load_run(run_dir)).warning() is None
    metrics["macro"]["f1"] = WEAK_MACRO_F1 - 0.1
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    context = model_context(load_run(run_dir))
    assert context.weak and not context.demo and "weak model" in context.warning()
    status["demo"] = True
    (run_dir / "status.json").write_text(json.dumps(status))
    assert model_context(load_run(run_dir)).demo
