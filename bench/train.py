"""Training speed of the paper recipe against the bare train step on this machine, in one run.

    python bench/train.py [--datasets nih-cxr4 pediatric-pneumonia] [--bare-steps 15]

For each real set, three child processes in turn (so each peak memory is its own):
  1. the bare train step: the paper's model and optimizer on a ready (32, 224, 224, 1) batch already
     in memory, no input pipeline, no augmentation (the floor on this machine);
  2. the full paper recipe with `core.training.run.train_run` (decode, split, tf.data with augmentation,
     5 epochs, callbacks, evaluation), counting every call of the image loader;
  3. the bare step again, so the ratio is taken against the mean of before and after.
Films per second per epoch come from history.csv's train_seconds (training batches only). The projection for
the paper's 12,539 films scales the measured decode, training and validation rates linearly.
Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
SHARED = PROJECT_ROOT.parent / "shared"
RESULTS = PROJECT_ROOT / "bench" / "results" / "train.json"
PAPER_FILMS = 12_539


def bare_step_films_per_second(config, num_classes: int, images: np.ndarray, steps: int) -> float:
    """Films per second of the compiled train step alone on one ready batch (the paper's trainable set)."""
    import keras
    import tensorflow as tf

    from core.model import build_model, set_trainable_layers

    model = build_model(config, num_classes)
    set_trainable_layers(model, config.fine_tune_layers)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    batch = np.resize(images, (config.batch_size, *images.shape[1:])).astype(np.float32)
    x = tf.constant(batch)
    y = tf.constant(np.eye(num_classes, dtype=np.float32)[np.arange(config.batch_size) % num_classes])
    for _ in range(3):  # Trace and warm.
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * config.batch_size / (time.perf_counter() - started)


def sample_films(dataset: str, image_size: int) -> np.ndarray:
    from core.imaging.loader import load_image

    data_dir = SHARED / "data" / dataset
    files = sorted(data_dir.rglob("*.png"))[:8] or sorted(data_dir.rglob("*.jp*g"))[:8]
    return np.stack([load_image(path, image_size) for path in files])


def bare_child(dataset: str, bare_steps: int) -> dict:
    from core.config import preset

    config = preset("paper")
    num_classes = len([d for d in (SHARED / "data" / dataset).iterdir() if d.is_dir()])
    films = sample_films(dataset, config.image_size)
    return {"films_per_second": bare_step_films_per_second(config, num_classes, films, bare_steps)}


def train_child(dataset: str) -> dict:
    """The full paper recipe on one set, counting every call of the image loader."""
    import csv
    import threading

    import core.imaging.loader
    from core.config import preset
    from core.runs.artifacts import DATA_REPORT_FILE_NAME, HISTORY_FILE_NAME, METRICS_FILE_NAME
    from core.training.run import train_run

    config = preset("paper")
    decodes = {"count": 0}
    lock = threading.Lock()
    original_load_image = core.imaging.loader.load_image

    def counting_load_image(*args, **kwargs):
        with lock:
            decodes["count"] += 1
        return original_load_image(*args, **kwargs)

    core.imaging.loader.load_image = counting_load_image  # The loader is imported at call time everywhere.
    with tempfile.TemporaryDirectory() as models_dir:
        started = time.perf_counter()
        run_dir = train_run(SHARED / "data" / dataset, config, models_dir=models_dir, log=lambda line: None)
        wall_seconds = time.perf_counter() - started
        with open(run_dir / HISTORY_FILE_NAME) as handle:
            history = list(csv.DictReader(handle))
        report = json.loads((run_dir / DATA_REPORT_FILE_NAME).read_text())
        metrics = json.loads((run_dir / METRICS_FILE_NAME).read_text())
    return {"history": history, "report": report, "training": metrics["training"],
            "test_accuracy": metrics["accuracy"], "wall_seconds": wall_seconds, "loader_calls": decodes["count"],
            "image_size": config.image_size}


def run_child(mode: str, dataset: str, bare_steps: int) -> dict:
    """Run one measurement in a fresh process; returns its JSON result plus its own peak memory."""
    command = [sys.executable, __file__, "--child", mode, dataset, "--bare-steps", str(bare_steps)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} on {dataset} failed; run `python bench/train.py --child {mode} {dataset}` to see why")
    return {**json.loads(output.strip().splitlines()[-1]), "peak_rss_megabytes": usage.ru_maxrss / 1024}


def measure(dataset: str, bare_steps: int) -> dict:
    bare_before = run_child("bare", dataset, bare_steps)
    trained = run_child("train", dataset, bare_steps)
    bare_after = run_child("bare", dataset, bare_steps)
    bare = (bare_before["films_per_second"] + bare_after["films_per_second"]) / 2
    report, history = trained["report"], trained["history"]
    n_train, n_val = (sum(report["subsets"][subset].values()) for subset in ("train", "val"))
    epochs = []
    for row in history:
        train_seconds, epoch_seconds = float(row["train_seconds"]), float(row["epoch_seconds"])
        epochs.append({"epoch": int(row["epoch"]), "train_seconds": train_seconds, "epoch_seconds": epoch_seconds,
                       "films_per_second": n_train / train_seconds,
                       "ratio_to_bare": n_train / train_seconds / bare,
                       "validation_films_per_second": n_val / max(epoch_seconds - train_seconds, 1e-9)})
    later = epochs[1:] or epochs
    films = report["n_files_usable"]
    decode_seconds = trained["training"]["decode_seconds"]
    train_rate = statistics.fmean(e["films_per_second"] for e in later)
    validation_rate = statistics.fmean(e["validation_films_per_second"] for e in later)
    projection_epoch = 0.70 * PAPER_FILMS / train_rate + 0.15 * PAPER_FILMS / validation_rate
    return {
        "dataset": dataset, "films": films, "train_films": n_train, "val_films": n_val,
        "loader_calls": trained["loader_calls"], "loader_calls_per_film": trained["loader_calls"] / films,
        "decode_seconds": decode_seconds, "epochs": epochs,
        "bare_films_per_second": {"before": bare_before["films_per_second"],
                                  "after": bare_after["films_per_second"], "mean": bare},
        "pipeline_films_per_second_from_epoch_2": train_rate, "ratio_to_bare_from_epoch_2": train_rate / bare,
        "wall_seconds_full_recipe": trained["wall_seconds"], "best_epoch": trained["training"]["best_epoch"],
        "test_accuracy": trained["test_accuracy"],
        "peak_rss_megabytes": {"training_process": trained["peak_rss_megabytes"],
                               "bare_step_process": max(bare_before["peak_rss_megabytes"],
                                                        bare_after["peak_rss_megabytes"])},
        "projection_12539_films": {
            "decode_seconds": decode_seconds / films * PAPER_FILMS,
            "seconds_per_epoch": projection_epoch,
            "five_epochs_seconds": decode_seconds / films * PAPER_FILMS + 5 * projection_epoch,
            "decoded_cache_megabytes": PAPER_FILMS * trained["image_size"] ** 2 / 1e6,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["nih-cxr4", "pediatric-pneumonia"])
    parser.add_argument("--bare-steps", type=int, default=15)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("KERAS_HOME", str(SHARED / "keras_home"))
    if args.child:
        mode, dataset = args.child
        result = bare_child(dataset, args.bare_steps) if mode == "bare" else train_child(dataset)
        print(json.dumps(result))
        return 0
    missing = [d for d in args.datasets if not (SHARED / "data" / d).is_dir()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found under {SHARED / 'data'}")
        return 0
    results = [measure(dataset, args.bare_steps) for dataset in args.datasets]
    load = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": f"{os.cpu_count()} CPU cores", "load_average_at_end": load,
                                   "recipe": "paper", "results": results}, indent=2) + "\n")
    print(f"{'dataset':<20} {'films':>5} {'loader calls/film':>17} {'decode s':>8} {'bare f/s':>8} "
          f"{'epoch 2+ f/s':>12} {'ratio':>6} {'5-epoch wall s':>14} {'peak RSS MB':>11}")
    for r in results:
        print(f"{r['dataset']:<20} {r['films']:>5} {r['loader_calls_per_film']:>17.2f} {r['decode_seconds']:>8.1f} "
              f"{r['bare_films_per_second']['mean']:>8.1f} {r['pipeline_films_per_second_from_epoch_2']:>12.1f} "
              f"{r['ratio_to_bare_from_epoch_2']:>6.2f} {r['wall_seconds_full_recipe']:>14.0f} "
              f"{r['peak_rss_megabytes']['training_process']:>11.0f}")
        for e in r["epochs"]:
            print(f"    epoch {e['epoch']}: {e['films_per_second']:.1f} films/s ({e['ratio_to_bare']:.2f} of bare), "
                  f"epoch {e['epoch_seconds']:.1f} s")
        p = r["projection_12539_films"]
        print(f"    projection for {PAPER_FILMS} films: decode {p['decode_seconds']:.0f} s, {p['seconds_per_epoch']:.0f} s "
              f"per epoch, 5 epochs {p['five_epochs_seconds'] / 60:.0f} min, decoded cache {p['decoded_cache_megabytes']:.0f} MB")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
