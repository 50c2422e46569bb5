"""The paper recipe at the paper's scale, measured end to end: python bench/scale.py [--films 12539] [--one-epoch]

Builds a dataset of `--films` films in the paper's four classes from the real NIH films in ../shared/data/nih-cxr4
(231 films) into a temporary folder outside the project: every film is a perturbed copy of a real one (gain,
offset, a shift of a few pixels and sensor-like noise, re-encoded as JPEG), so no two files are byte-identical;
labels.csv gives each copy its source film's patient id, so a patient's copies stay in one subset of the split.
The class balance is the paper's: its test confusion matrix has 497 / 470 / 417 / 497 films of Normal /
Pneumonia / Cardiomegaly / Pneumothorax, a stratified 15% of 12,539, so the whole set is scaled from those.

Then runs the whole paper recipe with `python -m core train --preset paper` in a child process (scan and
integrity check, split, 5 epochs, evaluation, gate, model card) and records: the wall time, each phase's
seconds (from the child's progress.json, polled, and the run's own files), films per second per epoch (history.csv
train_seconds), the child's peak resident memory (ru_maxrss; and the largest VmRSS polled in each progress
phase, to tell which phase sets the peak), the disk the run and its staging used, and the load average at
the start and end (on a shared machine the timings depend on it). With --one-epoch (meant for 50,000 films)
the run is stopped by the Cancel mechanism once the first epoch ends: scan, split and one epoch are measured,
no run is registered. Results merge into bench/results/scale.json by film count.

Accuracy figures of this run are not a result: the copies of one film are near-duplicates of one another.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SOURCE = PROJECT_ROOT.parent / "shared" / "data" / "nih-cxr4"
RESULTS = PROJECT_ROOT / "bench" / "results" / "scale.json"
PAPER_TEST_COUNTS = {"Normal": 497, "Pneumonia": 470, "Cardiomegaly": 417, "Pneumothorax": 497}


def class_counts(films: int) -> dict[str, int]:
    """The paper's class balance for `films` films (largest remainders, so the counts sum to `films`)."""
    total = sum(PAPER_TEST_COUNTS.values())
    exact = {name: films * count / total for name, count in PAPER_TEST_COUNTS.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: counts[n] - exact[n])[:films - sum(counts.values())]:
        counts[name] += 1
    return counts


def _perturbed_copy(job) -> None:
    source, target, seed = job
    rng = np.random.default_rng(seed)
    film = np.asarray(Image.open(source).convert("L"), dtype=np.float32)
    film = film * rng.uniform(0.93, 1.07) + rng.uniform(-8, 8) + rng.normal(0, 2.0, film.shape)
    film = np.roll(film, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
    Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).save(target, quality=92)


def build_dataset(folder: Path, films: int) -> dict[str, int]:
    """`films` perturbed copies of the NIH films in the paper's balance, with labels.csv (file, patient_id)."""
    sources = {}
    with (SOURCE / "labels.csv").open() as handle:
        for row in csv.DictReader(handle):
            sources.setdefault(row["label"], []).append((SOURCE / row["file"], row["patient_id"]))
    counts = class_counts(films)
    jobs, rows = [], []
    for name, count in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            source, patient = sources[name][number % len(sources[name])]
            target = folder / name / f"{name[:4].lower()}_{number:05d}.jpg"
            jobs.append((source, target, len(jobs)))
            rows.append({"file": f"{name}/{target.name}", "patient_id": patient})
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_perturbed_copy, jobs, chunksize=64))
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / ".complete").write_text(json.dumps(counts))
    return counts


def _megabytes(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


def _resident_megabytes(pid: int) -> float:
    """A process's resident memory now (VmRSS), 0 when it cannot be read (it has just exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def measure(data: Path, work: Path, epochs: int, one_epoch: bool) -> dict:
    """Run the paper recipe on `data` in a child process and measure it."""
    models = work / "models"
    out = models / f"scale-{'one-epoch' if one_epoch else 'paper'}"
    staging = models / f".{out.name}.partial"
    shutil.rmtree(models, ignore_errors=True)
    command = [sys.executable, "-m", "core", "train", "--data", str(data), "--preset", "paper", "--epochs", str(epochs),
               "--models-dir", str(models), "--out", str(out)]
    log = work / f"{out.name}.log"
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    transitions, disk, rss_by_phase = [], {"peak": 0.0}, {}

    def watch():
        last = None
        while child.poll() is None:
            try:
                progress = json.loads((staging / "progress.json").read_text())
            except (OSError, ValueError):
                progress = {}
            phase = progress.get("phase")
            if phase and phase != last:
                transitions.append((phase, time.monotonic() - started))
                last = phase
            if last:
                rss_by_phase[last] = max(rss_by_phase.get(last, 0.0), _resident_megabytes(child.pid))
            if one_epoch and len(progress.get("history", [])) >= 1 and not (staging / "STOP").exists():
                transitions.append(("stop requested", time.monotonic() - started))
                (staging / "STOP").write_text("")
            disk["peak"] = max(disk["peak"], _megabytes(staging) + _megabytes(out))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = child.wait()
    wall = time.monotonic() - started
    watcher.join()
    folder = out if out.exists() else staging
    history = list(csv.DictReader((folder / "history.csv").open())) if (folder / "history.csv").exists() else []
    report = json.loads((folder / "data_report.json").read_text()) if (folder / "data_report.json").exists() else {}
    marks = dict((phase, seconds) for phase, seconds in reversed(transitions))  # First time each phase began.
    films = report.get("n_files_usable")
    train_films = sum(report.get("subsets", {}).get("train", {}).values()) if report else None
    phases = {"scan_and_decode": report.get("decode_seconds")}
    fit_start = marks.get("fine-tune")
    if fit_start is not None:
        phases["split_and_start"] = round(fit_start - marks.get("checking", 0) - (phases["scan_and_decode"] or 0), 1)
    for row in history:
        phases[f"epoch_{row['epoch']}"] = round(float(row["epoch_seconds"]), 1)
    if "evaluating" in marks:
        phases["evaluation_card_gate"] = round(marks.get("done", wall) - marks["evaluating"], 1)
        phases["register_and_exit"] = round(wall - marks.get("done", wall), 1)
    return {
        "films": films,
        "exit_code": code,
        "completed": out.exists(),
        "command": " ".join(command[1:]),
        "wall_seconds": round(wall, 1),
        "phases": phases,
        "phase_transitions": [[phase, round(seconds, 1)] for phase, seconds in transitions],
        "train_films": train_films,
        "films_per_second_per_epoch": [round(train_films / float(row["train_seconds"]), 1) for row in history]
        if train_films else [],
        "peak_rss_megabytes": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "peak_rss_megabytes_by_phase": {phase: round(value, 1) for phase, value in rss_by_phase.items()},
        "disk_megabytes": {"dataset": round(_megabytes(data), 1), "run_and_staging_peak": round(disk["peak"], 1),
                           "run": round(_megabytes(out), 1)},
        "load_average_at_start_and_end": None,
        "log_tail": log.read_text().splitlines()[-6:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=12_539)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--one-epoch", action="store_true", help="stop after the first epoch (scan, split, one epoch)")
    parser.add_argument("--work", help="folder for the dataset and runs (default: a temporary folder, kept for reuse)")
    args = parser.parse_args()
    work = Path(args.work or Path(tempfile.gettempdir()) / f"paru-scale-{args.films}")
    data = work / "films"
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        started = time.monotonic()
        counts = build_dataset(data, args.films)
        print(f"built {sum(counts.values())} films {counts} in {time.monotonic() - started:.0f} s", flush=True)
    load_before = os.getloadavg()
    result = measure(data, work, args.epochs, args.one_epoch)
    result["load_average_at_start_and_end"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    result["class_counts"] = json.loads((data / ".complete").read_text())
    result["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["method"] = (__doc__ or "").split("\n\n")[1].replace("\n", " ")
    results.setdefault("runs", {})[f"{args.films}{'-one-epoch' if args.one_epoch else ''}"] = result
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
