"""Fitting the population gate (core.serving.population) at training time: the multi-depth statistics, the
reference scores that set the threshold and the "no chest film" bound, and the mis-preparation classifier.

What is fitted and why is described in core.serving.population, which reads the result; this module writes
it. scikit-learn (the classifier) is imported only inside `fit_population`; TensorFlow only through the
model passed to `fit_population_for_run`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.runs.artifacts import POPULATION_FILE_NAME
from core.serving.batch import rows_in_chunks
from core.serving.population import (
    COPY_VARIANTS,
    DEFECTS,
    FAR_FACTOR,
    PASSED_DEFECT_PROBABILITY,
    defect_probabilities,
    POPULATION_LAYERS,
    depth_distances,
    split_depths,
    depth_feature_model,
    depth_features,
    mis_prepare,
)

PASS_QUANTILE = 0.995
"""The share of unseen films of the training population the threshold lets through (about). Above the 99%
that correctly prepared films must pass: a threshold at exactly that quantile passes it only on average, and
with a few hundred reference films the quantile itself moves by about half a percent."""
FAR_QUANTILE, FAR_MARGIN = 0.995, 1.1
"""Beyond FAR_MARGIN times this quantile of the mis-prepared training copies' scores, no chest film at all."""
MAX_COMPONENTS = 64
COMPONENT_FILMS = 5
FOLDS = 10
MAX_FIT_FILMS = 2000
MAX_COPY_FILMS = 400
"""At most this many training films get their mis-prepared copies (len(COPY_VARIANTS) forward passes each)."""
DEFECT_BAR_QUANTILE = 0.995
"""A film the distance passes is called mis-prepared only above this quantile of the validation films' top
defect probability (and at least PASSED_DEFECT_PROBABILITY)."""
MIN_TRAIN_FILMS, MIN_VAL_FILMS = 4, 2
FEATURE_CHUNK = 256
CLASSIFIER_C = 0.01
"""Inverse L2 strength of the mis-preparation classifier (strong: 1,568 features, hundreds of films)."""


def _fit_depth(features: np.ndarray, labels: np.ndarray) -> dict:
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    singular_values, vt = _principal_directions(centred)
    # At most one direction per COMPONENT_FILMS films: more would fit the training films' own noise, and
    # then films the statistics never saw (out of fold, validation) look further away than they are.
    k = int(max(1, min(MAX_COMPONENTS, len(features) // COMPONENT_FILMS, features.shape[1] - 1)))
    variances = singular_values ** 2 / max(len(features) - len(classes), 1)
    # The rest of the variance, spread over the remaining directions (the "noise" of the low-rank model).
    rest = float(max(variances[k:].sum() / max(features.shape[1] - k, 1), 1e-8))
    return {"means": means, "components": vt[:k], "variances": np.maximum(variances[:k], rest), "rest": rest}


def _principal_directions(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (descending) and right singular vectors of `centred` (n, p), as np.linalg.svd gives,
    from the eigen-decomposition of the smaller Gram matrix (films are fewer than features at deep layers,
    where this is several times faster than the SVD)."""
    n, p = centred.shape
    if n >= p:
        values, vectors = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(values)[::-1]
        return np.sqrt(np.maximum(values[order], 0.0)), vectors[:, order].T
    values, vectors = np.linalg.eigh(centred @ centred.T)
    order = np.argsort(values)[::-1]
    singular_values = np.sqrt(np.maximum(values[order], 0.0))
    kept = singular_values > singular_values[0] * 1e-10
    directions = (centred.T @ vectors[:, order][:, kept]) / singular_values[kept]
    return singular_values, directions.T


def _out_of_fold_distances(train: np.ndarray, labels: np.ndarray, sizes, folds: int = FOLDS) -> np.ndarray:
    """Each training film's distances (n, depths) under statistics fitted without it (`folds`-fold): films
    the statistics never saw, as many as there are training films, for a threshold that a handful of
    validation films alone would leave to chance."""
    order = np.random.default_rng(0).permutation(len(train))
    out = np.empty((len(train), len(sizes)))
    for fold in np.array_split(order, min(folds, len(train))):
        rest = np.setdiff1d(order, fold)
        depths = [_fit_depth(part, labels[rest]) for part in split_depths(train[rest], sizes)]
        out[fold] = depth_distances(train[fold], depths, sizes)
    return out


def fit_population(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
                   sizes: list[int], defect_features: np.ndarray, defect_labels: np.ndarray) -> dict:
    """Fit the population statistics and the mis-preparation classifier.

    Args:
        train_features (n, D), val_features (m, D): depth_features of correctly prepared training and
            validation films; sizes: how many of the D columns each POPULATION_LAYERS depth has.
        train_labels (n,): class indices (the distance is to the nearest class mean).
        defect_features (r, D), defect_labels (r,): features of mis-prepared copies (see
            `mis_prepared_copies`) and their index in DEFECTS.
    Returns:
        The statistics `save_population` writes and `assess` reads.
    """
    from sklearn.linear_model import LogisticRegression

    train = np.asarray(train_features, np.float64)
    labels = np.asarray(train_labels)
    if len(train) < MIN_TRAIN_FILMS or len(val_features) < MIN_VAL_FILMS:
        raise ValueError(f"Got {len(train)} training and {len(val_features)} validation films; the population "
                         f"gate needs at least {MIN_TRAIN_FILMS} and {MIN_VAL_FILMS}.")
    depths = [_fit_depth(part, labels) for part in split_depths(train, sizes)]
    reference = np.concatenate([_out_of_fold_distances(train, labels, sizes),
                                depth_distances(np.asarray(val_features, np.float64), depths, sizes)])
    centre, spread = reference.mean(axis=0), reference.std(axis=0) + 1e-6
    val_scores = ((reference - centre) / spread).mean(axis=1)
    # The plain quantile, not the finite-sample one of split conformal prediction: with a few hundred
    # reference films that is their largest score, which a single odd film of the training source
    # (a lateral view, a child among adults) would then set. The score is a mean of standard scores, so it
    # can be negative; the threshold is kept away from 0 so that "times the threshold" stays meaningful.
    threshold = float(max(np.quantile(val_scores, PASS_QUANTILE), 0.5))
    # "No chest film at all" starts beyond the mis-prepared copies of the training films: a chest film on
    # its side is far from the training films, but nearer than a document or a photograph.
    defect_scores = ((depth_distances(np.asarray(defect_features, np.float64), depths, sizes) - centre)
                     / spread).mean(axis=1) / threshold
    far = float(max(np.quantile(defect_scores, FAR_QUANTILE) * FAR_MARGIN, 1.5)) if len(defect_scores) else FAR_FACTOR
    x = np.concatenate([train, np.asarray(defect_features, np.float64)])
    y = np.concatenate([np.zeros(len(train), int), np.asarray(defect_labels, int) + 1])
    x_mean, x_scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    classifier = LogisticRegression(C=CLASSIFIER_C, max_iter=3000).fit((x - x_mean) / x_scale, y)
    statistics = {"sizes": np.asarray(sizes, np.int64), "centre": centre, "spread": spread,
                  "threshold": np.float64(threshold), "far": np.float64(far), "x_mean": x_mean, "x_scale": x_scale,
                  "coef": classifier.coef_, "intercept": classifier.intercept_,
                  "classifier_classes": classifier.classes_.astype(np.int64)}
    # The bar for refusing a film the distance passed: above what correctly prepared films never seen by the
    # classifier (the validation films) reach.
    val_defect = defect_probabilities(val_features, statistics)[:, 1:].max(axis=1)
    statistics["defect_bar"] = np.float64(max(np.quantile(val_defect, DEFECT_BAR_QUANTILE),
                                              PASSED_DEFECT_PROBABILITY))
    for index, depth in enumerate(depths):
        statistics.update({f"depth{index}_{key}": np.asarray(value) for key, value in depth.items()})
    return statistics


def mis_prepared_copies(images: np.ndarray, max_films: int = MAX_COPY_FILMS) -> tuple[np.ndarray, np.ndarray]:
    """Every COPY_VARIANTS copy of each film, of at most `max_films` films (a fixed random sample):
    (copies (n * len(COPY_VARIANTS), S, S, 1) uint8, defect indices into DEFECTS), variant by variant."""
    images = np.asarray(images)
    if len(images) > max_films:
        images = images[np.sort(np.random.default_rng(1).choice(len(images), max_films, replace=False))]
    copies = [mis_prepare(image, defect, variant) for defect, variant in COPY_VARIANTS for image in images]
    labels = np.repeat([DEFECTS.index(defect) for defect, _ in COPY_VARIANTS], len(images))
    return np.stack(copies) if copies else np.zeros((0,) + tuple(images.shape[1:]), np.uint8), labels


def depth_sizes(model) -> list[int]:
    """How many features each POPULATION_LAYERS depth contributes (its channel count)."""
    return [int(model.get_layer(name).output.shape[-1]) for name in POPULATION_LAYERS]


def fit_population_for_run(run_dir: str | os.PathLike, model, images: np.ndarray, labels: np.ndarray,
                           index: dict, features_of_rows=None, features_of_films=None) -> Path | None:
    """Fit and save a run's population statistics at training time.

    Args:
        model: the trained model; images: every film of the run (n, S, S, 1) uint8; labels (n,) class
        indices; index: {"train": rows, "val": rows} into them.
    Returns the file written, or None when the split has too few films for statistics (the run then keeps
    core.serving.gate's check). Costs one forward pass over the training and validation films, on at most
    MAX_FIT_FILMS of each (a fixed random sample; the statistics need no more, and a large dataset's films
    may be an on-disk cache that must not be read into memory whole), and len(COPY_VARIANTS) passes over
    mis-prepared copies of at most MAX_COPY_FILMS of the training films.
    features_of_rows: rows -> their depth_features (n, D), when the caller has them from a forward pass it
    makes anyway (core.training.outputs); features_of_films: films -> their depth_features, for the
    mis-prepared copies (default: `model`'s depth_feature_model).
    """
    if len(index["train"]) < MIN_TRAIN_FILMS or len(index["val"]) < MIN_VAL_FILMS:
        return None  # Too few films for statistics; the run keeps core.serving.gate's check.
    feature_model = depth_feature_model(model)

    def features_of(films):  # A chunk at a time: a float32 copy of every film at once would be gigabytes.
        return rows_in_chunks(lambda part: depth_features(feature_model, part)[1], films, np.arange(len(films)),
                              chunk=FEATURE_CHUNK)

    if features_of_rows is None:
        def features_of_rows(rows):
            return features_of(np.asarray(images[rows]))

    rng = np.random.default_rng(0)
    rows = {subset: np.sort(rng.choice(index[subset], min(MAX_FIT_FILMS, len(index[subset])), replace=False))
            for subset in ("train", "val")}
    train = np.asarray(images[rows["train"]])
    copies, defect_labels = mis_prepared_copies(train)
    statistics = fit_population(features_of_rows(rows["train"]), np.asarray(labels)[rows["train"]],
                                features_of_rows(rows["val"]), depth_sizes(model),
                                (features_of_films or features_of)(copies), defect_labels)
    return save_population(run_dir, statistics)


def save_population(run_dir: str | os.PathLike, statistics: dict) -> Path:
    path = Path(run_dir) / POPULATION_FILE_NAME
    np.savez_compressed(path, **{key: (np.asarray(value, np.float32) if np.asarray(value).dtype.kind == "f"
                                       else np.asarray(value)) for key, value in statistics.items()})
    return path
