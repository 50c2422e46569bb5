"""core.training.fit's ETA: from what this run has measured only, and none until there is enough."""

from __future__ import annotations

from core.training.fit import ETA_MIN_BATCHES, remaining_seconds


def test_no_eta_until_enough_has_been_measured():
    assert remaining_seconds(5.0, ETA_MIN_BATCHES - 1, 100) is None  # Too few batches.
    assert remaining_seconds(0.2, 50, 100) is None  # Too short a time.
    assert remaining_seconds(3.0, 3, 100) == 100.0  # One second a batch, measured.
    assert remaining_seconds(3.0, 3, -2) == 0.0


def test_a_slow_first_batch_is_not_what_the_eta_is_made_of():
    # 80 s of the whole run at 0.1 s a batch, behind a first batch of 20 s (tracing): the ETA after batch 21
    # uses the twenty measured after the first, not 20 s a batch.
    assert remaining_seconds(2.0, 20, 779) == 77.9
