"""Measure the population gate (core.serving.population) on real films, in both directions.

    python bench/population.py RUN_DIR OTHER_SET [RUN_DIR OTHER_SET ...]

For each run (trained on one of the real sets in ../shared/data; its own films are found through its
data_report.json and split.csv), the gate statistics are fitted as training fits them (the run's training
films, one mis-prepared copy of each, its validation films for the threshold), then measured on films the
run never saw:

- its test films as they are: the share that passes (target >= 98%; >= 99% for the mis-preparation check);
- every film of OTHER_SET (another population, e.g. adult NIH films under a paediatric model): the share
  refused as "unlike_training_films" (target >= 90%), and as anything;
- its test films mis-prepared from the decoded original (rotated 90 degrees either way, rotated 180,
  inverted, a quarter blown up to full size): the share refused with the right reason (target >= 95%);
- non-radiographs (bench/gate.py's text pages, noise and patterns): the share refused as "not_a_chest_film".

Also the split-conformal sets of the run at 90% (core.evaluation.conformal, from its predictions.csv).
Writes bench/results/population.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))
from gate import non_radiographs  # noqa: E402 - bench/ is on the path when run as a script.

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
RESULTS = PROJECT_ROOT / "bench" / "results" / "population.json"
SUFFIXES = {".png", ".jpg", ".jpeg"}
MIS_PREPARED = ("rot90", "rot270", "rot180", "inverted", "crop")
RIGHT_DEFECT = {"rot90": "rotated", "rot270": "rotated", "rot180": "upside_down", "inverted": "inverted",
                "crop": "cropped"}


def mis_prepare_original(gray: np.ndarray, how: str, index: int) -> np.ndarray:
    """The decoded film mis-prepared at full resolution, as a user's file would be."""
    if how == "rot90":
        return np.rot90(gray, 1)
    if how == "rot270":
        return np.rot90(gray, 3)
    if how == "rot180":
        return np.rot90(gray, 2)
    if how == "inverted":
        return 255 - gray
    h, w = gray.shape
    row, col = divmod(index % 4, 2)
    return gray[row * h // 2:(row + 1) * h // 2, col * w // 2:(col + 1) * w // 2]


def share(values: list[bool]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def conformal_of(run: Path, classes: list[str]) -> dict:
    from core.evaluation.conformal import run_conformal

    rows = list(csv.DictReader(open(run / "predictions.csv")))

    def arrays(subset):
        chosen = [r for r in rows if r["subset"] == subset]
        return (np.array([[float(r[f"p_{c}"]) for c in classes] for r in chosen]),
                np.array([classes.index(r["label"]) for r in chosen]))

    section = run_conformal(*arrays("val"), *arrays("test"), classes)
    section.pop("risk_coverage")
    return section


def measure(run: Path, other: Path, cache: Path | None) -> dict:
    from core.imaging.loader import load_image, read_film, to_model_input
    from core.model import load_model
    from core.serving import population, population_fit

    report = json.loads((run / "data_report.json").read_text())
    own = Path(report["root"])
    if not own.is_dir():
        own = SHARED_DATA / own.name
    classes = report["classes"]
    rows = list(csv.DictReader(open(run / "split.csv")))
    paths = {s: [own / r["path"] for r in rows if r["subset"] == s] for s in ("train", "val", "test")}
    labels = np.array([classes.index(r["label"]) for r in rows if r["subset"] == "train"])
    model = load_model(run / "model.keras")
    size = int(json.loads((run / "config.json").read_text()).get("image_size", 224))
    feature_model = population.depth_feature_model(model)

    def features_of(images):
        return population.depth_features(feature_model, images)[1]

    def from_files(files, how=None):
        model_inputs, colours = [], []
        for index, path in enumerate(files):
            film = read_film(str(path), max_side=2 * size)
            gray = film.gray if how is None else np.ascontiguousarray(mis_prepare_original(film.gray, how, index))
            model_inputs.append(to_model_input(gray, size))
            colours.append(float(film.meta.get("colorfulness", 0.0)))
        return np.stack(model_inputs), np.array(colours)

    # Every forward pass once; the features are kept (cache) so the verdicts can be recomputed cheaply.
    cached = dict(np.load(cache, allow_pickle=False)) if cache is not None and cache.is_file() else {}
    computed = not cached  # With cached features only films are decoded: no forward-pass time to report.
    groups = {"test": (paths["test"], None),
              "other": (sorted(p for p in other.rglob("*") if p.suffix.lower() in SUFFIXES), None)}
    groups.update({how: (paths["test"], how) for how in MIS_PREPARED})
    inputs = {}
    started = time.perf_counter()
    for name, (files, how) in groups.items():
        inputs[name], inputs[f"{name}_colour"] = from_files(files, how)
        if f"{name}_features" not in cached:
            cached[f"{name}_features"] = features_of(inputs[name])
    for name, data in non_radiographs().items():
        film = read_film(data, name=name, max_side=2 * size)
        inputs.setdefault("nonradiograph", []).append(to_model_input(film.gray, size))
        inputs.setdefault("nonradiograph_colour", []).append(float(film.meta.get("colorfulness", 0.0)))
    inputs["nonradiograph"] = np.stack(inputs["nonradiograph"])
    inputs["nonradiograph_colour"] = np.array(inputs["nonradiograph_colour"])
    if "nonradiograph_features" not in cached:
        cached["nonradiograph_features"] = features_of(inputs["nonradiograph"])
    if "train_features" not in cached:
        train_images = np.stack([load_image(str(p), size) for p in paths["train"]])
        copies, defect_labels = population_fit.mis_prepared_copies(train_images)
        cached.update(train_features=features_of(train_images), copies_features=features_of(copies),
                      copies_labels=defect_labels,
                      val_features=features_of(np.stack([load_image(str(p), size) for p in paths["val"]])))
    feature_seconds = time.perf_counter() - started
    if cache is not None:
        np.savez(cache, **cached)
    started = time.perf_counter()
    statistics = population_fit.fit_population(cached["train_features"], labels, cached["val_features"],
                                           population_fit.depth_sizes(model), cached["copies_features"],
                                           cached["copies_labels"])
    fit_seconds = time.perf_counter() - started
    described = f"{own.name} films, {len(paths['train'])} in training"

    def verdicts(name):
        return [population.assess(image, image[:, :, 0], colour, row, statistics, features_of, described)
                for image, colour, row in zip(inputs[name], inputs[f"{name}_colour"], cached[f"{name}_features"])]

    def scores(name):
        values = population.population_scores(cached[f"{name}_features"], statistics)
        return [round(float(q), 2) for q in np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])]

    result = {"run": run.name, "population": own.name, "other": other.name,
              "n_train": len(paths["train"]), "n_val": len(paths["val"]), "n_test": len(paths["test"]),
              "threshold": round(statistics["threshold"], 3), "fit_seconds": round(fit_seconds, 1),
              "feature_seconds": round(feature_seconds, 1) if computed else None}
    test = verdicts("test")
    result["test_films_pass"] = {"share": share([v.passed for v in test]), "n": len(test),
                                 "refused_kinds": dict(Counter(v.kind for v in test if not v.passed)),
                                 "score_quantiles": scores("test")}
    others = verdicts("other")
    result["other_population"] = {
        "n": len(others),
        "unlike_share": share([v.kind == "unlike_training_films" for v in others]),
        "refused_share": share([not v.passed for v in others]),
        "kinds": dict(Counter(v.defect or v.kind for v in others)), "score_quantiles": scores("other"),
    }
    mis = {}
    for how in MIS_PREPARED:
        found = verdicts(how)
        mis[how] = {"right_reason": share([v.kind == "mis_prepared" and v.defect == RIGHT_DEFECT[how] for v in found]),
                    "refused": share([not v.passed for v in found]),
                    "outcomes": dict(Counter(v.defect or v.kind for v in found)), "score_quantiles": scores(how)}
    right = [mis[h]["right_reason"] for h in MIS_PREPARED]
    result["mis_prepared"] = {"right_reason_share": round(float(np.mean(right)), 4), "by_kind": mis}
    found = verdicts("nonradiograph")
    result["non_radiographs"] = {"n": len(found), "not_a_chest_share": share([v.kind == "not_a_chest_film" for v in found]),
                                 "refused_share": share([not v.passed for v in found]),
                                 "kinds": dict(Counter(v.defect or v.kind for v in found)),
                                 "score_quantiles": scores("nonradiograph")}
    result["conformal_90"] = conformal_of(run, classes)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="RUN_DIR OTHER_SET pairs (OTHER_SET: a folder name under "
                                                 "../shared/data or a path)")
    parser.add_argument("--cache", help="folder keeping each run's features between measurements")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give RUN_DIR OTHER_SET pairs")
    if not SHARED_DATA.is_dir():
        print(f"skipped: {SHARED_DATA} not found")
        return 0
    os.environ.setdefault("KERAS_HOME", str(SHARED_DATA.parent / "keras_home"))
    results = []
    for run, other in zip(args.pairs[::2], args.pairs[1::2]):
        other_path = Path(other) if Path(other).is_dir() else SHARED_DATA / other
        cache = Path(args.cache) / f"{Path(run).name}-{other_path.name}.npz" if args.cache else None
        results.append(measure(Path(run), other_path, cache))
        print(json.dumps(results[-1], indent=1))
    RESULTS.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d"), "runs": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
