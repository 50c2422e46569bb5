"""Training memory as the dataset grows: python bench/train_memory.py [--sizes 1000 5000 10000 20000 50000]

Training decodes every film once into the staging folder's film cache (core.training.cache: a file of uint8
rows read back a batch at a time) instead of holding the decoded films in memory. This script shows that a
training's peak memory stays flat from 1,000 to 50,000 films. Folders are built as bench/memory.py builds them
(four class folders; every film a hard link to one of 400 generated films, so the disk holds 400 images while
every file is still opened, hashed and decoded), but from tiny 64 px films: each still becomes a 224 x 224
row of the cache, and decoding 50,000 of them takes minutes on these shared cores. Each measurement runs in
a child process of its own (its peak resident memory, ru_maxrss, is then its own):

  - `cache`: the training's data path as `python -m core train` runs it at 224 px: the scan and integrity check,
    the decode into the film cache, the split, and one full epoch of the paper's training pipeline (shuffle,
    batches of 32, no augmentation: it works a batch at a time) with no model, plus the chunked reads
    evaluation and the gate make. At 50,000
    films a full training of the paper recipe would take hours on these 2 cores, which is why the model is left
    out of this series;
  - `in-memory`: the same with the films decoded into memory and the pipeline built from them (what training
    did before the cache), for contrast, up to --memory-sizes;
  - `train`: the whole `python -m core train` (alpha 0.35, 224 px, 1 epoch: decode, split, fit, evaluation, gate,
    card), up to --train-sizes.

Writes bench/results/train_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
from memory import CLASSES, DISTINCT_FILMS, SHARED, make_folder  # noqa: E402  (bench/memory.py, beside this script)

RESULTS = PROJECT_ROOT / "bench" / "results" / "train_memory.json"
IMAGE_SIZE = 224


def make_films(folder: Path, seed: int = 0) -> list[Path]:
    """DISTINCT_FILMS tiny generated grayscale PNG films (64 px, the loader's smallest side) over the four
    classes: decoding them is cheap, and each still becomes a full 224 x 224 row of the film cache, which is
    what memory depends on."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(DISTINCT_FILMS):
        label = CLASSES[index % len(CLASSES)]
        path = folder / label / f"film{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _peak_megabytes() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, data: Path, work: Path) -> dict:
    """One measurement in this process: the data path of a training, with the cache or in memory."""
    import numpy as np

    from core.config import preset
    from core.data.scan import assign_subsets, scan_dataset
    from core.serving.batch import rows_in_chunks
    from core.training.cache import decode_to_disk
    from core.training.pipeline import make_dataset

    # The augmentation is left out: it works a batch at a time, so it cannot change how memory grows with
    # the number of films, and on these shared cores it would double the time of the 50,000-film epoch.
    config = preset("paper", rotation_degrees=0.0, zoom=0.0, brightness=0.0, horizontal_flip=False)
    timings, started = {}, time.monotonic()
    if mode == "cache":
        scan = decode_to_disk(scan_dataset(data, image_size=IMAGE_SIZE, decode=False), work, IMAGE_SIZE)
    else:
        scan = scan_dataset(data, image_size=IMAGE_SIZE, decode=True)
    timings["scan_and_decode"] = time.monotonic() - started
    after_decode = _peak_megabytes()
    subsets = assign_subsets(scan, fractions=config.split, seed=config.seed)
    labels = scan.labels
    train = np.flatnonzero(subsets == "train")
    started = time.monotonic()
    if mode == "cache":
        dataset = make_dataset(scan.images, labels, len(scan.class_names), config, training=True, rows=train)
    else:
        import tensorflow as tf

        one_hot = np.eye(len(scan.class_names), dtype=np.float32)[labels[train]]
        dataset = tf.data.Dataset.from_tensor_slices((scan.images[train], one_hot)).shuffle(len(train), seed=1)
        dataset = dataset.batch(config.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y),
                                                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    batches = sum(1 for _ in dataset)
    timings["one_epoch_pipeline"] = time.monotonic() - started
    started = time.monotonic()
    means = rows_in_chunks(lambda films: films.mean(axis=(1, 2, 3)), scan.images, np.flatnonzero(subsets != "train"))
    timings["chunked_reads_evaluation_gate"] = time.monotonic() - started
    return {"films": len(scan.records), "batches": batches, "checked": int(len(means)),
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "peak_after_decode_megabytes": round(after_decode, 1), "peak_rss_megabytes": round(_peak_megabytes(), 1)}


def run_child(mode: str, data: Path, work: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--data", str(data), "--work-dir", str(work)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        raise SystemExit(f"{mode} on {data} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_training(data: Path, work: Path) -> dict:
    weights = SHARED / "keras_home" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    command = [sys.executable, "-m", "core", "train", "--data", str(data), "--out", str(work / "models" / "run"),
               "--models-dir", str(work / "models"), "--alpha", "0.35", "--epochs", "1",
               "--weights", str(weights) if weights.exists() else "none"]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"training on {data} failed:\n{stderr.decode(errors='replace')[-3000:]}")
    return {"seconds": round(time.monotonic() - started, 1), "peak_rss_megabytes": round(usage.ru_maxrss / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 10000, 20000, 50000])
    parser.add_argument("--memory-sizes", nargs="*", type=int, default=[1000, 5000, 10000, 20000])
    parser.add_argument("--train-sizes", nargs="*", type=int, default=[1000, 5000])
    parser.add_argument("--work-dir", help="where to build the folders (default: a temporary folder)")
    parser.add_argument("--child", choices=("cache", "in-memory"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.data), Path(args.work_dir))))
        return 0
    os.environ.setdefault("KERAS_HOME", str(SHARED / "keras_home"))
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        work = Path(work)
        films = make_films(work / "films")
        for size in args.sizes:
            folder = make_folder(films, work / f"folder-{size}", size)
            scratch = work / f"scratch-{size}"
            scratch.mkdir()
            row = {"films": size, "cache": run_child("cache", folder, scratch)}
            if size in args.memory_sizes:
                row["in_memory"] = run_child("in-memory", folder, scratch)
            if size in args.train_sizes:
                row["train"] = run_training(folder, scratch)
            rows.append(row)
            print(f"{size:>6} films: cache peak {row['cache']['peak_rss_megabytes']:6.0f} MB"
                  + (f", in memory {row['in_memory']['peak_rss_megabytes']:6.0f} MB" if "in_memory" in row else "")
                  + (f", whole training {row['train']['peak_rss_megabytes']:6.0f} MB" if "train" in row else ""),
                  flush=True)
            subprocess.run(["rm", "-rf", str(folder), str(scratch)], check=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": f"{os.cpu_count()} CPU cores", "image_size": IMAGE_SIZE,
        "load_average_at_end": round(os.getloadavg()[0], 2), "rows": rows,
        "cache_peak_growth_megabytes": round(rows[-1]["cache"]["peak_rss_megabytes"] - rows[0]["cache"]["peak_rss_megabytes"], 1),
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
