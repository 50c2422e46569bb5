"""How much do ImageNet MobileNetV2 features know about a dataset? python bench/probe.py [--datasets ...]

A linear probe: the model's own input path (the shared film loader, gray to RGB, [-1, 1] scaling) into the
ImageNet MobileNetV2 backbone, frozen; global-average-pooled features of three late layers, averaged with
those of the horizontally flipped film; a class-weighted logistic regression on them. Scored by 5-fold
cross-validation grouped by patient and stratified by class, repeated 4 times, so every film is a test film
once per repetition (instead of the 34 of one NIH test split).

This is the yardstick behind the accuracy section of the README: a recipe that fine-tunes on a few hundred
films rarely beats a well-regularised probe on the same features, so the probe's macro-F1 (reported for
every regularisation strength tried, so the best of them is an optimistic figure) says what the data allow.
Writes bench/results/probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
from accuracy import SHARED, real_sets_ready  # noqa: E402 - bench/ is on the path when run as a script.

RESULTS = PROJECT_ROOT / "bench" / "results" / "probe.json"
LAYERS = ("block_13_expand_relu", "block_16_project_BN", "out_relu")
STRENGTHS = (0.001, 0.003, 0.01, 0.03, 0.1)
FOLDS, REPEATS = 5, 4


def load_dataset(root: Path, image_size: int):
    """Films (uint8, N x S x S x 1), class indices, class names and patient groups of a dataset folder."""
    from core.data.layout import order_classes
    from core.data.labels import read_patient_ids
    from core.data.listing import list_candidate_files
    from core.data.scan import decode_in_chunks

    _, candidates, _ = list_candidate_files(root)
    classes = order_classes({label for _, label, _ in candidates})
    label_of = {path: label for path, label, _ in candidates}
    patients = read_patient_ids(root)
    paths, films = [], []
    for chunk_paths, images, errors, _ in decode_in_chunks([path for path, _, _ in candidates], image_size):
        paths += chunk_paths
        films.append(images)
        for path, reason in errors.items():
            print(f"skipped {path}: {reason}", file=sys.stderr)
    labels = np.array([classes.index(label_of[path]) for path in paths])
    groups = np.array([patients.get(path.relative_to(root).as_posix(), path.name) for path in paths])
    return np.concatenate(films), labels, classes, groups


def pooled_features(films: np.ndarray, image_size: int) -> np.ndarray:
    """Pooled features of LAYERS, averaged over each film and its mirror image, from the model's own input."""
    import keras

    from core.config import preset
    from core.model import build_model

    model = build_model(preset("recommended", image_size=image_size), num_classes=2)
    extractor = keras.Model(model.input, [
        keras.layers.GlobalAveragePooling2D()(model.get_layer(name).output) for name in LAYERS])
    features = []
    for batch in (films, films[:, :, ::-1]):
        features.append(np.concatenate(extractor.predict(batch, batch_size=32, verbose=0), axis=1))
    return (features[0] + features[1]) / 2


def cross_validate(features, labels, groups, strength: float) -> dict:
    """Macro-F1 (mean and sd over repetitions), per-class F1 and one-vs-rest AUC of one regularisation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=strength, class_weight="balanced", max_iter=5000))
    macro, per_class, accuracy, probabilities = [], [], [], []
    for repeat in range(REPEATS):
        folds = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=repeat)
        p = cross_val_predict(probe, features, labels, groups=groups, cv=folds, method="predict_proba")
        predicted = p.argmax(axis=1)
        macro.append(f1_score(labels, predicted, average="macro"))
        per_class.append(f1_score(labels, predicted, average=None))
        accuracy.append(float(np.mean(predicted == labels)))
        probabilities.append(p)
    mean_p = np.mean(probabilities, axis=0)
    return {
        "C": strength, "macro_f1": float(np.mean(macro)), "macro_f1_sd": float(np.std(macro)),
        "accuracy": float(np.mean(accuracy)), "f1_per_class": np.mean(per_class, axis=0).round(3).tolist(),
        "ovr_auc": [round(float(roc_auc_score(labels == k, mean_p[:, k])), 3) for k in range(mean_p.shape[1])],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["nih-cxr4", "pediatric-pneumonia"])
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    if not real_sets_ready(args.datasets):
        return 0
    results = {"machine": f"{os.cpu_count()} CPU cores", "layers": list(LAYERS), "folds": FOLDS,
               "repeats": REPEATS, "image_size": args.image_size, "datasets": {}}
    for dataset in args.datasets:
        started = time.time()
        films, labels, classes, groups = load_dataset(SHARED / "data" / dataset, args.image_size)
        features = pooled_features(films, args.image_size)
        rows = [cross_validate(features, labels, groups, strength) for strength in STRENGTHS]
        results["datasets"][dataset] = {"films": len(labels), "classes": classes, "by_C": rows,
                                        "seconds": round(time.time() - started, 1)}
        print(f"\n{dataset}: {len(labels)} films, classes {', '.join(classes)}")
        print("| C | macro-F1 (sd over repeats) | accuracy | F1 per class | one-vs-rest AUC |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['C']} | {row['macro_f1']:.3f} ({row['macro_f1_sd']:.3f}) | {row['accuracy']:.3f} | "
                  f"{' / '.join(f'{v:.2f}' for v in row['f1_per_class'])} | "
                  f"{' / '.join(f'{v:.2f}' for v in row['ovr_auc'])} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
