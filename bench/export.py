"""TFLite export parity on real films: python bench/export.py [--model RUN_DIR]

For each variant (float16, dynamic-range, float32): top-1 agreement (overall, and on the films whose top two
Keras probabilities are more than 0.05 apart) with the Keras model (target >= 99%), the largest
probability difference (target <= 0.02), file size and single-film latency. Writes bench/results/export.json
(one entry per run and film folder; entries of earlier runs are kept, so delete stale ones by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(PROJECT_ROOT / "models" / "demo-nih-cxr4"))
    parser.add_argument("--data", default=str(SHARED_DATA / "nih-cxr4"),
                        help="folder of real films to compare on (every film under it)")
    args = parser.parse_args()
    from core.serving.export import VARIANTS, export_tflite, parity_report
    from core.imaging.loader import load_image
    from core.runs.registry import load_run

    size = int(load_run(args.model).config.get("image_size", 224))
    from core.imaging.loader import SUPPORTED_EXTENSIONS

    files = sorted(path for path in Path(args.data).rglob("*") if path.suffix.lower() in SUPPORTED_EXTENSIONS)
    if not files:
        print(f"{args.data} holds no films: nothing to compare on", file=sys.stderr)
        return 1
    images = np.stack([load_image(path, size) for path in files]).astype(np.float32)
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant in VARIANTS:
            path = export_tflite(args.model, Path(folder) / f"{variant}.tflite", variant)
            report[variant] = parity_report(args.model, path, images)
    print(f"{'variant':10s} {'films':>6s} {'top-1 agree':>12s} {'decided':>8s} {'max |dp|':>9s} {'MB':>6s} {'ms/film':>8s} bar")
    for variant, row in report.items():
        print(f"{variant:10s} {row['n']:6d} {row['top1_agreement']:12.1%} {row['top1_agreement_decided']:8.1%} {row['max_abs_difference']:9.4f} "
              f"{row['size_bytes'] / 1e6:6.2f} {row['latency_ms_per_film']:8.1f} {'met' if row['meets_bar'] else 'MISSED'}")
    out = PROJECT_ROOT / "bench" / "results" / "export.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # One entry per run and film folder, so a second comparison does not overwrite the demo's figures.
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = previous.get("runs", {})
    # The load average goes beside the latencies: on a shared machine they are inflated, the agreement is not.
    runs[f"{Path(args.model).name} on {Path(args.data).name}"] = {
        "data": str(args.data), **report, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
