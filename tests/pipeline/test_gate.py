"""core.serving.gate on a trained run: training leaves the gate's statistics in the run folder."""

from __future__ import annotations

from core.serving.gate import load_gate


def test_every_trained_run_carries_gate_statistics(tiny_run):
    statistics = load_gate(tiny_run)
    assert statistics is not None
    assert {"mean", "components", "variances", "residual_scale", "threshold"} <= set(statistics)
    assert statistics["threshold"] > 0
