"""Measure the "is this a chest radiograph?" gate of a run.

    python bench/gate.py [--model RUN_DIR ...]

For each run (default: the shipped runs), the verdict Predict shows: the share of real films in
../shared/data that pass (target >= 99% for films of the run's own training set; a run with population
statistics is meant to refuse films of another set as unlike its training films), by folder and by the kind
of refusal, and the share of non-radiographs that are refused (target >= 95%): photographs and drawings that
scikit-image ships, rendered text documents, noise and synthetic patterns. Writes bench/results/gate.json,
one entry per run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SUFFIXES = {".png", ".jpg", ".jpeg"}
SOURCES = {"nih-cxr4": "nih-cxr4", "pediatric-pneumonia": "pediatric-pneumonia", "samples": "nih-cxr4"}
"""The real film folders read, and the set each one's films come from (samples is a subset of nih-cxr4)."""
SHIPPED_RUNS = ("demo-nih-cxr4", "demo-pediatric-pneumonia")


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def non_radiographs(seed: int = 0) -> dict[str, bytes]:
    """Named non-radiograph images as PNG bytes."""
    rng = np.random.default_rng(seed)
    images: dict[str, bytes] = {}
    try:
        import skimage.data as samples
    except ImportError:
        print("scikit-image is not installed (pip install scikit-image): photo samples skipped", file=sys.stderr)
        samples = None
    if samples is not None:
        for name in ("astronaut", "brick", "camera", "cat", "checkerboard", "chelsea", "clock", "coffee",
                     "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
                     "immunohistochemistry", "logo", "moon", "page", "retina", "rocket", "text"):
            try:
                array = getattr(samples, name)()
            except Exception as error:  # Some samples need a download (pooch); those are left out.
                print(f"skip sample {name}: {error}", file=sys.stderr)
                continue
            if array.dtype == bool:
                array = array.astype(np.uint8) * 255
            if array.ndim == 3 and array.shape[2] == 4:
                array = array[..., :3]
            images[f"skimage:{name}"] = png_bytes(np.ascontiguousarray(array.astype(np.uint8)))
    for index in range(10):
        page = Image.new("L", (850, 1100), 255)
        draw = ImageDraw.Draw(page)
        for line in range(40):
            words = " ".join("".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 9)))
                             for _ in range(rng.integers(6, 12)))
            draw.text((60, 60 + line * 24), words, fill=int(rng.integers(0, 80)))
        images[f"document:{index}"] = png_bytes(np.asarray(page))
    for index in range(10):
        images[f"noise-uniform:{index}"] = png_bytes(rng.integers(0, 256, (512, 512), dtype=np.uint8))
        images[f"noise-gaussian:{index}"] = png_bytes(np.clip(rng.normal(128, 40, (512, 512)), 0, 255).astype(np.uint8))
        images[f"noise-colour:{index}"] = png_bytes(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    ramp = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    images["pattern:ramp"] = png_bytes(ramp)
    images["pattern:stripes"] = png_bytes(((np.indices((512, 512))[1] // 16) % 2 * 255).astype(np.uint8))
    return images


def measure(run_dir: str) -> dict:
    """The gate's verdicts on the real films and the non-radiographs, for one run."""
    from core.serving.predict import Predictor

    predictor = Predictor(run_dir)
    own = json.loads((Path(run_dir) / "data_report.json").read_text()).get("root")
    real = {"passed": 0, "total": 0, "failed_examples": []}
    by_source = {}
    for source in SOURCES:
        folder = SHARED_DATA / source
        if not folder.is_dir():
            continue
        passed = total = 0
        refused_as: dict[str, int] = {}
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES):
            result = predictor.predict(path)
            total += 1
            if result.gate and result.gate.passed:
                passed += 1
                continue
            kind = result.gate.kind if result.gate else "error"
            refused_as[kind] = refused_as.get(kind, 0) + 1
            if len(real["failed_examples"]) < 10:
                real["failed_examples"].append({"file": f"{source}/{path.name}",
                                                "reason": result.error or result.gate.reason})
        by_source[source] = {"passed": passed, "total": total, "share": passed / max(total, 1),
                             "refused_as": refused_as, "population": SOURCES[source],
                             "runs_own_population": SOURCES[source] == own}
        real["passed"] += passed
        real["total"] += total
    others = {"refused": 0, "total": 0, "passed_examples": [], "refused_as": {}}
    for name, data in non_radiographs().items():
        result = predictor.predict(data, name=name)
        others["total"] += 1
        if result.error or not result.gate.passed:
            others["refused"] += 1
            kind = result.gate.kind if result.gate else "error"
            others["refused_as"][kind] = others["refused_as"].get(kind, 0) + 1
        else:
            others["passed_examples"].append({"image": name, "reason": result.gate.reason})
    real["share"] = real["passed"] / max(real["total"], 1)
    others["share"] = others["refused"] / max(others["total"], 1)
    # Which gate gave the verdicts: a run with population statistics is judged by the population gate
    # (core.serving.population), an older run by gate.npz's feature distance alone (core.serving.gate).
    gate = "population gate (population.npz)" if predictor.population is not None else "first gate (gate.npz)"
    return {"run": Path(run_dir).name, "training_films": own, "gate": gate, "real_films": real,
            "real_by_source": by_source, "non_radiographs": others,
            "targets": {"real_pass": 0.99, "non_radiograph_refused": 0.95},
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=[str(PROJECT_ROOT / "models" / name) for name in SHIPPED_RUNS],
                        help="one or more run folders (default: the shipped runs)")
    args = parser.parse_args()
    runs = {}
    for run_dir in args.model:
        report = measure(run_dir)
        runs[report["run"]] = report
        print(f"{report['run']} ({report['gate']}; trained on {report['training_films']})")
        print(f"{'set':32s} {'count':>9s} {'share':>7s}")
        for source, item in report["real_by_source"].items():
            print(f"{'real ' + source + ' passed':32s} {item['passed']:>4d}/{item['total']:<4d} {item['share']:7.1%}"
                  f"  refused as {item['refused_as']}")
        others = report["non_radiographs"]
        print(f"{'non-radiographs refused':32s} {others['refused']:>4d}/{others['total']:<4d} {others['share']:7.1%}"
              f"  as {others['refused_as']}")
        for item in others["passed_examples"]:
            print(f"  passed (should not): {item['image']}: {item['reason']}")
    out = PROJECT_ROOT / "bench" / "results" / "gate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
