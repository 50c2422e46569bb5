"""Are a run's heatmaps faithful to the model? Three checks on the run's own test films, and a verdict in words.

1. Deletion and insertion (Petsiuk et al., RISE, 2018). Each film is cut into a GRID x GRID grid of cells
   (32-pixel cells on a 224 film: the grid of the CAM layer itself). The cells are deleted, that is replaced
   by the film's own mean pixel value, one at a time in the order the map ranks them (highest mean map value
   first), and the probability of the class predicted on the intact film is read after each step: the
   deletion curve. Insertion starts from the film with every cell replaced and puts the cells back in the
   same order. Both are repeated in RANDOM_ORDERS random orders and averaged. A faithful map makes the
   deletion curve fall faster than random (a lower area under it, AUC over the deleted fraction 0..1) and the
   insertion curve rise faster (a higher AUC).
2. Cascading model randomisation (Adebayo et al., 2018). A copy of the model is re-initialised group by group
   from the head down through the top blocks of the backbone; after each step the maps of the same films and
   classes are computed again and compared with the trained model's by Spearman rank correlation. Maps that
   survive randomisation (correlation near 1) show the film, not what the model learned.
3. Class sensitivity. Spearman between the map of the predicted class and the map of the runner-up class:
   maps that do not change with the class say nothing about the class.

`check_run` writes the report to <run>/explain_check.json, or for a shipped run to the user data dir (read back
with core.runs.registry.load_explain_check);
`check_films` is the same on any model and films.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from core.data.scan import decode_in_chunks
from core.explain.gradcam import cached_grad_cam
from core.explain.methods import DEFAULT_METHOD, METHOD_LABELS, METHOD_LAYERS, check_method, explain
from core.model import HEAD_LAYER_NAMES, LAST_CONV_BN_LAYER_NAME, LAST_CONV_LAYER_NAME, backbone_layers
from core.runs.artifacts import (
    SPLIT_FILE_NAME,
    now_iso,
    read_split_csv,
    run_dataset_root,
    write_json_atomic,
)
from core.runs.card import refresh_model_card_quietly
from core.runs.registry import Run, explain_check_path, is_shipped_run, load_run, load_run_model

REPORT_VERSION = 1
GRID = 7
"""Cells per side of the deletion grid."""
STEP_CELLS = 4
"""Cells deleted (or inserted) between two readings of the probability: the curves have 14 points for 49
cells, a quarter of the forward passes of reading after every cell, for nearly the same area."""
RANDOM_ORDERS = 3
"""Random deletion orders per film; their curves are averaged."""
DEFAULT_FILMS = 40
"""Test films checked unless told otherwise (all of them when the test set is smaller)."""
RANDOMISED_BLOCKS = 3
"""Backbone blocks re-initialised after the head and the last convolution, from the top down."""
REPLACEMENT = "film mean"
REPLACEMENT_TEXT = "each deleted cell is replaced by the mean pixel value of its own film"
FAITHFUL_DELETION_RATIO = 0.9
"""Maps count as more faithful than random when their deletion AUC is at most this share of random order's
and the 95% interval of the per-film difference excludes zero."""
RANDOMISED_MAX_SPEARMAN = 0.5
"""After the whole cascade, maps should have changed: mean Spearman with the trained maps below this."""
CLASS_MAX_SPEARMAN = 0.8
"""Maps of the predicted and the runner-up class that agree above this do not depend on the class."""


# --------------------------------------------------------------------------------------------------
# Deletion and insertion
# --------------------------------------------------------------------------------------------------


def cell_ids(size: int, grid: int = GRID) -> np.ndarray:
    """(size, size) int array: the cell (row * grid + column) each pixel belongs to; cells as even as can be."""
    edges = np.round(np.linspace(0, size, grid + 1)).astype(int)
    index = np.searchsorted(edges[1:], np.arange(size), side="right")
    return index[:, None] * grid + index[None, :]


def map_order(cam: np.ndarray, cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cells from the highest mean map value to the lowest; equal values (such as zeros) in random order."""
    count = int(cells.max()) + 1
    scores = np.bincount(cells.ravel(), weights=cam.ravel(), minlength=count) / np.bincount(cells.ravel())
    return np.lexsort((rng.random(count), -scores))


def curve_steps(cell_count: int, step_cells: int = STEP_CELLS) -> np.ndarray:
    """The numbers of cells replaced at the curves' points: 0, step_cells, 2 * step_cells, ..., cell_count."""
    return np.unique(np.append(np.arange(0, cell_count, step_cells), cell_count))


def perturbation_curves(probability_of, film: np.ndarray, class_index: int, order: np.ndarray,
                        cells: np.ndarray, step_cells: int = STEP_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """(deletion, insertion) curves of one film for one cell order, one probability per `curve_steps` point.

    `probability_of(batch)` returns the (n, k) class probabilities of raw films (n, S, S, 1). At a point
    with m cells, deletion has the first m cells of `order` replaced by the film's mean; insertion has only
    those m cells of the film on a film-mean background.
    """
    film = np.asarray(film, np.float32)
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    replaced = rank[cells][np.newaxis] < curve_steps(len(order), step_cells)[:, None, None]
    replaced = replaced[..., np.newaxis]
    mean = np.float32(film.mean())
    deleted = np.where(replaced, mean, film[np.newaxis])
    inserted = np.where(replaced, film[np.newaxis], mean)
    probabilities = probability_of(np.concatenate([deleted, inserted]))[:, class_index]
    return probabilities[:len(deleted)], probabilities[len(deleted):]


def area_under(curve: np.ndarray, fractions: np.ndarray) -> float:
    """Area under a curve sampled at `fractions` of the cells replaced, 0..1 (trapezoid rule)."""
    return float(np.trapezoid(np.asarray(curve, np.float64), x=fractions))


def perturbation_check(probability_of, films, cams, class_indices, *, grid: int = GRID,
                       step_cells: int = STEP_CELLS, random_orders: int = RANDOM_ORDERS, seed: int = 0,
                       progress=None) -> dict:
    """Deletion and insertion AUC in map order against random order, per film and summarised.

    Args:
        probability_of: films (n, S, S, 1) -> probabilities (n, k), the model under test.
        films: (n, S, S, 1) raw films in 0..255.
        cams: (n, S, S) maps ranking each film's pixels (any scale; only the order of cell means counts).
        class_indices: (n,) the class whose probability is followed (usually the predicted one).
        grid: cells per side. step_cells: cells between readings. random_orders: random orders per film.
        seed: fixes the random orders.
        progress: called as progress(films done, films) after each film (it may raise to stop the check).

    Returns:
        {"deletion": summary, "insertion": summary} where a summary is {"map_auc", "random_auc", "ratio"
        (map over random), "difference" (random minus map for deletion, map minus random for insertion:
        positive is better), "difference_ci95", "films_better" (share of films where the map beats random),
        "fractions" (of cells replaced at each point), "curve_map", "curve_random" (mean curves),
        "per_film_map", "per_film_random"}.
    """
    rng = np.random.default_rng(seed)
    cells = cell_ids(np.asarray(films).shape[1], grid)
    curves = {"deletion": ([], []), "insertion": ([], [])}
    for done, (film, cam, class_index) in enumerate(zip(films, cams, class_indices), start=1):
        def curves_for(order):
            return perturbation_curves(probability_of, film, int(class_index), order, cells, step_cells)

        mapped = curves_for(map_order(cam, cells, rng))
        randoms = [curves_for(rng.permutation(grid * grid)) for _ in range(random_orders)]
        for index, name in enumerate(("deletion", "insertion")):
            curves[name][0].append(mapped[index])
            curves[name][1].append(np.mean([curve[index] for curve in randoms], axis=0))
        if progress:
            progress(done, len(films))
    fractions = curve_steps(grid * grid, step_cells) / (grid * grid)
    return {name: _summary(np.array(by_map), np.array(by_random), fractions, lower_is_better=name == "deletion",
                           seed=seed)
            for name, (by_map, by_random) in curves.items()}


def _summary(by_map: np.ndarray, by_random: np.ndarray, fractions: np.ndarray, *, lower_is_better: bool,
             seed: int) -> dict:
    map_aucs = np.array([area_under(curve, fractions) for curve in by_map])
    random_aucs = np.array([area_under(curve, fractions) for curve in by_random])
    gains = (random_aucs - map_aucs) if lower_is_better else (map_aucs - random_aucs)
    rng = np.random.default_rng(seed)
    means = gains[rng.integers(0, len(gains), (2000, len(gains)))].mean(axis=1)
    random_auc = float(random_aucs.mean())
    return {
        "map_auc": float(map_aucs.mean()), "random_auc": random_auc,
        "ratio": float(map_aucs.mean() / random_auc) if random_auc > 0 else None,
        "difference": float(gains.mean()),
        "difference_ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
        "films_better": float((gains > 0).mean()),
        "fractions": fractions.round(5).tolist(), "curve_map": by_map.mean(axis=0).round(5).tolist(),
        "curve_random": by_random.mean(axis=0).round(5).tolist(),
        "per_film_map": map_aucs.round(5).tolist(), "per_film_random": random_aucs.round(5).tolist(),
    }


# --------------------------------------------------------------------------------------------------
# Randomisation and class sensitivity
# --------------------------------------------------------------------------------------------------


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two maps; NaN when either is constant (a blank map has no order)."""
    from scipy.stats import spearmanr

    first, second = np.asarray(first).ravel(), np.asarray(second).ravel()
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(spearmanr(first, second).statistic)


def mean_spearman(first_maps, second_maps) -> dict:
    """{"spearman": mean over film pairs that are not blank (None when all are), "n": pairs counted}."""
    values = np.array([spearman(a, b) for a, b in zip(first_maps, second_maps)])
    values = values[np.isfinite(values)]
    return {"spearman": float(values.mean()) if len(values) else None, "n": int(len(values))}


def randomisation_steps(model, blocks: int = RANDOMISED_BLOCKS) -> list[tuple[str, list[str]]]:
    """(name, layer names) to re-initialise, cumulatively, from the top: the head, the last convolution with
    its batch-norm, then `blocks` backbone blocks (Keras names them block_<n>_...), highest first."""
    steps = [("head", [name for name in HEAD_LAYER_NAMES if model.get_layer(name).weights]),
             ("last convolution", [LAST_CONV_LAYER_NAME, LAST_CONV_BN_LAYER_NAME])]
    groups: dict[str, list[str]] = {}
    for layer in reversed(backbone_layers(model)):
        match = re.match(r"(block_\d+)_", layer.name)
        if match and layer.weights:
            groups.setdefault(match.group(1), []).append(layer.name)
    steps.extend(list(groups.items())[:blocks])
    return steps


def reinitialise(layer, rng: np.random.Generator) -> None:
    """Fresh weights of the same scale: kernels drawn from a normal with the trained kernel's spread, vectors
    (biases, batch-norm scales, shifts and statistics) shuffled across channels, so variances stay valid."""
    fresh = []
    for weights in layer.get_weights():
        if weights.ndim >= 2:
            fresh.append(rng.normal(0.0, float(weights.std()) or 0.01, weights.shape).astype(weights.dtype))
        else:
            fresh.append(rng.permutation(weights))
    layer.set_weights(fresh)


def randomisation_check(model, films, class_indices, trained_maps, *, method: str, layer_name: str,
                        blocks: int = RANDOMISED_BLOCKS, seed: int = 0, progress=None) -> list[dict]:
    """Cascading randomisation on a copy of `model` (the model itself is untouched).

    Returns one {"step", "layers", "spearman", "n"} per step, in order: the mean Spearman between
    `trained_maps` and the copy's maps of the same films and classes after that step and all before it.
    `progress(steps done, steps)` is called after each step (it may raise to stop the check).
    """
    results = []
    steps = len(randomisation_steps(model, blocks))
    for step, names, copy in randomised_copies(model, blocks, seed):
        maps = explain(copy, films, class_indices, method=method, layer_name=layer_name)
        results.append({"step": step, "layers": names, **mean_spearman(trained_maps, maps)})
        if progress:
            progress(len(results), steps)
    return results


def randomised_copies(model, blocks: int = RANDOMISED_BLOCKS, seed: int = 0):
    """Yield (step, layer names, copy) down the cascade: ONE copy of `model`, re-initialised a step further
    at each yield (`randomisation_steps`, `reinitialise`); the model itself is never changed."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for step, names in randomisation_steps(copy, blocks):
        for name in names:
            reinitialise(copy.get_layer(name), rng)
        yield step, names, copy


# --------------------------------------------------------------------------------------------------
# All checks, the verdict, the run report
# --------------------------------------------------------------------------------------------------


def probability_function(model):
    """films (n, S, S, 1) -> (n, k) float32 probabilities, in batches of 64.

    They come from the model's cached Grad-CAM pass (core.explain.gradcam.cached_grad_cam), which returns
    them beside its maps: the default method's maps need that compiled function anyway, and compiling one
    more function of a MobileNetV2 costs more than the maps' small backward pass on the films of a check."""
    explainer = cached_grad_cam(model)

    def probability_of(films):
        films = np.asarray(films, np.float32)
        return np.concatenate([explainer(films[start:start + 64])[0] for start in range(0, len(films), 64)])
    return probability_of


def check_films(model, films, *, method: str = DEFAULT_METHOD, layer_name: str | None = None,
                grid: int = GRID, step_cells: int = STEP_CELLS, random_orders: int = RANDOM_ORDERS,
                blocks: int = RANDOMISED_BLOCKS,
                seed: int = 0, log=None, progress=None) -> dict:
    """All three checks of `method`'s maps on `films` (n, S, S, 1) for `model`, with the verdict.

    Returns the report without run fields: {"method", "method_label", "layer", "n_films", "grid",
    "cell_pixels", "replacement", "random_orders", "deletion", "insertion", "randomisation",
    "class_sensitivity", "verdict", "seconds"}. `log(line)` hears each stage; `progress(stage, done, total)`
    hears every film of the deletion and insertion and every step of the randomisation, and between the
    stages (stage "maps", "deletion and insertion", "randomisation" or "class sensitivity"); an exception it
    raises (a stop request) ends the check there, with no report.
    """
    check_method(method)
    layer_name = layer_name or METHOD_LAYERS[method]
    say = log or (lambda line: None)

    def stage(name: str):
        return (lambda done, total: progress(name, done, total)) if progress else None

    if progress:
        progress("maps", 0, len(films))
    films = np.asarray(films, np.float32)
    seconds, started = {}, time.perf_counter()
    probability_of = probability_function(model)
    probabilities = probability_of(films)
    ranked = np.argsort(-probabilities, axis=1)
    predicted, runner_up = ranked[:, 0], ranked[:, 1]
    say(f"{METHOD_LABELS[method]} maps at {layer_name} of {len(films)} films")
    maps = explain(model, films, predicted, method=method, layer_name=layer_name)
    seconds["maps"] = time.perf_counter() - started
    say(f"deletion and insertion in map order and {random_orders} random orders")
    started = time.perf_counter()
    perturbation = perturbation_check(probability_of, films, maps, predicted, grid=grid, step_cells=step_cells,
                                      random_orders=random_orders, seed=seed,
                                      progress=stage("deletion and insertion"))
    seconds["deletion_insertion"] = time.perf_counter() - started
    say("cascading randomisation of a copy of the model")
    started = time.perf_counter()
    randomisation = randomisation_check(model, films, predicted, maps, method=method, layer_name=layer_name,
                                        blocks=blocks, seed=seed, progress=stage("randomisation"))
    seconds["randomisation"] = time.perf_counter() - started
    started = time.perf_counter()
    if progress:
        progress("class sensitivity", 0, len(films))
    other_maps = explain(model, films, runner_up, method=method, layer_name=layer_name)
    class_sensitivity = {"other_class": "runner-up", **mean_spearman(maps, other_maps)}
    seconds["class_sensitivity"] = time.perf_counter() - started
    seconds = {name: round(value, 2) for name, value in seconds.items()}
    seconds["total"] = round(sum(seconds.values()), 2)
    report = {
        "method": method, "method_label": METHOD_LABELS[method], "layer": layer_name, "n_films": int(len(films)),
        "grid": grid, "cell_pixels": int(films.shape[1] // grid), "replacement": REPLACEMENT,
        "replacement_text": REPLACEMENT_TEXT, "step_cells": step_cells, "random_orders": random_orders, "seed": seed,
        **perturbation, "randomisation": randomisation, "class_sensitivity": class_sensitivity, "seconds": seconds,
    }
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict) -> dict:
    """{"faithful": bool, "text": one sentence, "warnings": [further sentences]} from a report's figures."""
    deletion = report["deletion"]
    ratio = deletion["ratio"]
    faithful = ratio is not None and ratio <= FAITHFUL_DELETION_RATIO and deletion["difference_ci95"][0] > 0
    figures = (f"deletion AUC {deletion['map_auc']:.3f} in map order against {deletion['random_auc']:.3f} in "
               f"random order, {report['n_films']} test films")
    if faithful:
        text = (f"Maps are more faithful than random on this run: deleting the cells the map ranks highest lowers "
                f"the predicted class's probability faster than deleting random cells ({figures}).")
    elif deletion["difference_ci95"][0] > 0:
        text = (f"Warning: maps are only slightly more faithful than random on this run ({figures}): deleting the "
                "cells the map ranks highest lowers the prediction only a little faster than deleting random "
                "cells. Read the heatmap as a rough hint, not as where the model looked.")
    else:
        text = (f"Warning: maps are no better than random on this run ({figures}): deleting the cells the map "
                "ranks highest lowers the prediction hardly faster than deleting random cells. Read the heatmap "
                "as a rough hint, not as where the model looked.")
    warnings = []
    last = report["randomisation"][-1] if report["randomisation"] else None
    if last and last["spearman"] is not None and last["spearman"] >= RANDOMISED_MAX_SPEARMAN:
        warnings.append(f"Maps barely change when the model's top layers are randomised (Spearman "
                        f"{last['spearman']:.2f} after {last['step']}): they show the film more than the model.")
    sensitivity = report["class_sensitivity"]["spearman"]
    if sensitivity is not None and sensitivity >= CLASS_MAX_SPEARMAN:
        warnings.append(f"Maps of the predicted and the runner-up class agree (Spearman {sensitivity:.2f}): "
                        "they do not show what sets the class apart.")
    return {"faithful": bool(faithful and not warnings), "text": text, "warnings": warnings}


def check_run(run, data_dir: str | os.PathLike | None = None, *, films: int = DEFAULT_FILMS,
              method: str = DEFAULT_METHOD, layer_name: str | None = None, model=None,
              out: str | os.PathLike | None = None, seed: int = 0, log=None, run_id: str | None = None,
              **options) -> dict:
    """The faithfulness report of a run's maps on up to `films` of its test films, written to a file.

    Args:
        run: a core.runs.registry.Run or run folder.
        data_dir: where the run's films are now (None: where the run recorded them).
        films: at most this many test films, drawn with `seed` (all when there are fewer).
        method, layer_name: as core.explain.methods.explain.
        model: the run's Keras model when already loaded.
        out: the report's file; None writes explain_check_path(run) (<run>/explain_check.json, refreshing the
            model card; for a shipped run a file in the user data dir, leaving the run as shipped).
        run_id: the id the report names; default the run folder's name (a training names the run it is
            writing in its staging folder).
        options: grid, step_cells, random_orders, blocks, progress, as check_films.

    Returns:
        check_films's report plus "version", "computed", "run_id", "films" (the files checked).

    Raises:
        ValueError: the run has no test films, or none of them can be read.
    """
    run = run if isinstance(run, Run) else load_run(run)
    check_method(method)
    root = run_dataset_root(run.path, data_dir)
    rows = [row for row in read_split_csv(run.path / SPLIT_FILE_NAME) if row["subset"] == "test"]
    if not rows:
        raise ValueError(f"{run.path / SPLIT_FILE_NAME} lists no test films; train the run with a test split.")
    chosen = sorted(np.random.default_rng(seed).choice(len(rows), size=min(films, len(rows)), replace=False))
    paths = [root / rows[index]["path"] for index in chosen]
    decoded, images = [], []
    for chunk_paths, chunk, _, _ in decode_in_chunks(paths, int(run.config.get("image_size", 224))):
        decoded.extend(chunk_paths)
        images.append(chunk)
    if not decoded:
        raise ValueError(f"None of the {len(paths)} chosen test films could be read under {root}; pass the folder "
                         "where the run's films are now (--data).")
    model = model if model is not None else load_run_model(run)
    report = check_films(model, np.concatenate(images), method=method, layer_name=layer_name, seed=seed, log=log,
                         **options)
    report = {"version": REPORT_VERSION, "computed": now_iso(), "run_id": run_id or run.run_id,
              "films": [str(Path(path).relative_to(root)) for path in decoded], **report}
    target = Path(out) if out else explain_check_path(run.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target, report)
    if not out and not is_shipped_run(run.path):
        refresh_model_card_quietly(run.path)
    return report
