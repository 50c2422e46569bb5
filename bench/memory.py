"""Memory of evaluation and batch prediction as the folder grows: python bench/memory.py [--sizes 1000 10000 100000]

`python -m core evaluate` and `python -m core predict` on a folder stream films from disk in chunks, so their
peak memory must not grow with the number of films. This script builds folders of 1,000 to 100,000 films
(four class folders; every film is a hard link to one of 400 distinct generated 256 px PNG films, so the
disk holds 400 images while the program still opens, hashes and decodes every file), trains a tiny run
(MobileNetV2 alpha 0.35, 64 px, so 100,000 films take minutes, not hours), and runs each command in a child
process, recording its peak resident memory (ru_maxrss) and wall time. Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED = PROJECT_ROOT.parent / "shared"
RESULTS = PROJECT_ROOT / "bench" / "results" / "memory.json"
CLASSES = ("Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax")
DISTINCT_FILMS = 400


def make_films(folder: Path, seed: int = 0) -> list[Path]:
    """DISTINCT_FILMS generated 256 px grayscale films, spread over the four classes."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:256, 0:256]
    paths = []
    for index in range(DISTINCT_FILMS):
        label = CLASSES[index % len(CLASSES)]
        film = 60 + 40 * np.sin(columns / (9 + index % 13)) + rng.normal(0, 12, (256, 256))
        film += 70 * np.exp(-(((rows - 128) / 60) ** 2 + ((columns - 64 - 32 * (index % 4)) / 30) ** 2))
        path = folder / label / f"film{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def make_folder(films: list[Path], folder: Path, size: int) -> Path:
    """A dataset folder of `size` files, each a hard link to one of `films` (same class folder)."""
    for index in range(size):
        source = films[index % len(films)]
        target = folder / source.parent.name / f"{index:06d}_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
    return folder


def tiny_run(films_root: Path, models_dir: Path) -> Path:
    """Train the tiny run in a child process, so that this process never holds TensorFlow: on Linux a
    child's peak memory (ru_maxrss) starts at its parent's resident size, which would hide the children's."""
    weights = SHARED / "keras_home" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    out = models_dir / "tiny"
    subprocess.run([sys.executable, "-m", "core", "train", "--data", str(films_root), "--out", str(out),
                    "--models-dir", str(models_dir), "--alpha", "0.35", "--image-size", "64", "--epochs", "1",
                    "--batch-size", "16", "--weights", str(weights) if weights.exists() else "none"],
                   cwd=PROJECT_ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def measure(command: list[str]) -> dict:
    """Run a command as a child; its wall time and its own peak resident memory."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0,):
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{stderr.decode(errors='replace')[-2000:]}")
    return {"seconds": time.perf_counter() - started, "peak_rss_megabytes": usage.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--predict-sizes", nargs="+", type=int, default=[1000, 10000],
                        help="sizes to also run `predict` on (film by film with the gate, so slower)")
    parser.add_argument("--work-dir", help="where to build the folders (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_HOME", str(SHARED / "keras_home"))
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        work = Path(work)
        films = make_films(work / "films")
        run = tiny_run(work / "films", work / "models")
        rows = []
        for size in args.sizes:
            folder = make_folder(films, work / f"folder-{size}", size)
            evaluate = measure([sys.executable, "-m", "core", "evaluate", "--model", str(run), "--data", str(folder),
                                "--json", str(work / f"metrics-{size}.json")])
            predict = (measure([sys.executable, "-m", "core", "predict", "--model", str(run), "--json", str(folder)])
                       if size in args.predict_sizes else None)
            evaluated = json.loads((work / f"metrics-{size}.json").read_text())["n"]
            rows.append({"films": size, "evaluated": evaluated, "evaluate": evaluate, "predict": predict})
            print(f"{size:>7} films: evaluate {evaluate['seconds']:6.0f} s, peak {evaluate['peak_rss_megabytes']:6.0f} MB"
                  + (f"; predict {predict['seconds']:6.0f} s, peak {predict['peak_rss_megabytes']:6.0f} MB" if predict else ""),
                  flush=True)
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    growth = {}
    for kind in ("evaluate", "predict"):
        measured = [row for row in rows if row[kind]]
        growth[kind] = {"from_films": measured[0]["films"], "to_films": measured[-1]["films"],
                        "megabytes": measured[-1][kind]["peak_rss_megabytes"] - measured[0][kind]["peak_rss_megabytes"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": f"{os.cpu_count()} CPU cores", "model": "alpha 0.35, 64 px",
                                   "rows": rows, "peak_growth_megabytes": growth}, indent=2) + "\n")
    for kind, change in growth.items():
        print(f"{kind}: peak memory {change['megabytes']:+.0f} MB from {change['from_films']} to {change['to_films']} films")
    return 0


if __name__ == "__main__":
    sys.exit(main())
