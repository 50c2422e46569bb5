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


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_set_level_must_be_a_coverage_strictly_between_0_and_1(level):
    from core.config import TrainConfig

    with pytest.raises(ValueError, match=r"set_level=.*strictly between 0 and 1: use 0.9"):
        TrainConfig(set_level=level)


def test_set_level_defaults_to_the_conformal_default_and_round_trips():
    from core.config import TrainConfig
    from core.evaluation.conformal import DEFAULT_LEVEL

    assert TrainConfig().set_level == DEFAULT_LEVEL
    # A run's config.json from before the field existed still loads, at the default level.
    old = {key: value for key, value in TrainConfig().to_dict().items() if key != "set_level"}
    assert TrainConfig.from_dict(old).set_level == DEFAULT_LEVEL
    assert TrainConfig.from_dict(TrainConfig(set_level=0.8).to_dict()).set_level == 0.8
