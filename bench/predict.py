"""Prediction speed against the bare model on this machine, in one run.

    python bench/predict.py [--model RUN_DIR] [--repeats 50]

Measures, for each engine (core.serving.lite: Keras, and TensorFlow Lite with the closed-form Grad-CAM), warm,
single film unless said: the bare model's forward pass on a ready tensor (the floor);
bytes -> probabilities for a 1024x1024 8-bit PNG and a 512 px JPEG; the same with Grad-CAM and the rendered
overlay; batch throughput in films per second from files on disk against the bare batched forward pass.
Writes bench/results/predict.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def timings(function, repeats: int) -> dict:
    function()  # Warm.
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": float(np.percentile(samples, 50)), "p95_ms": float(np.percentile(samples, 95))}


def test_films() -> tuple[bytes, bytes, list[Path]]:
    """A 1024x1024 8-bit PNG and a 512 px JPEG made from a real film, plus real files for batches."""
    files = sorted((SHARED_DATA / "nih-cxr4").rglob("*.png"))
    if files:
        film = Image.open(files[0]).convert("L")
    else:
        rng = np.random.default_rng(0)
        film = Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8))
    png, jpeg = io.BytesIO(), io.BytesIO()
    film.resize((1024, 1024), Image.BILINEAR).save(png, format="PNG")
    film.resize((512, 512), Image.BILINEAR).save(jpeg, format="JPEG", quality=90)
    return png.getvalue(), jpeg.getvalue(), files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(PROJECT_ROOT / "models" / "demo-nih-cxr4"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch-files", type=int, default=192)
    args = parser.parse_args()
    from core.explain.overlay import overlay
    from core.imaging.loader import load_image
    from core.serving.predict import Predictor

    engines = {"keras": Predictor(args.model, engine="keras"), "lite": Predictor(args.model, engine="lite")}
    if engines["lite"].engine != "TensorFlow Lite":
        print(f"TensorFlow Lite engine unavailable: {engines['lite'].engine_note}")
        del engines["lite"]
    keras_predictor = engines["keras"]
    size = keras_predictor.image_size
    png, jpeg, files = test_films()
    ready = np.random.default_rng(0).integers(0, 256, (1, size, size, 1)).astype(np.float32)
    floors = {"keras": timings(lambda: keras_predictor.probabilities(ready), args.repeats)}
    if "lite" in engines:
        lite_engine = engines["lite"]._lite
        floors["lite"] = timings(lambda: lite_engine(ready), args.repeats)
    floor = floors["keras"]["p50_ms"]
    parts = {
        "decode + resize, 1024 PNG": timings(lambda: load_image(png, size), args.repeats),
        "decode + resize, 512 JPEG": timings(lambda: load_image(jpeg, size), args.repeats),
    }
    sample = keras_predictor.predict(png, with_cam=True, display=True, display_max_side=512)
    parts["overlay at 512 px"] = timings(lambda: overlay(sample.gray, sample.cam), args.repeats)

    single = {}
    for name, predictor in engines.items():
        def with_overlay(predictor=predictor):
            # What the Predict page does per film: gate, Grad-CAM, and the overlay at its 512 px display size.
            result = predictor.predict(png, with_cam=True, display=True, gate=True, display_max_side=512)
            overlay(result.gray, result.cam)

        rows = {
            "PNG 1024 bytes -> probabilities": timings(lambda: predictor.predict(png, gate=False), args.repeats),
            "JPEG 512 bytes -> probabilities": timings(lambda: predictor.predict(jpeg, gate=False), args.repeats),
            "PNG 1024 -> probabilities + gate": timings(lambda: predictor.predict(png), args.repeats),
            "PNG 1024 -> gate + Grad-CAM + overlay (512 px, as the app)": timings(with_overlay, args.repeats),
        }
        for row in rows.values():
            row["ratio_to_bare_keras"] = row["p50_ms"] / floor
        single[name] = rows

    batch = {}
    if files:
        paths = [files[i % len(files)] for i in range(args.batch_files)]
        for name, predictor in engines.items():
            predictor.predict_files(paths[:64])
            started = time.perf_counter()
            predictor.predict_files(paths)
            batch[f"{name}_files_per_second"] = len(paths) / (time.perf_counter() - started)
        ready_batch = np.repeat(ready, 64, axis=0)
        keras_predictor.probabilities(ready_batch)
        started = time.perf_counter()
        for _ in range(3):
            keras_predictor.probabilities(ready_batch)
        batch["bare_keras_batched_per_second"] = 3 * 64 / (time.perf_counter() - started)
        for name in engines:
            batch[f"{name}_ratio_to_bare_keras"] = batch[f"{name}_files_per_second"] / batch["bare_keras_batched_per_second"]

    print(f"{'floor / part':58s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for name, row in {**{f"bare forward, {k}": v for k, v in floors.items()}, **parts}.items():
        print(f"{name:58s} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f}")
    for engine, rows in single.items():
        print(f"\n{engine:58s} {'p50 ms':>8s} {'p95 ms':>8s} {'x bare Keras':>12s}")
        for name, row in rows.items():
            print(f"{name:58s} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['ratio_to_bare_keras']:12.2f}")
    if batch:
        print("\nbatch from files: " + ", ".join(f"{k} {v:.2f}" for k, v in batch.items()))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    out = PROJECT_ROOT / "bench" / "results" / "predict.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": Path(args.model).name, "floors": floors, "parts": parts, "single": single,
                               "batch": batch, "load_average_at_end": load}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
