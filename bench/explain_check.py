"""Measure how faithful each explanation method's maps are on real runs (core.explain.faithfulness).

    python bench/explain_check.py [--runs RUN_DIR ...] [--films N] [--reports DIR]

For each run and each (method, layer) below: deletion and insertion AUC in map order against random order,
the cascading-randomisation Spearman at each step, the class-sensitivity Spearman, the verdict, and the
seconds each check took. The runs are only read: every full report goes to --reports (default
/tmp/paru-explain-check), the summary to bench/results/explain_check.json. By default the shipped runs;
--runs names others. Configuration by configuration across the runs, the default method first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("KERAS_HOME", str(PROJECT_ROOT.parent / "shared" / "keras_home"))

from core.explain.faithfulness import check_run  # noqa: E402
from core.model import LAST_CONV_LAYER_NAME, load_model  # noqa: E402
from core.runs.registry import load_run  # noqa: E402

CONFIGURATIONS = (("gradcam", None), ("gradcam", LAST_CONV_LAYER_NAME), ("gradcam++", None), ("layercam", None),
                  ("scorecam", None))
"""(method, layer): None is the method's own layer (core.explain.methods.METHOD_LAYERS); the default first."""
SHIPPED_RUNS = ("demo-nih-cxr4", "demo-pediatric-pneumonia")


def summary(report: dict) -> dict:
    def auc(name):
        part = report[name]
        return {key: part[key] for key in ("map_auc", "random_auc", "ratio", "difference_ci95", "films_better")}

    return {
        "method": report["method"], "layer": report["layer"], "n_films": report["n_films"],
        "deletion": auc("deletion"), "insertion": auc("insertion"),
        "randomisation_spearman": {step["step"]: step["spearman"] for step in report["randomisation"]},
        "class_sensitivity_spearman": report["class_sensitivity"]["spearman"],
        "faithful": report["verdict"]["faithful"], "verdict": report["verdict"]["text"],
        "warnings": report["verdict"]["warnings"], "seconds": report["seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=[str(PROJECT_ROOT / "models" / name) for name in SHIPPED_RUNS])
    parser.add_argument("--films", type=int, default=24)
    parser.add_argument("--reports", default="/tmp/paru-explain-check")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "bench" / "results" / "explain_check.json"))
    parser.add_argument("--methods", nargs="+", help="only these methods (default: every configuration)")
    args = parser.parse_args()
    configurations = [item for item in CONFIGURATIONS if not args.methods or item[0] in args.methods]
    reports = Path(args.reports)
    reports.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "films": args.films,
               "runs": {}}
    runs = [load_run(run_dir) for run_dir in args.runs]
    models = {run.run_id: load_model(run.model_path) for run in runs}
    # Configuration by configuration across the runs, so a stopped measurement has the first methods on every run.
    for method, layer in configurations:
        for run in runs:
            rows = results["runs"].setdefault(run.run_id, {"preset": run.config.get("preset"), "checks": []})
            started = time.perf_counter()
            out = reports / f"{run.run_id}-{method}-{layer or 'default'}.json"
            report = check_run(run, films=args.films, method=method, layer_name=layer, model=models[run.run_id],
                               out=out)
            rows["checks"].append({**summary(report), "wall_seconds": round(time.perf_counter() - started, 1),
                                   "load_average_at_end": [round(x, 2) for x in os.getloadavg()]})
            print(json.dumps(rows["checks"][-1]), flush=True)
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
