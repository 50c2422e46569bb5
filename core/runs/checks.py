"""What a damaged run file gets: one ValueError that names the file, says what is wrong, what it should
hold and what to do next, from the strict readers here and from the readers of core.runs.artifacts.

A run folder can be damaged in many ways (cut short by a full disk, edited by hand, copied half-way, written
by an older version); every reader turns each into this one message instead of a traceback, and
core.runs.registry lists such a run as damaged, with the message, without hiding the others.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

REPAIR_STEP = ("Restore the file from a copy of the run, re-run the step that writes it, or choose another "
               "run.")


def damaged_file(path: str | os.PathLike, problem: str, expected: str, step: str = REPAIR_STEP) -> ValueError:
    """The error for a run file that cannot be used: which file, what is wrong, what was expected, and
    what to do next (one wording for every reader)."""
    return ValueError(f"{path} {problem}; expected {expected}. {step}")


def read_json_strict(path: str | os.PathLike, kind: type, expected: str):
    """The parsed file, which must be of `kind` (dict or list); ValueError (`damaged_file`) when it is
    missing, not UTF-8, not JSON, or of another kind."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise damaged_file(path, "is missing", expected) from None
    except OSError as error:
        raise damaged_file(path, f"cannot be read ({error.strerror or error})", expected) from None
    except UnicodeDecodeError:
        raise damaged_file(path, "is not UTF-8 text", expected) from None
    except json.JSONDecodeError as error:
        raise damaged_file(path, f"is not valid JSON (cut short or edited? {error.msg} at line {error.lineno})",
                           expected) from None
    if not isinstance(value, kind):
        raise damaged_file(path, f"holds a JSON {type(value).__name__}", expected)
    return value


def is_number(value) -> bool:
    """A finite int or float (never a bool, a string or NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_npz(path: str | os.PathLike, required: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (no pickles); ValueError (`damaged_file`) when it is not a readable zip of
    arrays or lacks one of the `required` keys."""
    required = list(required)
    expected = f"a NumPy .npz archive holding {', '.join(required)}"
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):  # A bare .npy array, not an archive.
            raise ValueError("not an archive")
        with data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise damaged_file(path, f"is not a readable .npz archive ({type(error).__name__})", expected) from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise damaged_file(path, f"lacks {', '.join(missing)}", expected)
    return arrays


def check_metrics(metrics: dict, path: Path) -> None:
    """ValueError (`damaged_file`) when the figures pages and the predictor use are of the wrong type: the
    accuracy and macro-F1 numbers in [0, 1], each ci95 interval two numbers, a calibration temperature a
    positive number, per_class an object of objects."""
    def fail(problem: str, expected: str):
        raise damaged_file(path, problem, expected, "Evaluate the run again (python -m core evaluate), restore "
                           "the file from a copy, or choose another run.")

    def check_fraction(value, name: str) -> None:
        if value is not None and not (is_number(value) and 0 <= value <= 1):
            fail(f"has {name} = {value!r}", f"{name} a number in [0, 1]")

    check_fraction(metrics.get("accuracy"), "accuracy")
    macro = metrics.get("macro")
    if macro is not None and not isinstance(macro, dict):
        fail(f"has macro = {macro!r}", "macro an object of averages")
    check_fraction((macro or {}).get("f1"), "macro.f1")
    ci95 = metrics.get("ci95")
    if ci95 is not None and not isinstance(ci95, dict):
        fail(f"has ci95 = {ci95!r}", "ci95 an object of [low, high] intervals, or null")
    for key in ("accuracy", "macro_f1"):
        interval = (ci95 or {}).get(key)
        if interval is not None and not (isinstance(interval, list) and len(interval) == 2
                                         and all(is_number(bound) for bound in interval)):
            fail(f"has ci95.{key} = {interval!r}", f"ci95.{key} a list of two numbers [low, high]")
    calibration = metrics.get("calibration")
    if calibration is not None and not isinstance(calibration, dict):
        fail(f"has calibration = {calibration!r}", "calibration an object")
    temperature = (calibration or {}).get("temperature")
    if temperature is not None and not (is_number(temperature) and temperature > 0):
        fail(f"has calibration.temperature = {temperature!r}", "a temperature that is a positive number")
    per_class = metrics.get("per_class")
    if per_class is not None and not (isinstance(per_class, dict)
                                      and all(isinstance(item, dict) for item in per_class.values())):
        fail("has a per_class section that is not an object of objects", "per_class {class: {metric: value}}")


