"""core.explain.faithfulness without TensorFlow: the grid, the orders, the curves and the verdict, on a stand-in
"model" whose answer is known: the probability of class 1 is the brightness of one region of the film."""

from __future__ import annotations

import numpy as np
import pytest

from core.explain.faithfulness import (
    FAITHFUL_DELETION_RATIO,
    area_under,
    cell_ids,
    curve_steps,
    map_order,
    perturbation_check,
    perturbation_curves,
    spearman,
    verdict,
)

SIZE = 56
REGION = (slice(8, 24), slice(8, 24))


def brightness_model(films):
    """(n, 2) 'probabilities': class 1 rises with the mean brightness of REGION, class 0 is the rest."""
    films = np.asarray(films, np.float64)
    bright = films[:, REGION[0], REGION[1], 0].mean(axis=(1, 2)) / 255.0
    return np.stack([1.0 - bright, bright], axis=1)


def region_films(count=4, seed=0):
    rng = np.random.default_rng(seed)
    films = rng.integers(0, 60, (count, SIZE, SIZE, 1)).astype(np.float32)
    films[:, REGION[0], REGION[1]] = 250.0
    return films


def region_map():
    cam = np.zeros((SIZE, SIZE), np.float32)
    cam[REGION] = 1.0
    return cam


def test_cell_ids_cover_the_film_in_a_grid():
    cells = cell_ids(224, 7)
    assert cells.shape == (224, 224) and cells.min() == 0 and cells.max() == 48
    assert (np.bincount(cells.ravel()) == 32 * 32).all()
    assert cells[0, 0] == 0 and cells[0, 223] == 6 and cells[223, 0] == 42
    uneven = np.bincount(cell_ids(96, 7).ravel())
    assert len(uneven) == 49 and uneven.max() - uneven.min() <= 2 * 14 + 1


def test_curve_steps_end_with_every_cell():
    assert curve_steps(49, 4).tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 49]
    assert curve_steps(49, 1).tolist() == list(range(50))


def test_map_order_ranks_cells_by_mean_map_value_and_breaks_ties_at_random():
    cells = cell_ids(SIZE, 7)
    order = map_order(region_map(), cells, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(49))
    # REGION covers cells (1, 1), (1, 2), (2, 1), (2, 2) fully; they come first.
    assert set(order[:4].tolist()) == {8, 9, 15, 16}
    other = map_order(region_map(), cells, np.random.default_rng(1))
    assert set(other[:4].tolist()) == {8, 9, 15, 16} and other[4:].tolist() != order[4:].tolist()


def test_curves_start_at_the_film_and_end_at_the_mean():
    film = region_films(1)[0]
    cells = cell_ids(SIZE, 7)
    order = map_order(region_map(), cells, np.random.default_rng(0))
    deletion, insertion = perturbation_curves(brightness_model, film, 1, order, cells, step_cells=4)
    assert deletion.shape == insertion.shape == (14,)
    assert deletion[0] == pytest.approx(brightness_model(film[None])[0, 1])
    assert deletion[-1] == pytest.approx(film.mean() / 255.0, rel=1e-5)
    assert insertion[0] == pytest.approx(deletion[-1]) and insertion[-1] == pytest.approx(deletion[0])
    # The map's first four cells hold the region: one step deletes it all.
    assert deletion[1] == pytest.approx(film.mean() / 255.0, rel=1e-5)


def test_area_under_a_constant_and_a_ramp():
    fractions = curve_steps(49, 4) / 49
    assert area_under(np.ones(14), fractions) == pytest.approx(1.0)
    assert area_under(fractions, fractions) == pytest.approx(0.5)


def test_a_map_on_the_evidence_beats_random_order_and_a_map_elsewhere_does_not():
    films = region_films(4)
    right = np.repeat(region_map()[None], 4, axis=0)
    report = perturbation_check(brightness_model, films, right, [1] * 4, random_orders=3)
    deletion, insertion = report["deletion"], report["insertion"]
    assert deletion["ratio"] < 0.5 and deletion["difference_ci95"][0] > 0 and deletion["films_better"] == 1.0
    assert insertion["map_auc"] > insertion["random_auc"]
    assert len(deletion["curve_map"]) == len(deletion["fractions"]) == 14
    wrong = 1.0 - right  # everything but the evidence first
    elsewhere = perturbation_check(brightness_model, films, wrong, [1] * 4, random_orders=3)["deletion"]
    assert elsewhere["ratio"] > 1.0


def test_spearman_of_maps_and_of_a_blank_map():
    cam = region_map() + np.linspace(0, 0.1, SIZE)[None]
    assert spearman(cam, cam) == pytest.approx(1.0)
    assert spearman(cam, -cam) == pytest.approx(-1.0)
    assert np.isnan(spearman(cam, np.zeros_like(cam)))


def _report(ratio, low, last_spearman=0.1, class_spearman=0.0):
    return {"n_films": 10, "deletion": {"map_auc": 0.3 * ratio, "random_auc": 0.3, "ratio": ratio,
                                        "difference_ci95": [low, low + 0.1]},
            "randomisation": [{"step": "block_14", "spearman": last_spearman}],
            "class_sensitivity": {"spearman": class_spearman}}


def test_verdict_in_words():
    good = verdict(_report(0.6, 0.05))
    assert good["faithful"] and good["text"].startswith("Maps are more faithful than random on this run")
    assert not good["warnings"]
    chance = verdict(_report(FAITHFUL_DELETION_RATIO + 0.05, -0.02))
    assert not chance["faithful"] and chance["text"].startswith("Warning: maps are no better than random")
    unsure = verdict(_report(0.8, -0.01))  # better on average, but the interval includes no gain
    assert not unsure["faithful"] and unsure["text"].startswith("Warning: maps are no better than random")
    slight = verdict(_report(FAITHFUL_DELETION_RATIO + 0.02, 0.01))  # surely better, but by little
    assert not slight["faithful"] and slight["text"].startswith("Warning: maps are only slightly more faithful")
    copied = verdict(_report(0.6, 0.05, last_spearman=0.9, class_spearman=0.95))
    assert not copied["faithful"] and len(copied["warnings"]) == 2
    assert "randomised" in copied["warnings"][0] and "runner-up" in copied["warnings"][1]


def test_the_model_card_section_carries_the_verdict_and_the_figures(tmp_path):
    from core.runs.artifacts import EXPLAIN_CHECK_FILE_NAME, write_json_atomic
    from core.runs.card import explanation_section

    assert explanation_section(tmp_path) == []
    report = {**_report(0.6, 0.05), "method_label": "Grad-CAM (fast)", "layer": "out_relu", "grid": 7,
              "replacement_text": "each deleted cell is replaced by the mean pixel value of its own film",
              "random_orders": 3, "insertion": {"map_auc": 0.5, "random_auc": 0.4}}
    report["verdict"] = verdict(report)
    write_json_atomic(tmp_path / EXPLAIN_CHECK_FILE_NAME, report)
    text = "\n".join(explanation_section(tmp_path))
    assert text.startswith("## Are the heatmaps faithful?") and report["verdict"]["text"] in text
    assert "| deletion AUC (lower is better) | 0.180 | 0.300 |" in text and "block_14 0.100" in text
