"""Accuracy of the `paper` and `recommended` presets on the real sets, over several seeds.

    python bench/accuracy.py [--presets paper recommended] [--datasets nih-cxr4 pediatric-pneumonia]
                             [--seeds 42 43 44] [--runs-dir /tmp/paru-bench-runs]

Each (preset, dataset, seed) is one `python -m core train` run in its own process, exactly as a user runs
it (ImageNet weights from KERAS_HOME, ../shared/keras_home when unset). The seed seeds the split as well,
so the spread over seeds includes the luck of the split; the two presets share the split of each seed,
so their per-seed difference is a paired comparison. A finished run already in --runs-dir under the same
name and recipe is reused, so an interrupted benchmark resumes where it stopped.

Prints a table and writes bench/results/accuracy.json after every run. The paper's own figures (its
confusion matrix, 1,881 test films of a different dataset) are listed beside for reference only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED = PROJECT_ROOT.parent / "shared"
RESULTS = PROJECT_ROOT / "bench" / "results" / "accuracy.json"

# From the paper's confusion matrix (Table 3 / Figure 8), not from its abstract.
PAPER_REPORTED = {"accuracy": 1859 / 1881, "mean_ovr_accuracy": 0.9942, "macro_f1": 0.9886, "n_test": 1881,
                  "note": "Kaggle four-class set of 12,539 films; a different dataset from both sets here."}
TARGETS = {"pediatric-pneumonia": ("accuracy", 0.95), "nih-cxr4": ("macro_f1", 0.60)}


def real_sets_ready(datasets: list[str]) -> bool:
    """True when every named set is under ../shared/data (else says which are not); points KERAS_HOME there."""
    missing = [d for d in datasets if not (SHARED / "data" / d).is_dir()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found under {SHARED / 'data'}")
        return False
    os.environ.setdefault("KERAS_HOME", str(SHARED / "keras_home"))
    return True


def run_one(preset: str, dataset: str, seed: int, runs_dir: Path, previous: dict) -> dict:
    """Train one run (or reuse a finished one) and return its test figures.

    `previous` maps (preset, dataset, seed) to the figures of the last results file, for the presets
    whose recipe has not changed since; they are reused when the run folder is gone.
    """
    from core.config import preset as make_preset
    from core.runs.artifacts import CONFIG_FILE_NAME, METRICS_FILE_NAME
    from core.runs.registry import is_finished_run

    name = f"{preset}-{dataset}-s{seed}"
    out = runs_dir / name
    config = make_preset(preset, seed=seed)
    if not out.exists() and (preset, dataset, seed) in previous:
        return {**previous[(preset, dataset, seed)], "reused": "figures from the previous results file"}
    reused = is_finished_run(out) and json.loads((out / CONFIG_FILE_NAME).read_text()) == config.to_dict()
    peak_rss_mb = None
    if not reused:
        if out.exists():
            raise SystemExit(f"{out} exists but is not a finished run of this recipe; move it away and rerun.")
        command = [sys.executable, "-m", "core", "train", "--data", str(SHARED / "data" / dataset),
                   "--preset", preset, "--seed", str(seed), "--out", str(out), "--models-dir", str(runs_dir)]
        log = runs_dir / f"{name}.log"
        with open(log, "w") as handle:
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"training {name} failed; see {log}")
        peak_rss_mb = usage.ru_maxrss / 1024
    metrics = json.loads((out / METRICS_FILE_NAME).read_text())
    return {
        "preset": preset, "dataset": dataset, "seed": seed, "run": str(out), "reused": reused,
        "n_test": metrics["n"],
        "accuracy": metrics["accuracy"], "accuracy_ci95": metrics["ci95"]["accuracy"],
        "macro_f1": metrics["macro"]["f1"], "macro_f1_ci95": metrics["ci95"]["macro_f1"],
        "mean_ovr_accuracy": metrics["mean_ovr_accuracy"],
        "best_epoch": metrics["training"]["best_epoch"], "epochs_run": metrics["training"]["epochs_run"],
        "wall_time_seconds": metrics["training"]["wall_time_seconds"], "peak_rss_mb": peak_rss_mb,
        "ece_test_after_temperature": metrics.get("calibration", {}).get("ece_test_after"),
    }


def previous_runs(make_preset) -> dict:
    """The last results file's runs, keyed (preset, dataset, seed), of presets whose recipe is unchanged.

    A recipe is unchanged when the stored recipe, with fields added since filled by their defaults, equals
    the current one (the seed aside), so adding a config field does not force a rerun of the paper preset.
    """
    from core.config import TrainConfig

    if not RESULTS.is_file():
        return {}
    stored = json.loads(RESULTS.read_text())
    unchanged = set()
    for name, recipe in stored.get("recipes", {}).items():
        try:
            if TrainConfig.from_dict({**recipe, "seed": 0}) == make_preset(name, seed=0):
                unchanged.add(name)
        except ValueError:
            continue
    return {(run["preset"], run["dataset"], run["seed"]): run for run in stored.get("runs", [])
            if run["preset"] in unchanged}


def summarise(runs: list[dict]) -> dict:
    """Mean, standard deviation and range over seeds per (preset, dataset), and paired differences."""
    summary: dict = {}
    for key in sorted({(r["preset"], r["dataset"]) for r in runs}):
        group = [r for r in runs if (r["preset"], r["dataset"]) == key]
        entry = {"seeds": [r["seed"] for r in group]}
        for metric in ("accuracy", "macro_f1", "mean_ovr_accuracy"):
            values = [r[metric] for r in group]
            entry[metric] = {"mean": statistics.fmean(values),
                             "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                             "min": min(values), "max": max(values)}
        summary[f"{key[0]}/{key[1]}"] = entry
    for dataset in sorted({r["dataset"] for r in runs}):
        by_seed = {(r["preset"], r["seed"]): r for r in runs if r["dataset"] == dataset}
        seeds = sorted(s for (p, s) in by_seed if p == "paper" and ("recommended", s) in by_seed)
        if not seeds:
            continue
        paired = {}
        for metric in ("accuracy", "macro_f1"):
            differences = [by_seed["recommended", s][metric] - by_seed["paper", s][metric] for s in seeds]
            paper_values = [by_seed["paper", s][metric] for s in seeds]
            recommended_values = [by_seed["recommended", s][metric] for s in seeds]
            paired[metric] = {
                "differences": differences, "mean_difference": statistics.fmean(differences),
                "recommended_wins": sum(d > 0 for d in differences), "seeds": seeds,
                # "Beyond the seed spread": every recommended seed above every paper seed.
                "beyond_seed_spread": min(recommended_values) > max(paper_values),
            }
        metric, target = TARGETS[dataset]
        recommended = summary.get(f"recommended/{dataset}")
        paired["target"] = {"metric": metric, "value": target,
                            "met_by_recommended_mean": bool(recommended and recommended[metric]["mean"] >= target)}
        summary[f"recommended-vs-paper/{dataset}"] = paired
    return summary


def print_table(runs: list[dict], summary: dict) -> None:
    print(f"{'preset':<12} {'dataset':<20} {'seed':>4} {'n':>4} {'accuracy (95% CI)':<22} "
          f"{'macro-F1 (95% CI)':<22} {'mean OvR':>8} {'epochs':>7} {'wall s':>7}")
    for r in runs:
        acc = f"{r['accuracy']:.3f} ({r['accuracy_ci95'][0]:.3f}-{r['accuracy_ci95'][1]:.3f})"
        f1 = f"{r['macro_f1']:.3f} ({r['macro_f1_ci95'][0]:.3f}-{r['macro_f1_ci95'][1]:.3f})"
        print(f"{r['preset']:<12} {r['dataset']:<20} {r['seed']:>4} {r['n_test']:>4} {acc:<22} {f1:<22} "
              f"{r['mean_ovr_accuracy']:>8.3f} {r['best_epoch']:>3}/{r['epochs_run']:<3} {r['wall_time_seconds']:>7.0f}")
    print()
    for key, entry in summary.items():
        if key.startswith("recommended-vs-paper/"):
            for metric in ("accuracy", "macro_f1"):
                p = entry[metric]
                print(f"{key} {metric}: mean difference {p['mean_difference']:+.3f}, recommended better on "
                      f"{p['recommended_wins']}/{len(p['seeds'])} seeds, beyond seed spread: {p['beyond_seed_spread']}")
            t = entry["target"]
            print(f"{key} target {t['metric']} >= {t['value']}: met by recommended mean: {t['met_by_recommended_mean']}")
        else:
            print(f"{key}: accuracy {entry['accuracy']['mean']:.3f} ± {entry['accuracy']['sd']:.3f}, "
                  f"macro-F1 {entry['macro_f1']['mean']:.3f} ± {entry['macro_f1']['sd']:.3f} "
                  f"(mean ± sd over seeds {entry['seeds']})")
    print(f"paper's own figures (different data): accuracy {PAPER_REPORTED['accuracy']:.4f}, "
          f"mean OvR {PAPER_REPORTED['mean_ovr_accuracy']:.4f}, macro-F1 {PAPER_REPORTED['macro_f1']:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "recommended"])
    parser.add_argument("--datasets", nargs="+", default=["nih-cxr4", "pediatric-pneumonia"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--runs-dir", default="/tmp/paru-bench-runs")
    args = parser.parse_args()
    if not real_sets_ready(args.datasets):
        return 0
    from core.config import preset as make_preset
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    started = time.time()
    previous = previous_runs(make_preset)
    for seed in args.seeds:
        for dataset in args.datasets:
            for preset in args.presets:
                runs.append(run_one(preset, dataset, seed, runs_dir, previous))
                summary = summarise(runs)
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps({
                    "machine": f"{os.cpu_count()} CPU cores", "runs": runs, "summary": summary,
                    "paper_reported": PAPER_REPORTED, "targets": TARGETS,
                    "wall_time_seconds": time.time() - started,
                    "recipes": {name: make_preset(name).to_dict() for name in args.presets},
                }, indent=2) + "\n")
                print(f"done {preset} {dataset} seed {seed}: accuracy {runs[-1]['accuracy']:.3f}, "
                      f"macro-F1 {runs[-1]['macro_f1']:.3f}", flush=True)
    print_table(runs, summarise(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
