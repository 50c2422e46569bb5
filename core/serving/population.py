"""The population gate: is this a chest film like the ones this model was trained on, prepared the right way?

Three questions, each with its own answer a person can act on (`KINDS`):

- "not_a_chest_film": the image statistics say it is no radiograph (a colour picture, a nearly uniform
  image; core.serving.gate's checks), or it is further from the training films than even mis-prepared
  copies of them come (a bound fitted on those copies; core.serving.population_fit).
- "mis_prepared": a chest film, but turned on its side, upside down, with inverted gray levels (a
  MONOCHROME1 film read as MONOCHROME2) or a part of the film blown up to full size; the reason says which and
  the fix ("the film looks upside down: rotate it").
- "unlike_training_films": a chest film, but unlike this model's training films (another population,
  scanner or age group); its figures do not apply.

Population distance (Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks", NeurIPS 2018): at several depths of the backbone (`POPULATION_LAYERS`:
two middle blocks, the last block and the pooled head features), the globally averaged feature maps are
scored by their Mahalanobis distance to the nearest class mean of the training films, with one covariance
shared by the classes. With hundreds of films and up to 1280 features, the covariance is estimated in its
top principal directions plus one isotropic variance for the rest (a low-rank-plus-noise model; the
inverse of a full sample covariance would not exist). Each depth's log distance is standardised by those
of films the statistics did not see (the validation films, and each training film scored out of fold),
and the depths are averaged: a film unlike the training films at any depth moves the average, and no
single depth's noise decides. The threshold is the 99.5% quantile (PASS_QUANTILE) of those unseen films' scores,
so about that share of unseen films of the training population passes (bench/population.py measures it).
A film beyond the "no chest film" bound is refused as such; every other film is read by the mis-preparation
classifier (below).

Mis-preparation: a multinomial logistic regression on the same features, fitted at training time on the
training films and every mis-prepared copy of each (rotated a quarter turn either way, upside down, inverted,
each quarter of the film blown up to full size and its central 60%: `COPY_VARIANTS`; a crop has many
faces). Chosen over comparing the film's distance with those of its rotated and inverted copies, which costs
four more forward passes for every film and cannot see a crop at all: the classifier costs nothing per film
(the features are already there). A film the distance refuses is mis-prepared when the classifier names a defect with at least DEFECT_PROBABILITY; a film
the distance passes, only when the classifier is surer than on nearly every validation film (the bar
`defect_bar` of the statistics, at least PASSED_DEFECT_PROBABILITY): a quarter of a film blown up can stay
near the training films at every depth. Where the named defect can be undone, the undone film is scored once
more: a film the fix brings (nearer) among the training films is mis-prepared; one that stays far is unlike
the training films (an adult film under a paediatric model is not cured by rotating it), and a film that
passed keeps its pass.

Statistics live in the run folder (`POPULATION_FILE_NAME`), fitted at training time by
core.serving.population_fit.
NumPy only at serving time; TensorFlow only in `depth_feature_model` and scikit-learn only in the fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from core.model import POOLED_FEATURES_LAYER_NAME
from core.runs.artifacts import POPULATION_FILE_NAME
from core.runs.checks import damaged_file, read_npz
from core.serving import gate as film_gate

POPULATION_LAYERS = ("block_5_add", "block_12_add", "block_15_add", POOLED_FEATURES_LAYER_NAME)
"""Backbone depths scored, shallow to deep (MobileNetV2's layer names; the last is core.model's)."""
KINDS = ("ok", "not_a_chest_film", "unlike_training_films", "mis_prepared")
DEFECTS = ("rotated", "upside_down", "inverted", "cropped")
"""What a mis-prepared film can be; the classifier's classes are ("ok",) + DEFECTS."""
FAR_FACTOR = 4.0
"""The same bound, in times the threshold, for statistics that do not carry their own ("far")."""
DEFECT_PROBABILITY = 0.7
"""The classifier's bar for naming the defect of a film the distance refused (below it: unlike the training
films; a chest film of another population can look like a blown-up part of a training film)."""
PASSED_DEFECT_PROBABILITY = 0.9
"""The least bar for refusing, as mis-prepared, a film the distance passed (see `defect_bar`)."""
COPY_VARIANTS = (("rotated", 0), ("rotated", 1), ("upside_down", 0), ("inverted", 0), ("cropped", 0),
                 ("cropped", 1), ("cropped", 2), ("cropped", 3), ("cropped", 4))
"""The mis-prepared copies made of each training film for the classifier: (defect, variant of mis_prepare)."""

_REASONS = {
    "ok": "Resembles this model's training films (population score {score:.2f}x the threshold).",
    "unlike_training_films": (
        "This is unlike the chest films this model was trained on ({population}; population score "
        "{score:.2f}x the threshold): it may come from another population, age group or scanner, where the "
        "model's figures do not apply. No diagnosis is shown; use a model trained on films like this one."),
    "not_a_chest_film": (
        "This does not look like a chest radiograph (population score {score:.1f}x the threshold, beyond "
        "even rotated or inverted chest films). Upload a frontal chest X-ray."),
    "rotated": "The film looks turned on its side: rotate it upright (a quarter turn) and upload it again.",
    "upside_down": "The film looks upside down: rotate it by 180 degrees and upload it again.",
    "inverted": ("The film's gray levels look inverted (bones dark, air bright; for example a MONOCHROME1 "
                 "film exported without its inversion): invert it and upload it again."),
    "cropped": ("This looks like part of a chest film blown up to full size: upload the whole frontal film, "
                "uncropped."),
}


@dataclass(frozen=True)
class PopulationVerdict:
    """passed: a diagnosis may be shown; kind: one of KINDS; reason: what it means and what to do;
    score: the population score divided by the threshold (above 1 fails), None when not computed;
    defect: one of DEFECTS when kind is "mis_prepared"."""

    passed: bool
    kind: str
    reason: str
    score: float | None = None
    defect: str | None = None

    def to_json(self) -> dict:
        out = {"passed": self.passed, "kind": self.kind, "reason": self.reason}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        if self.defect is not None:
            out["defect"] = self.defect
        return out


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def depth_feature_model(model):
    """A keras.Model from raw films to [probabilities, pooled features of each POPULATION_LAYERS depth]."""
    import keras

    outputs = [model.output]
    for name in POPULATION_LAYERS:
        layer_output = model.get_layer(name).output
        outputs.append(layer_output if len(layer_output.shape) == 2
                       else keras.layers.GlobalAveragePooling2D(name=f"population_pool_{name}")(layer_output))
    return keras.Model(model.input, outputs)


def depth_features(feature_model, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, k), features (n, D)): the depths' pooled features side by side, for raw films."""
    outputs = feature_model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(outputs[0]), np.concatenate([np.asarray(o) for o in outputs[1:]], axis=1)


def mis_prepare(image: np.ndarray, defect: str, variant: int = 0) -> np.ndarray:
    """A mis-prepared copy of a model-input film (S, S, 1) uint8: what `DEFECTS` name.

    variant picks the direction of a quarter turn (even: counter-clockwise) and the part that is blown up
    (0-3: the top left, top right, bottom left, bottom right quarter; 4 and above: the central 60%)."""
    gray = np.asarray(image)[:, :, 0]
    if defect == "rotated":
        out = np.rot90(gray, 1 if variant % 2 == 0 else 3)
    elif defect == "upside_down":
        out = np.rot90(gray, 2)
    elif defect == "inverted":
        out = 255 - gray
    elif defect == "cropped":
        h, w = gray.shape
        if variant >= 4:
            part = np.ascontiguousarray(gray[h // 5:h - h // 5, w // 5:w - w // 5])
        else:
            row, col = divmod(variant, 2)
            part = np.ascontiguousarray(gray[row * h // 2:(row + 1) * h // 2, col * w // 2:(col + 1) * w // 2])
        out = np.asarray(Image.fromarray(part, mode="L").resize((w, h), Image.Resampling.BILINEAR))
    else:
        raise ValueError(f"Got defect={defect!r}; must be one of {DEFECTS}.")
    return np.ascontiguousarray(out, dtype=np.uint8)[:, :, np.newaxis]


def undo(image: np.ndarray, defect: str) -> list[np.ndarray]:
    """The candidate fixes of a defect (both quarter turns for "rotated"); none for "cropped"."""
    gray = np.asarray(image)[:, :, 0]
    if defect == "rotated":
        candidates = [np.rot90(gray, 1), np.rot90(gray, 3)]
    elif defect == "upside_down":
        candidates = [np.rot90(gray, 2)]
    elif defect == "inverted":
        candidates = [255 - gray]
    else:
        candidates = []
    return [np.ascontiguousarray(c, dtype=np.uint8)[:, :, np.newaxis] for c in candidates]


# --------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------


def _depth_distance(features: np.ndarray, depth: dict) -> np.ndarray:
    """log of the Mahalanobis distance per feature to the nearest class mean, (n,)."""
    best = None
    for mean in depth["means"]:
        centred = features - mean
        projected = centred @ depth["components"].T
        residual = np.maximum(np.sum(centred ** 2, axis=1) - np.sum(projected ** 2, axis=1), 0.0)
        distance = np.sum(projected ** 2 / depth["variances"], axis=1) + residual / depth["rest"]
        best = distance if best is None else np.minimum(best, distance)
    return np.log(best / features.shape[1] + 1e-12)


def split_depths(features: np.ndarray, sizes) -> list[np.ndarray]:
    """depth_features columns (n, D) as one (n, size) array per depth."""
    return np.split(np.asarray(features, np.float64), np.cumsum(sizes)[:-1], axis=1)


def depth_distances(features: np.ndarray, depths: list[dict], sizes) -> np.ndarray:
    """Log Mahalanobis distance per feature (n, depths) of films to each depth's statistics."""
    return np.stack([_depth_distance(part, depth) for part, depth in zip(split_depths(features, sizes), depths)], 1)


POPULATION_EXPECTED = ("the population gate's statistics written at training time (threshold, sizes and "
                       "depth<i>_means/components/variances/rest for each depth)")


def load_population(run_dir: str | os.PathLike) -> dict | None:
    """The run's statistics, or None for a run trained before this gate (no file: the caller keeps
    core.serving.gate's check). A damaged file is a ValueError naming it (core.runs.checks.damaged_file),
    never a silent fall back to the first gate, which would pass films of another population unsaid."""
    path = Path(run_dir) / POPULATION_FILE_NAME
    if not path.is_file():
        return None
    arrays = read_npz(path, ("threshold", "sizes"))
    try:
        statistics = {key: (value.astype(np.float64) if value.dtype.kind == "f" else value)
                      for key, value in arrays.items()}
        statistics["threshold"] = float(statistics["threshold"])
        n_depths = len(statistics["sizes"])
    except (TypeError, ValueError):
        raise damaged_file(path, "holds a threshold or sizes of the wrong shape", POPULATION_EXPECTED) from None
    missing = [f"depth{index}_{key}" for index in range(n_depths) for key in ("means", "components", "variances",
                                                                              "rest")
               if f"depth{index}_{key}" not in statistics]
    if missing:
        raise damaged_file(path, f"lacks {', '.join(missing[:4])}", POPULATION_EXPECTED)
    return statistics


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def population_scores(features: np.ndarray, statistics: dict) -> np.ndarray:
    """The population score of each film (n,) divided by the threshold: above 1 fails."""
    features = np.atleast_2d(np.asarray(features, np.float64))
    sizes = [int(s) for s in statistics["sizes"]]
    raw = []
    for index, part in enumerate(split_depths(features, sizes)):
        depth = {key: statistics[f"depth{index}_{key}"] for key in ("means", "components", "variances", "rest")}
        depth["rest"] = float(depth["rest"])
        raw.append(_depth_distance(part, depth))
    scores = ((np.stack(raw, axis=1) - statistics["centre"]) / statistics["spread"]).mean(axis=1)
    return scores / statistics["threshold"]


def defect_probabilities(features: np.ndarray, statistics: dict) -> np.ndarray:
    """(n, 1 + len(DEFECTS)) probabilities of ("ok",) + DEFECTS from the mis-preparation classifier."""
    x = (np.atleast_2d(np.asarray(features, np.float64)) - statistics["x_mean"]) / statistics["x_scale"]
    logits = x @ statistics["coef"].T + statistics["intercept"]
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = np.zeros((len(x), 1 + len(DEFECTS)))
    out[:, statistics["classifier_classes"].astype(int)] = probabilities
    return out


def from_gate_result(result: film_gate.GateResult) -> PopulationVerdict:
    """The verdict of core.serving.gate's check, for a run trained before population statistics existed:
    its one feature distance cannot tell another population from no chest film, and says so."""
    if result.passed:
        return PopulationVerdict(True, "ok", result.reason, result.score)
    if result.score is None:
        return PopulationVerdict(False, "not_a_chest_film", result.reason)
    return PopulationVerdict(False, "unlike_training_films", (
        f"This image is unlike the films this model was trained on (feature distance {result.score:.2f}x "
        "the threshold): a film of another population or scanner, or no chest film at all (this run was "
        "trained before the gate that tells them apart). No diagnosis is shown."), result.score)


def assess(image: np.ndarray, gray: np.ndarray, colorfulness: float, features: np.ndarray | None,
           statistics: dict | None, features_of: Callable[[np.ndarray], np.ndarray] | None = None,
           population: str = "") -> PopulationVerdict:
    """The gate's verdict for one film.

    Args:
        image: the model-input film (S, S, 1); gray: the decoded film (2-D uint8); colorfulness: the loader's.
        features: the film's depth_features row (D,), or None; statistics: load_population's, or None.
        features_of: model-input films (n, S, S, 1) -> depth features (n, D), used to score an undone defect
            (at most two more films, only for films the classifier names a defect of); None skips that check.
        population: a few words on the training films for the reason, e.g. "paediatric films, 562 in training".
    """
    basic = film_gate.check(gray, colorfulness, None, None)
    if not basic.passed:
        return PopulationVerdict(False, "not_a_chest_film", basic.reason)
    if statistics is None or features is None:
        return PopulationVerdict(True, "ok", "Image statistics look like a radiograph (this run has no "
                                             "population statistics).")
    score = float(population_scores(features, statistics)[0])
    if score > float(statistics.get("far", FAR_FACTOR)):
        return PopulationVerdict(False, "not_a_chest_film", _REASONS["not_a_chest_film"].format(score=score), score)
    probabilities = defect_probabilities(features, statistics)[0]
    top = int(np.argmax(probabilities))
    # Statistics fitted before the bar existed consult the classifier only for refused films.
    bar = DEFECT_PROBABILITY if score > 1.0 else float(statistics.get("defect_bar", np.inf))
    if top > 0 and probabilities[top] >= bar:
        defect = DEFECTS[top - 1]
        fixes = undo(image, defect)
        if not fixes or features_of is None:
            return PopulationVerdict(False, "mis_prepared", _REASONS[defect], score, defect)
        fixed = float(np.min(population_scores(features_of(np.stack(fixes)), statistics)))
        if fixed <= 1.0 and (score > 1.0 or fixed < score):
            return PopulationVerdict(False, "mis_prepared", _REASONS[defect], score, defect)
    if score <= 1.0:
        return PopulationVerdict(True, "ok", _REASONS["ok"].format(score=score), score)
    return PopulationVerdict(False, "unlike_training_films",
                             _REASONS["unlike_training_films"].format(score=score,
                                                                      population=population or "its training films"),
                             score)
