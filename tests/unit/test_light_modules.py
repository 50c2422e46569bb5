"""The light modules stay light: importing them loads no TensorFlow (seconds of start-up and hundreds of MB),
and outside core/ui no Streamlit, plotly or pandas. Checked in a fresh interpreter, one module after another,
so the first module that pulls a heavy library in is the one named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TENSORFLOW = ("tensorflow", "keras", "tf_keras_vis")
UI_LIBRARIES = ("streamlit", "plotly", "pandas")

# Module names, or a package name ending in ".*" for every module of that package.
LIGHT = (
    "core.settings", "core.config", "core.validation",
    "core.imaging.*", "core.data.*",
    "core.evaluation.metrics", "core.evaluation.calibration", "core.evaluation.summary",
    "core.runs.artifacts", "core.runs.registry", "core.runs.audit", "core.runs.review", "core.runs.jobs",
    "core.explain.overlay", "core.cli",
)
# The UI's pure builders and the page list: no TensorFlow (they may import their own UI library).
LIGHT_UI = ("core.ui.navigation", "core.ui.figures", "core.ui.tables")


def _expand(names) -> list[str]:
    modules = []
    for name in names:
        if name.endswith(".*"):
            package = PROJECT_ROOT.joinpath(*name[:-2].split("."))
            modules += [f"{name[:-2]}.{path.stem}" for path in sorted(package.glob("*.py")) if path.stem != "__init__"]
        else:
            modules.append(name)
    return modules


def _first_importers(modules: list[str], heavy: tuple[str, ...]) -> dict[str, list[str]]:
    """{module: heavy libraries that appeared in sys.modules when it was imported (or why it could not be
    imported)}, for offenders only."""
    code = f"""
import importlib, json, sys
found = {{}}
for name in {modules!r}:
    before = {{m for m in {heavy!r} if m in sys.modules}}
    try:
        importlib.import_module(name)
    except Exception as error:
        found[name] = [f"cannot be imported: {{error!r}}"]
        continue
    new = sorted(m for m in {heavy!r} if m in sys.modules and m not in before)
    if new:
        found[name] = new
print(json.dumps(found))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_listed_module_exists():
    missing = [name for name in _expand(LIGHT + LIGHT_UI)
               if not (PROJECT_ROOT.joinpath(*name.split(".")).with_suffix(".py").is_file()
                       or PROJECT_ROOT.joinpath(*name.split("."), "__init__.py").is_file())]
    assert not missing, f"listed as light but not in core/: {missing} (update LIGHT)"


def test_light_modules_import_neither_tensorflow_nor_the_ui_libraries():
    assert _first_importers(_expand(LIGHT), TENSORFLOW + UI_LIBRARIES) == {}


def test_the_uis_pure_builders_import_no_tensorflow():
    assert _first_importers(_expand(LIGHT_UI), TENSORFLOW) == {}
