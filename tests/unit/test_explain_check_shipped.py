"""`python -m core explain-check` on a shipped run leaves the run as git has it: the report goes to the user
data dir, the run's own explain_check.json and model card stay, and the app then reads the newer check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.explain import faithfulness
from core.runs import artifacts, registry

REPORT = {"method": "gradcam", "verdict": {"faithful": False, "text": "no better than random", "warnings": []},
          "seconds": {"total": 0.0}}


def _shipped_run(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setattr(registry, "SHIPPED_RUNS_DIR", tmp_path / "models")
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path / "data"))
    run_dir, data = tmp_path / "models" / "demo-chest", tmp_path / "data"
    run_dir.mkdir(parents=True)
    (run_dir / artifacts.MODEL_FILE_NAME).write_bytes(b"")
    artifacts.write_json_atomic(run_dir / artifacts.CONFIG_FILE_NAME, {"image_size": 32, "preset": "paper"})
    artifacts.write_json_atomic(run_dir / artifacts.CLASSES_FILE_NAME, ["Normal", "Pneumonia"])
    artifacts.write_json_atomic(run_dir / artifacts.STATUS_FILE_NAME, {"state": "finished"})
    artifacts.write_json_atomic(run_dir / artifacts.EXPLAIN_CHECK_FILE_NAME, {**REPORT, "shipped": True})
    (run_dir / artifacts.MODEL_CARD_FILE_NAME).write_text("# the shipped card\n")
    rows = ["path,label,subset"]
    for index, label in enumerate(["Normal", "Pneumonia"]):
        film = data / label / f"{index}.png"
        film.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((80, 80), 60 + 100 * index, np.uint8)).save(film)
        rows.append(f"{label}/{index}.png,{label},test")
    (run_dir / artifacts.SPLIT_FILE_NAME).write_text("\n".join(rows) + "\n")
    return run_dir, data


def test_a_shipped_runs_check_goes_to_the_user_dir_and_the_app_reads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PARU_USER_DIR", str(tmp_path / "user"))
    run_dir, data = _shipped_run(tmp_path, monkeypatch)
    assert registry.is_shipped_run(run_dir)
    before = {path.name: path.read_bytes() for path in run_dir.iterdir()}
    assert registry.load_explain_check(run_dir)["shipped"] is True  # Not checked here yet: the shipped report.
    monkeypatch.setattr(faithfulness, "check_films", lambda model, images, **options: dict(REPORT))

    report = faithfulness.check_run(run_dir, data, films=2, model=object())

    assert {path.name: path.read_bytes() for path in run_dir.iterdir()} == before  # The run is as shipped.
    written = registry.explain_check_path(run_dir)
    assert written == tmp_path / "user" / "explain_check" / "demo-chest.json" and written.is_file()
    assert registry.load_explain_check(run_dir) == report and "shipped" not in report
    assert sorted(report["films"]) == ["Normal/0.png", "Pneumonia/1.png"]


def test_a_users_own_run_keeps_its_check_in_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PARU_USER_DIR", str(tmp_path / "user"))
    run_dir, data = _shipped_run(tmp_path, monkeypatch)
    own = run_dir.rename(tmp_path / "models" / "20261202-000000-chest-paper")
    assert not registry.is_shipped_run(own)
    monkeypatch.setattr(faithfulness, "check_films", lambda model, images, **options: dict(REPORT))

    report = faithfulness.check_run(own, data, films=2, model=object())

    assert registry.explain_check_path(own) == own / artifacts.EXPLAIN_CHECK_FILE_NAME
    assert artifacts.read_explain_check(own) == report == registry.load_explain_check(own)
    assert not (tmp_path / "user").exists()
