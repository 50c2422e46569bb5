"""Measure the "is this a chest radiograph?" gate of a run.

    python bench/gate.py [--model RUN_DIR]

Reports the share of real films in ../shared/data that pass (target >= 99%) and the share of
non-radiographs that are refused (target >= 95%): photographs and drawings that scikit-image ships,
rendered text documents, noise and synthetic patterns. Writes bench/results/gate.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SUFFIXES = {".png", ".jpg", ".jpeg"}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(PROJECT_ROOT / "models" / "demo-nih-cxr4"))
    args = parser.parse_args()
    from core.serving.predict import Predictor

    predictor = Predictor(args.model)
    real = {"passed": 0, "total": 0, "failed_examples": []}
    by_source = {}
    for source in ("nih-cxr4", "pediatric-pneumonia", "samples"):
        folder = SHARED_DATA / source
        if not folder.is_dir():
            continue
        passed = total = 0
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES):
            result = predictor.predict(path)
            total += 1
            if result.gate and result.gate.passed:
                passed += 1
            elif len(real["failed_examples"]) < 10:
                real["failed_examples"].append({"file": f"{source}/{path.name}",
                                                "reason": result.error or result.gate.reason})
        by_source[source] = {"passed": passed, "total": total, "share": passed / max(total, 1)}
        real["passed"] += passed
        real["total"] += total
    others = {"refused": 0, "total": 0, "passed_examples": []}
    for name, data in non_radiographs().items():
        result = predictor.predict(data, name=name)
        others["total"] += 1
        if result.error or not result.gate.passed:
            others["refused"] += 1
        else:
            others["passed_examples"].append({"image": name, "reason": result.gate.reason})
    real["share"] = real["passed"] / max(real["total"], 1)
    others["share"] = others["refused"] / max(others["total"], 1)
    report = {"run": Path(args.model).name, "real_films": real, "real_by_source": by_source,
              "non_radiographs": others, "targets": {"real_pass": 0.99, "non_radiograph_refused": 0.95}}
    print(f"{'set':32s} {'count':>7s} {'share':>7s}")
    for source, item in by_source.items():
        print(f"{'real ' + source + ' passed':32s} {item['passed']:>3d}/{item['total']:<3d} {item['share']:7.1%}")
    print(f"{'real films passed (all)':32s} {real['passed']:>3d}/{real['total']:<3d} {real['share']:7.1%}")
    print(f"{'non-radiographs refused':32s} {others['refused']:>3d}/{others['total']:<3d} {others['share']:7.1%}")
    for item in others["passed_examples"]:
        print(f"  passed (should not): {item['image']}: {item['reason']}")
    out = PROJECT_ROOT / "bench" / "results" / "gate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
