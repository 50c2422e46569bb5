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
# The UI's pure builders: each imports its own library (plotly, pandas) lazily, and never Streamlit.
UI_BUILDERS = ("core.ui.figures", "core.ui.tables")


def _modules(under: str) -> list[str]:
    """Every module under a folder of the project (packages included, `__main__` excluded), sorted."""
    names = []
    for path in sorted((PROJECT_ROOT / under).rglob("*.py")):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        if parts[-1] != "__main__":
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _pipeline_modules() -> list[str]:
    return [name for name in _modules("core") if name != "core.ui" and not name.startswith("core.ui.")]


def _first_importers(modules: list[str], heavy: tuple[str, ...], *more: tuple[list[str], tuple[str, ...]]
                     ) -> dict[str, list[str]]:
    """{module: heavy libraries that appeared in sys.modules when it was imported (or why it could not be
    imported)}, for offenders only. `more`: further (modules, heavy) pairs, imported after the first in the
    same interpreter (one start-up instead of one each)."""
    checks = [(name, libraries) for names, libraries in ((modules, heavy), *more) for name in names]
    code = f"""
import importlib, json, sys
found = {{}}
for name, heavy in {checks!r}:
    before = {{m for m in heavy if m in sys.modules}}
    try:
        importlib.import_module(name)
    except Exception as error:
        found[name] = [f"cannot be imported: {{error!r}}"]
        continue
    new = sorted(m for m in heavy if m in sys.modules and m not in before)
    if new:
        found[name] = new
print(json.dumps(found))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_core_module_outside_the_ui_imports_neither_tensorflow_nor_the_ui_libraries():
    """TensorFlow, Keras and tf-keras-vis are imported inside the functions that need them, so the settings,
    imaging, data, metrics, run-folder and CLI modules start in well under a second."""
    modules = _pipeline_modules()
    assert {"core.settings", "core.config", "core.imaging.loader", "core.data.scan", "core.evaluation.metrics",
            "core.runs.artifacts", "core.runs.registry", "core.runs.audit", "core.cli"} <= set(modules)
    assert _first_importers(modules, TENSORFLOW + UI_LIBRARIES) == {}


def test_the_ui_imports_no_tensorflow_and_its_pure_builders_no_streamlit():
    modules = _modules("core/ui")
    assert set(UI_BUILDERS) <= set(modules)
    # The builders first, in a fresh interpreter (Streamlit must not come with them), then the rest of the UI.
    assert _first_importers(list(UI_BUILDERS), TENSORFLOW + ("streamlit",), (modules, TENSORFLOW)) == {}
