"""core.cli's arguments: every choice and default read from the module that owns it (no TensorFlow)."""

from __future__ import annotations

import inspect

from core import cli
from core.config import DISTRIBUTE_CHOICES, PRESETS
from core.evaluation import evaluate
from core.serving import export, predict


def _action(command: str, option: str):
    subparsers = next(action for action in cli._parser()._actions if action.dest == "command")
    return next(action for action in subparsers.choices[command]._actions if option in action.option_strings)


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_choices_are_the_owners_values():
    assert tuple(_action("train", "--preset").choices) == tuple(PRESETS)
    assert tuple(_action("train", "--distribute").choices) == DISTRIBUTE_CHOICES
    assert tuple(_action("evaluate", "--engine").choices) == evaluate.ENGINES
    assert tuple(_action("predict", "--engine").choices) == predict.ONE_SHOT_ENGINES
    assert set(predict.ONE_SHOT_ENGINES) < set(predict.ENGINES)
    assert tuple(_action("export", "--variant").choices) == export.VARIANTS


def test_defaults_are_the_functions_own():
    assert _action("evaluate", "--engine").default == _default(evaluate.evaluate_folder, "engine")
    assert _action("predict", "--engine").default == _default(predict.Predictor.__init__, "engine")
    assert _action("export", "--variant").default == _default(export.export_tflite, "variant")


def test_main_returns_exit_codes_instead_of_exiting(capsys):
    assert cli.main(["--help"]) == 0
    assert "python -m core" in capsys.readouterr().out
    assert cli.main(["train"]) == 2  # --data is required
    assert "--data" in capsys.readouterr().err
