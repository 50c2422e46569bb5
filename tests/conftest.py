"""Shared fixtures and the tiers' rules.

Tiers (folders): unit/ imports no TensorFlow, pipeline/ runs TensorFlow in process on ONE session-scoped tiny
run and session-scoped predictors, app/ drives the pages with AppTest, system/ is marked `slow` (real child
trainings, real films, the browser). `python -m pytest -m "not slow"` is the inner loop. Unit tests run first.

Every test writes only to temporary folders: the session points PARU_MODELS_DIR and PARU_CACHE_DIR at its
own, and fails at the end if a tracked file under models/ changed or models/ gained a file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.settings import configure_keras_home

# Keras reads KERAS_HOME once, when it is first imported: point it at the offline weights (when they are
# beside the project and the variable is unset) before any test of this process imports Keras.
configure_keras_home()

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SHARED = PROJECT_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
WEIGHTS_035_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
CLASS_NAMES = ("Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax")
METRIC_KEYS = {"classes", "n", "accuracy", "mean_ovr_accuracy", "macro", "weighted", "per_class",
               "confusion_matrix", "ci95", "clinical_bar"}
PER_CLASS_KEYS = {"precision", "recall", "f1", "ovr_accuracy", "tp", "fp", "fn", "tn", "support", "roc_auc"}
TIERS = ("unit", "app", "pipeline", "system")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _find_weights_035() -> Path | None:
    """The offline ImageNet 0.35 backbone file: ../shared/keras_home, $KERAS_HOME or ~/.keras, else None.

    Tests never download it: without the file they train from random weights (weights="none"), and tests
    that need a model that has learned the task skip (see `needs_pretrained`)."""
    homes = [SHARED / "keras_home", os.environ.get("KERAS_HOME"), Path.home() / ".keras"]
    for home in homes:
        if home and (Path(home) / "models" / WEIGHTS_035_NAME).is_file():
            return Path(home) / "models" / WEIGHTS_035_NAME
    return None


WEIGHTS_035 = _find_weights_035()
needs_pretrained = pytest.mark.skipif(
    WEIGHTS_035 is None,
    reason=f"needs the ImageNet backbone {WEIGHTS_035_NAME} (in ../shared/keras_home/models, $KERAS_HOME/models "
           "or ~/.keras/models): from random weights a few seconds of training cannot learn the task")


def film_with_blob(class_index: int, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A noisy gray 'film' whose bright blob sits in a class-dependent place (left, right, top, bottom)."""
    image = rng.normal(90, 20, (size, size))
    centres = [(size // 2, size // 4), (size // 2, 3 * size // 4), (size // 4, size // 2), (3 * size // 4, size // 2)]
    row, col = centres[class_index % 4]
    rows, cols = np.ogrid[:size, :size]
    image[(rows - row) ** 2 + (cols - col) ** 2 < (size // 7) ** 2] += 120
    return np.clip(image, 0, 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 12, class_folders=CLASS_NAMES, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for index, folder in enumerate(class_folders):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            Image.fromarray(film_with_blob(index, rng)).save(root / folder / f"{folder[:3]}_{number:03d}.png")
    return root


def tiny_config(**overrides):
    from core.config import preset

    settings = dict(alpha=0.35, image_size=64, epochs=2, batch_size=8, explain_check_films=0,
                    weights=str(WEIGHTS_035) if WEIGHTS_035 is not None else "none")
    return preset("paper", **{**settings, **overrides})


def dataset_of(run_dir: Path) -> Path:
    """The dataset folder a run was trained on (from its data report)."""
    return Path(json.loads((Path(run_dir) / "data_report.json").read_text())["root"])


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of a run (in tmp_path/models/) for tests that change a run's files."""
    copy = tmp_path / "models" / Path(run_dir).name
    shutil.copytree(run_dir, copy)
    return copy


def jpeg_copy(source: Path, target: Path, side: int, quality: int = 85) -> Path:
    """A resized, re-encoded copy of a film: the near-duplicate that byte hashes cannot see."""
    image = Image.open(source).convert("L")
    image = image.resize((side, max(1, side * image.height // image.width)), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, "JPEG", quality=quality)
    return target


# The tiers ----------------------------------------------------------------------------------------------


def tier_of(path) -> str | None:
    parts = Path(str(path)).resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config, items):
    """system/ is the slow tier; unit tests run first (so their no-TensorFlow check sees a clean process).

    Then, under pytest-xdist (whole files, in this order, to whichever process is free), one file whose first
    test needs the tiny run, so that one process starts training it at once; next the files that do not need
    it, then those whose first tests do not, so the other process has work instead of waiting for the
    training; then the rest, the system tier last. Within a phase, the files that start a `python -m core`
    child come first: the child's seconds of TensorFlow start-up must not be the last thing a process does
    while the other has finished."""
    for item in items:
        if tier_of(item.path) == "system":
            item.add_marker(pytest.mark.slow)
    order = {tier: index for index, tier in enumerate(TIERS)}
    tier_index = {item: order.get(tier_of(item.path), len(TIERS)) for item in items}
    items.sort(key=tier_index.get)
    files: dict = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    later = (order["unit"], order["system"], len(TIERS))
    first_needs_run = {path: "tiny_run" in tests[0].fixturenames for path, tests in files.items()}
    any_needs_run = {path: any("tiny_run" in test.fixturenames for test in tests) for path, tests in files.items()}
    # A file of more than two tests: xdist hands a process its next file when two tests of this one remain.
    starter = next((path for path, tests in files.items() if tier_index[tests[0]] not in later
                    and first_needs_run[path] and len(tests) > 2), None)

    def phase(item) -> int:
        tier = tier_index[item]
        if tier == order["unit"]:
            return 0
        if tier in later:
            return 5
        if item.path == starter:
            return 1
        return 4 if first_needs_run[item.path] else 3 if any_needs_run[item.path] else 2

    children = {path: '"-m", "core"' in Path(path).read_text() for path in files}
    items.sort(key=lambda item: (phase(item), not children[item.path], tier_index[item]))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadfile`, the app tier is ONE unit of work, so one process runs every page test: the
    pages' cached predictors of the tier's shared runs, the pages' compiled Grad-CAM passes and Streamlit's
    first script runs are paid once a session instead of once in each process. Every other file stays a unit
    of its own; the tier starts where its first file stands in the order above (the starter)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class AppTierTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "tests/app/" if scope.startswith("tests/app/") else scope

    return AppTierTogether(config, log)


def pytest_unconfigure(config):
    """Before pytest's last collections (its check for exceptions raised in finalizers runs five in a row) and
    the interpreter's own at exit: collect until a collection finds nothing more, then freeze what is left.
    The check still sees every finalizer that runs; the repeated full traversals of a TensorFlow process's
    many objects, which find nothing and only delay the end of the session, are skipped."""
    import gc

    for _ in range(5):
        if not gc.collect():
            break
    gc.freeze()


# Temporary folders only ---------------------------------------------------------------------------------


def _models_status() -> str:
    result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored", "models/"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


@pytest.fixture(scope="session", autouse=True)
def private_folders(tmp_path_factory):
    """Runs, the audit log, converted models and the user's data go to folders of this test session, never the
    user's own; the shipped runs under models/ stay as git has them (tests that read them name the folder
    explicitly).

    Under pytest-xdist the processes share one cache folder, so a model is converted to TensorFlow Lite once
    per session, not once per process: core.serving.lite writes its cache files atomically (a partial file
    renamed into place), so a process reads a whole conversion or none."""
    before = _models_status()
    saved = {name: os.environ.get(name) for name in ("PARU_MODELS_DIR", "PARU_CACHE_DIR", "PARU_USER_DIR")}
    os.environ["PARU_MODELS_DIR"] = str(tmp_path_factory.mktemp("paru-models"))
    os.environ["PARU_CACHE_DIR"] = str(built_once(tmp_path_factory, "paru-cache", lambda folder: folder))
    os.environ["PARU_USER_DIR"] = str(tmp_path_factory.mktemp("paru-user"))  # Tags of the shipped runs.
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    after = _models_status()
    if after != before:
        pytest.fail(f"the test session changed models/ (tests must write only to temporary folders):\n"
                    f"before:\n{before or '(clean)'}\nafter:\n{after}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def one_load_per_model_file():
    """Each model file is loaded once per process: core.model.load_model (and the names core.runs.registry
    and core.explain.regions import it under) hands back the model already loaded from a file of the same
    bytes, as the session's predictors hand theirs to the commands. A run's model takes about a second of
    CPU to build from its file, and the pipeline and app tiers load the tiny run's (or a copy's) dozens of
    times. Paru never changes a loaded model (the heatmap checks randomise a clone), and the session fails
    at the end if a shared one was changed anyway. A file Keras refuses is refused every time (not kept)."""
    import hashlib
    import threading

    import core.explain.regions
    import core.model
    import core.runs.registry

    real_load = core.model.load_model
    loaded: dict[str, tuple[object, list[float]]] = {}
    lock = threading.Lock()

    def fingerprint(model) -> list[float]:
        return [float(np.asarray(weights, np.float64).sum()) for weights in model.get_weights()]

    def load_model(model_path):
        digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
        with lock:
            if digest not in loaded:
                model = real_load(model_path)
                loaded[digest] = model, fingerprint(model)
            return loaded[digest][0]

    modules = (core.model, core.runs.registry, core.explain.regions)
    for module in modules:
        module.load_model = load_model
    yield
    for module in modules:
        module.load_model = real_load
    changed = [digest[:12] for digest, (model, weights) in loaded.items() if fingerprint(model) != weights]
    if changed:
        pytest.fail(f"a model shared by one_load_per_model_file was changed by a test or by Paru: {changed}",
                    pytrace=False)


# One tiny run and its predictors, shared by the whole session -------------------------------------------


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` -> a Path inside the new folder, built once per `python -m pytest`.

    Without pytest-xdist this is `build(tmp_path_factory.mktemp(name))`. Under xdist every worker is its own
    process with its own session fixtures, so the first worker to get here builds into the folder all the
    workers share (the parent of their temporary roots) while holding a lock; the others wait and read the
    path it wrote. Only for read-only fixtures: every worker sees the same files."""
    import fcntl

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent
    record = shared / f"{name}.path"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.is_file():
            return Path(record.read_text())
        folder = shared / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        result = build(folder)
        record.write_text(str(result))
        return result


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """48 generated films, 12 per class, in class folders. Read-only."""
    return built_once(tmp_path_factory, "tiny", lambda folder: make_dataset(folder / "data"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset) -> Path:
    """One finished run trained briefly on the tiny dataset, alone in its own models folder. Read-only:
    tests that change a run's files work on `copy_run(tiny_run, tmp_path)`."""
    from core.training.run import train_run

    def train(models_dir: Path) -> Path:
        return train_run(tiny_dataset, tiny_config(), models_dir=models_dir, log=lambda line: None)

    return built_once(tmp_path_factory, "models", train)


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_run) -> Path:
    """The models folder that holds exactly the tiny run. Read-only."""
    return tiny_run.parent


@pytest.fixture(scope="session")
def keras_predictor(tiny_run):
    """The tiny run's Predictor on the Keras engine, uncalibrated."""
    from core.serving.predict import Predictor

    return Predictor(tiny_run, calibrated=False, engine="keras")


@pytest.fixture(scope="session")
def lite_predictor(tiny_run):
    """The tiny run's Predictor on the TensorFlow Lite engine, uncalibrated."""
    from core.serving.predict import Predictor

    return Predictor(tiny_run, calibrated=False, engine="lite")


@pytest.fixture(scope="session")
def copies_folder(tmp_path_factory, tiny_run):
    """Resized JPEG copies of 6 training films and 4 test films of the tiny run, in class folders, and the
    training films' paths."""
    from core.runs.artifacts import read_split_csv

    root = dataset_of(tiny_run)
    rows = read_split_csv(tiny_run / "split.csv")
    folder = tmp_path_factory.mktemp("external") / "copies"
    train = [row for row in rows if row["subset"] == "train"][:6]
    test = [row for row in rows if row["subset"] == "test"][:4]
    for row in train + test:
        jpeg_copy(root / row["path"], folder / row["label"] / (Path(row["path"]).stem + ".jpg"), 72)
    return folder, [row["path"] for row in train]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc on loopback for one test module (tests/pacs_fixture.py), or the module skipped with the
    reason it cannot run here."""
    from pacs_fixture import OrthancUnavailable, running_orthanc

    try:
        with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
            yield server
    except OrthancUnavailable as reason:
        pytest.skip(f"no PACS to test against: {reason}")
