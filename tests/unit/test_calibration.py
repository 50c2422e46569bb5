"""Reliability curves before and after temperature scaling, worked by hand."""

from __future__ import annotations

import pytest


def test_reliability_before_after_by_hand():
    from core.evaluation.metrics import reliability_before_after

    probabilities = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    curves = reliability_before_after([0, 1, 1, 0], probabilities, temperature=1.0, n_bins=5)
    assert curves["before"]["count"] == curves["after"]["count"]
    assert curves["before"]["ece"] == pytest.approx(curves["after"]["ece"])  # T = 1 changes nothing.
    # Bins (0.4, 0.6], (0.6, 0.8], (0.8, 1]: confidences 0.6 | 0.8, 0.7 | 0.9; right: yes | no, yes | yes.
    assert curves["before"]["count"] == [0, 0, 1, 2, 1]
    assert curves["before"]["accuracy"][2:] == [1.0, 0.5, 1.0]
    assert curves["before"]["ece"] == pytest.approx((0.4 + 2 * 0.25 + 0.1) / 4)
    softened = reliability_before_after([0, 1, 1, 0], probabilities, temperature=2.0, n_bins=5)
    assert softened["after"]["ece"] < softened["before"]["ece"]
    assert sum(softened["after"]["count"]) == 4
