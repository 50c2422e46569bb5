"""Training configurations: presets refuse settings their recipe would silently ignore."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("changes, message", [
    (dict(fine_tune_layers=12), "set fine_tune_layers=0 and warmup_epochs=0"),
    (dict(rotation_degrees=10.0), "only horizontal_flip augmentation applies"),
    (dict(distribute="mirrored"), "set distribute='none' or 'multiworker'"),
])
def test_head_on_features_refuses_settings_it_would_ignore(changes, message):
    from core.config import preset

    assert preset("recommended").head_on_features
    with pytest.raises(ValueError, match=message):
        preset("recommended", **changes)


def test_head_on_features_runs_across_workers():
    from core.config import preset

    assert preset("recommended", distribute="multiworker").distribute == "multiworker"
