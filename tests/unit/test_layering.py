"""The house rules of the import graph, read from the source with `ast` (nothing is imported):

- streamlit, plotly and pandas are imported only under core/ui/, pages/ and streamlit_app.py;
- no core module imports core.ui (outside core.ui itself), pages or bench;
- every import of a core module sits at the top level of its file (an `if TYPE_CHECKING:` block is fine),
  never inside a function, so the top of a file shows what it depends on;
- the core modules' top-level imports form no cycle;
- each core module imports only from its own layer or lower ones (LAYERS, lowest first).

LAYERING_ROOT=<folder> checks another checkout (e.g. an older commit) instead of this one.
"""

from __future__ import annotations

import ast
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(os.environ.get("LAYERING_ROOT") or Path(__file__).resolve().parents[2])

# Lowest first. A module belongs to the layer of its longest matching prefix ("core" matches only
# core/__init__.py); it may import from its own layer and the ones before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core", "core.settings", "core.config", "core.validation", "core.csvsafe"),
    # The run folder's schema (file names, readers, writers, and the checks that turn a damaged file into
    # one message) depends only on settings: data lays out a run's split from it, and everything above
    # reads run files through it.
    ("core.runs.checks", "core.runs.artifacts", "core.runs.schema"),
    ("core.imaging",),
    ("core.data",),
    ("core.evaluation", "core.evaluation.metrics", "core.evaluation.calibration", "core.evaluation.summary"),
    ("core.model",),
    ("core.runs", "core.runs.registry"),
    ("core.explain",),
    ("core.serving",),
    ("core.evaluation.evaluate", "core.evaluation.overlap"),
    ("core.runs.card", "core.runs.review", "core.runs.audit", "core.runs.jobs"),
    # The Grad-CAM region analysis and the faithfulness report of a run refresh the run's model card once cached.
    ("core.explain.regions", "core.explain.faithfulness"),
    ("core.training",),
    # Hospital I/O (DICOMweb, DICOM SR/SC, FHIR) wraps predictions; only the CLI and the UI call it.
    ("core.hospital",),
    ("core.cli", "core.__main__"),
    ("core.ui",),
)
UI_ONLY = ("streamlit", "plotly", "pandas")


@dataclass
class Import:
    target: str  # absolute dotted name: the module, or `module.name` for `from module import name`
    line: int
    in_function: bool
    type_checking: bool


@dataclass
class Source:
    path: Path
    module: str | None  # dotted name for files under core/, None for pages and the app script
    imports: list[Import] = field(default_factory=list)

    @property
    def relative(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    @property
    def is_ui(self) -> bool:
        """A file under core/ui/, a page or the app script (a module core/ui.py is not a ui package)."""
        return self.module is None or self.relative.startswith("core/ui/")


def _module_name(path: Path) -> str | None:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] != "core":
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _collect(node: ast.AST, source: Source, in_function: bool, type_checking: bool) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            source.imports += [Import(alias.name, child.lineno, in_function, type_checking) for alias in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:  # Relative: resolved against the file's package.
                package = source.module.split(".") if source.module else []
                if not source.path.name == "__init__.py":
                    package = package[:-1]
                package = package[:len(package) - (child.level - 1)]
                base = ".".join([*package, base] if base else package)
            source.imports += [Import(f"{base}.{alias.name}" if alias.name != "*" else base, child.lineno,
                                      in_function, type_checking) for alias in child.names]
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            _collect(child, source, True, type_checking)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                _collect(ast.Module(body=[statement], type_ignores=[]), source, in_function, True)
            for statement in child.orelse:
                _collect(ast.Module(body=[statement], type_ignores=[]), source, in_function, type_checking)
        else:
            _collect(child, source, in_function, type_checking)


@functools.cache
def sources() -> tuple[Source, ...]:
    paths = sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "pages").glob("*.py"))
    paths += [ROOT / "streamlit_app.py"] if (ROOT / "streamlit_app.py").is_file() else []
    found = []
    for path in paths:
        source = Source(path, _module_name(path))
        _collect(ast.parse(path.read_text(), filename=str(path)), source, False, False)
        found.append(source)
    return tuple(found)


@functools.cache
def core_modules() -> frozenset[str]:
    return frozenset(source.module for source in sources() if source.module)


def resolve(target: str) -> str | None:
    """The core module an import target names (`core.x.y` or its attribute `core.x.y.name`), else None."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in core_modules():
            return name
    return None


def layer_of(module: str) -> int | None:
    best, best_length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "core" and module.startswith(prefix + "."))
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def _core_edges(include_functions: bool) -> dict[str, dict[str, int]]:
    """module -> {imported core module: first line}, top-level imports (and function-level ones if asked)."""
    edges: dict[str, dict[str, int]] = {}
    for source in sources():
        if not source.module:
            continue
        targets = edges.setdefault(source.module, {})
        for item in source.imports:
            if item.type_checking or (item.in_function and not include_functions):
                continue
            target = resolve(item.target)
            if target and target != source.module and target != _package_of(source):
                targets.setdefault(target, item.line)
    return edges


def _package_of(source: Source) -> str | None:
    """A module's own package (`core.x` for core/x/y.py): importing it is Python's doing, not a dependency."""
    if source.path.name == "__init__.py" or source.module is None or "." not in source.module:
        return None
    return source.module.rsplit(".", 1)[0]


def test_streamlit_plotly_and_pandas_are_imported_only_by_the_ui_and_the_pages():
    offences = [f"{source.relative}:{item.line} imports {item.target}" for source in sources() if not source.is_ui
                for item in source.imports if item.target.split(".")[0] in UI_ONLY]
    assert not offences, "only core/ui/, pages/ and streamlit_app.py may import these:\n" + "\n".join(offences)


def test_no_core_module_imports_the_ui_the_pages_or_bench():
    offences = []
    for source in sources():
        if source.module is None:
            continue
        for item in source.imports:
            top = item.target.split(".")[0]
            ui = resolve(item.target) is not None and layer_of(resolve(item.target)) == layer_of("core.ui")
            if top in ("pages", "bench") or (ui and not source.is_ui):
                offences.append(f"{source.relative}:{item.line} imports {item.target}")
    assert not offences, "\n".join(sorted(set(offences)))


def test_core_imports_sit_at_the_top_of_their_file():
    offences = sorted({f"{source.relative}:{item.line} imports {item.target} inside a function"
                       for source in sources() for item in source.imports
                       if item.in_function and resolve(item.target)})
    assert not offences, f"{len(offences)} imports of core modules inside functions:\n" + "\n".join(offences)


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_core_modules_import_each_other_without_a_cycle():
    """Over every import (a cycle hidden by an import inside a function is still a cycle); the top-of-file
    rule above makes this the module-level graph."""
    edges = _core_edges(include_functions=True)
    top_level = _core_edges(include_functions=False)
    cycles = _cycles(edges)
    described = []
    for component in cycles:
        inside = [f"  {a} -> {b} (line {edges[a][b]}{'' if b in top_level[a] else ', inside a function'})"
                  for a in component for b in edges[a] if b in component]
        described.append(" <-> ".join(component) + "\n" + "\n".join(inside))
    assert not cycles, "import cycles among core modules:\n" + "\n".join(described)


def test_every_core_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    unplaced = sorted(module for module in core_modules() if layer_of(module) is None)
    upward = []
    for module, targets in sorted(_core_edges(include_functions=True).items()):
        own = layer_of(module)
        if own is None:
            continue
        for target, line in targets.items():
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                upward.append(f"{module} (layer {own}) imports {target} (layer {theirs}), line {line}")
    assert not unplaced and not upward, (
        "core modules missing from LAYERS (add them where they belong):\n" + "\n".join(unplaced)
        + "\nimports from a higher layer:\n" + "\n".join(upward))
