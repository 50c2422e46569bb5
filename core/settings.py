"""Every environment variable Paru reads, and every default location, resolved in this one module.

| variable            | meaning                                                                  | default |
|---------------------|--------------------------------------------------------------------------|---------|
| `PARU_MODELS_DIR`   | the folder of runs (`<run_id>/`), the audit log and the training lock     | `models/` in the project |
| `PARU_DATA_ROOT`    | the folders the app may read datasets from, joined by `os.pathsep`; when set, it *replaces* the default | `../shared/data` beside the project if it exists, else `data/` in the project |
| `PARU_CACHE_DIR`    | where derived files (the TensorFlow Lite engines) are cached               | `$XDG_CACHE_HOME/paru`, else `~/.cache/paru` |
| `KERAS_HOME`        | Keras's own: where `weights="imagenet"` looks before downloading           | Keras's (`~/.keras`); Paru points it at `../shared/keras_home` when that exists and the variable is unset |
| `PARU_JOB_LOG`      | set by Paru for a background training: the log file of that job           | unset |
| `PARU_DICOMWEB_URL`  | the DICOMweb root of a PACS (QIDO-RS, WADO-RS, STOW-RS), e.g. `http://127.0.0.1:8042/dicom-web`; the Predict page shows "From PACS" only when it is set | unset |
| `PARU_DICOMWEB_USER`, `PARU_DICOMWEB_PASSWORD` | HTTP basic credentials for that PACS (from the environment only, never from a page) | unset |
| `PARU_DICOMWEB_TOKEN` | a bearer token for that PACS instead of a user and password | unset |
| `PARU_AUDIT_FILE_NAMES` | "1" to store uploaded file names in the audit log (they often carry patient identifiers; by default only the SHA-256 is stored) | unset |
| `PARU_AUDIT_MAX_BYTES` | the size at which the audit log is set aside as `audit-<time>.jsonl` and a new one started | 16 MiB |
| `PARU_USER_DIR`     | the user's own writable data, such as review tags of the shipped runs, which stay unmodified in git | `$XDG_DATA_HOME/paru`, else `~/.local/share/paru` |
| `PARU_DEFAULT_RUN`  | the run id the app opens with when neither the link (`?run=`) nor the session names one | `demo-nih-cxr4` (the shipped demo) |
| `TF_CONFIG`         | TensorFlow's own: the cluster and this process's task, for `--distribute multiworker` (see `tf_config`) | unset: one worker |
| `TF_CPP_MIN_LOG_LEVEL` | TensorFlow's C++ log level; Paru sets "2" unless the user set it (see `quiet_tensorflow`), and the command line and the app's server drop the start-up lines it hides (`filter_native_stderr`) | "2" |

Nothing here imports TensorFlow or Streamlit.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = PROJECT_ROOT.parent / "shared"


def default_models_dir() -> Path:
    """$PARU_MODELS_DIR if set, else the project's models/ folder."""
    return Path(os.environ.get("PARU_MODELS_DIR") or PROJECT_ROOT / "models")


def default_data_root() -> Path:
    """The first folder of $PARU_DATA_ROOT, else ../shared/data beside the project if it exists, else data/."""
    configured = data_roots_from_environment()
    if configured:
        return configured[0]
    shared = SHARED_ROOT / "data"
    return shared if shared.is_dir() else PROJECT_ROOT / "data"


def data_roots_from_environment() -> list[Path]:
    """The folders of $PARU_DATA_ROOT (several joined by os.pathsep), or [] when it is unset or empty."""
    configured = os.environ.get("PARU_DATA_ROOT") or ""
    return [Path(part).expanduser() for part in configured.split(os.pathsep) if part]


def allowed_data_roots() -> list[Path]:
    """Folders the app may read datasets from: $PARU_DATA_ROOT if set (it replaces the default), else the
    default data root."""
    return data_roots_from_environment() or [default_data_root()]


def cache_dir() -> Path:
    """$PARU_CACHE_DIR, else $XDG_CACHE_HOME/paru, else ~/.cache/paru."""
    if os.environ.get("PARU_CACHE_DIR"):
        return Path(os.environ["PARU_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "paru"


DEFAULT_RUN = "demo-nih-cxr4"
"""The shipped demo run the app opens with unless $PARU_DEFAULT_RUN names another."""
EXAMPLES_DIR = PROJECT_ROOT / "docs" / "examples"
"""The example films of the Predict page's gallery and their manifest (examples.json)."""


def default_run_id() -> str:
    """$PARU_DEFAULT_RUN, else DEFAULT_RUN: the run the app opens with (never simply the newest one, which may
    be an unfinished experiment)."""
    return (os.environ.get("PARU_DEFAULT_RUN") or "").strip() or DEFAULT_RUN


def user_data_dir() -> Path:
    """$PARU_USER_DIR, else $XDG_DATA_HOME/paru, else ~/.local/share/paru."""
    if os.environ.get("PARU_USER_DIR"):
        return Path(os.environ["PARU_USER_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "paru"


def audit_file_names() -> bool:
    """True when $PARU_AUDIT_FILE_NAMES asks for file names in the audit log ("1", "true" or "yes")."""
    return (os.environ.get("PARU_AUDIT_FILE_NAMES") or "").strip().lower() in ("1", "true", "yes")


AUDIT_MAX_BYTES = 16 * 1024 * 1024


def audit_max_bytes() -> int:
    """$PARU_AUDIT_MAX_BYTES (at least 4096), else AUDIT_MAX_BYTES."""
    try:
        return max(4096, int(os.environ.get("PARU_AUDIT_MAX_BYTES") or AUDIT_MAX_BYTES))
    except ValueError:
        return AUDIT_MAX_BYTES


def tf_config() -> dict:
    """$TF_CONFIG parsed ({"cluster": {"worker": [...], ...}, "task": {"type", "index"}}), or {} when unset.

    Raises ValueError when it is set but is not a JSON object: every worker would otherwise wait forever
    for a cluster it cannot name."""
    text = (os.environ.get("TF_CONFIG") or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}).") from None
    if not isinstance(value, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {type(value).__name__}.")
    return value


def shared_keras_home() -> Path | None:
    """../shared/keras_home beside the project when it holds a models/ folder, else None."""
    shared = SHARED_ROOT / "keras_home"
    return shared if (shared / "models").is_dir() else None


def keras_home_env() -> dict[str, str]:
    """{"KERAS_HOME": ../shared/keras_home} when KERAS_HOME is unset and that folder exists, else {}.

    For child processes: merged into their environment so they find the offline ImageNet weights."""
    if os.environ.get("KERAS_HOME"):
        return {}
    shared = shared_keras_home()
    return {"KERAS_HOME": str(shared)} if shared is not None else {}


def configure_keras_home() -> None:
    """Set KERAS_HOME in this process to ../shared/keras_home when it is unset and that folder exists."""
    os.environ.update(keras_home_env())


def keras_home() -> Path:
    """The KERAS_HOME Keras will use: the variable if set, else ~/.keras."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up lines (oneDNN notices, CUDA probes on a CPU machine) out of what users
    see, unless the user chose a level. Must run before TensorFlow is imported to take effect: core/__init__.py
    calls it, so every entry point (the CLI, the app, a training child, which inherits the variable) has it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# TensorFlow's C++ log lines ("I0000 00:00:1796162578.676630   27906 port.cc:153] ...") and the notices that
# come with them. This TensorFlow writes its start-up lines through absl before TF_CPP_MIN_LOG_LEVEL is read,
# so the variable alone lets them through; the CUDA probe on a machine without a GPU logs an error that is no
# failure ("failed call to cuInit").
_NATIVE_LOG_LINE = re.compile(rb"^[IWEF]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] ")
_NATIVE_NOTICES = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                   b"To enable the following instructions:", b"INFO: Created TensorFlow Lite XNNPACK delegate")


def _is_quiet_native_line(line: bytes, level: int) -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL `level` hides this stderr line (INFO at 1, WARNING and the CUDA probe at 2,
    ERROR at 3; FATAL never)."""
    if line.startswith(_NATIVE_NOTICES):
        return level >= 1
    if not _NATIVE_LOG_LINE.match(line):
        return False
    severity = line[:1]
    if severity == b"E" and b"cuInit" in line:
        return level >= 2
    return {b"I": 0, b"W": 1, b"E": 2}.get(severity, 99) < level


_FILTERING: list[bool] = []  # Set once this process's stderr goes through the filter.
_FILTER_LOCK = threading.Lock()  # The app runs each session's script in a thread of its own.


def filter_native_stderr() -> None:
    """Drop the TensorFlow C++ lines that TF_CPP_MIN_LOG_LEVEL asks to hide from this process's stderr (file
    descriptor 2, so the C++ writes are caught too); every other line passes unchanged and in order.

    For the command line (core/__main__.py) and the app's server (streamlit_app.py): their stderr is what
    users read, in a terminal or, for a background training, in the log the Training page shows. A level of
    0 keeps everything. A second call in the same process does nothing (the app's script calls it on every
    run).
    """
    with _FILTER_LOCK:
        if not _FILTERING:
            _install_native_filter()


def _install_native_filter() -> None:
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return
    if level <= 0:
        return
    try:
        original = os.dup(2)
    except OSError:  # No stderr to filter.
        return
    _FILTERING.append(True)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def relay() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not _is_quiet_native_line(line, level))
                if kept:
                    os.write(original, kept)
        if pending and not _is_quiet_native_line(pending, level):
            os.write(original, pending)

    thread = threading.Thread(target=relay, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # Closes the pipe's last write end, so the relay reads to its end and stops.
        thread.join(timeout=5)

    atexit.register(restore)


def job_log() -> str | None:
    """The log file of the background training this process runs as, if any ($PARU_JOB_LOG)."""
    return os.environ.get("PARU_JOB_LOG")


def dicomweb_url() -> str | None:
    """The DICOMweb root of the PACS ($PARU_DICOMWEB_URL), or None when no PACS is configured."""
    return (os.environ.get("PARU_DICOMWEB_URL") or "").strip() or None


def dicomweb_credentials() -> dict[str, str]:
    """{"token": ...} or {"user": ..., "password": ...} from the environment, or {} for an open PACS."""
    if os.environ.get("PARU_DICOMWEB_TOKEN"):
        return {"token": os.environ["PARU_DICOMWEB_TOKEN"]}
    if os.environ.get("PARU_DICOMWEB_USER"):
        return {"user": os.environ["PARU_DICOMWEB_USER"], "password": os.environ.get("PARU_DICOMWEB_PASSWORD", "")}
    return {}
