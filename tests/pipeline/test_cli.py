"""The command line, called in process through core.cli.main (its exit code returned, its output captured);
one real `python -m core` child process is kept, for the exit status and stderr a shell sees. The predict
commands on the tiny run are handed the session's predictor (`cli_predictor`) instead of loading their own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

from conftest import CLASS_NAMES, METRIC_KEYS, PROJECT_ROOT, dataset_of
from core.cli import main


def test_evaluate_external_folder_has_the_metrics_schema_and_flags_overlap(tiny_run, tmp_path, capsys):
    dataset = dataset_of(tiny_run)
    out = tmp_path / "external.json"
    assert main(["evaluate", "--model", str(tiny_run), "--data", str(dataset), "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    metrics = json.loads(out.read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n"] == 48
    # The run trained on this very folder: every training/validation film is an identical file.
    assert metrics["overlap"]["identical_files"] >= 30
    assert "WARNING" in stdout
    assert f"overall accuracy {metrics['accuracy']:.4f}" in stdout  # What is printed is what is written.


def test_cli_predict_json_reports_each_file_and_exits_2_on_bad_input(tiny_run, cli_predictor, tmp_path, capsys):
    good = next((dataset_of(tiny_run) / "Normal").glob("*.png"))
    bad = tmp_path / "bad.png"
    bad.write_text("this is a text file")
    cam_dir = tmp_path / "cams"
    code = main(["predict", "--model", str(tiny_run), str(good), str(bad), str(tmp_path / "missing.png"), "--json",
                 "--cam-dir", str(cam_dir)])
    assert code == 2
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(good), str(bad), str(tmp_path / "missing.png")]
    assert lines[0]["label"] in CLASS_NAMES
    assert set(lines[0]["probabilities"]) == set(CLASS_NAMES)
    assert abs(sum(lines[0]["probabilities"].values()) - 1) < 1e-4
    assert lines[0]["confidence"] == max(lines[0]["probabilities"].values())
    assert set(lines[0]["gate"]) >= {"passed", "reason"}
    assert "error" in lines[1] and "error" in lines[2]
    assert len(list(cam_dir.glob("*.png"))) == 1
    # Beside the overlay, the map itself on the model's input grid, for anyone to check.
    cam = np.load(cam_dir / f"{good.stem}_cam.npy")
    size = json.loads((tiny_run / "config.json").read_text())["image_size"]
    assert cam.dtype == np.float32 and cam.shape == (size, size) and 0.0 <= cam.min() <= cam.max() <= 1.0


def test_cli_predict_takes_a_folder_and_answers_every_film_in_it(tiny_run, cli_predictor, tmp_path, capsys):
    dataset = tmp_path / "films"
    shutil.copytree(dataset_of(tiny_run), dataset)
    (dataset / "Normal" / "notes.txt").write_text("not a film")  # Not a film type: not listed at all.
    assert main(["predict", "--model", str(tiny_run), "--json", str(dataset)]) == 0
    assert cli_predictor == [(tiny_run, {"engine": "cached", "warm": False})]  # A command traces on first use.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    films = sorted(str(path) for path in dataset.rglob("*.png"))
    assert sorted(line["file"] for line in lines) == films
    # Every film is answered: a label when the gate passed it, only the gate's verdict when it refused it.
    for line in lines:
        assert line["label"] in CLASS_NAMES if line["gate"]["passed"] else line.get("label") is None, line


def test_cli_split_lays_out_the_runs_exact_split_as_folders_that_read_back_the_same(tiny_run, tmp_path, capsys,
                                                                                     monkeypatch):
    from core.data.scan import assign_subsets, scan_dataset
    from core.runs.artifacts import read_split_csv

    # The layout's links lead into the dataset, which must lie under a data root for them to be followed.
    monkeypatch.setenv("PARU_DATA_ROOT", str(dataset_of(tiny_run).parent))
    out = tmp_path / "laid-out"
    assert main(["split", "--model", str(tiny_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    expected = {row["sha256"]: row["subset"] for row in read_split_csv(tiny_run / "split.csv")}
    scan = scan_dataset(out, decode=False)
    assert scan.layout != "class_folders" and not scan.skipped
    read_back = dict(zip((record.sha256 for record in scan.records), assign_subsets(scan)))
    assert read_back == expected

    # The dataset moved and lost a film: the rest is laid out (copies here), the missing film is named. This
    # is the one real `python -m core` child process: its exit status and stderr as a shell sees them.
    moved = tmp_path / "moved"
    shutil.copytree(dataset_of(tiny_run), moved)
    lost = read_split_csv(tiny_run / "split.csv")[0]["path"]
    (moved / lost).unlink()
    result = subprocess.run([sys.executable, "-m", "core", "split", "--model", str(tiny_run), "--out",
                             str(tmp_path / "copied"), "--copy", "--data", str(moved)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "1 films of the split are missing" in result.stderr and lost in result.stderr
    assert "Traceback" not in result.stderr
    copied = [path for path in (tmp_path / "copied").rglob("*.png")]
    assert len(copied) == len(expected) - 1 and not any(path.is_symlink() for path in copied)


def test_cli_evaluate_prints_the_perceptual_check(tiny_run, copies_folder, capsys):
    folder, _ = copies_folder
    assert main(["evaluate", "--model", str(tiny_run), "--data", str(folder)]) == 0
    stdout = capsys.readouterr().out
    assert "6 are resized or re-encoded copies of them (perceptual hash)" in stdout
    assert "Perceptual check: 6 near-duplicates" in stdout


def test_cli_explain_check_prints_the_checks_and_the_verdict(tiny_run, tmp_path, capsys):
    out = tmp_path / "check.json"
    assert main(["explain-check", "--model", str(tiny_run), "--films", "2", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["n_films"] == 2 and report["method"] == "gradcam"
    assert "deletion AUC" in stdout and "random order" in stdout and "randomisation" in stdout
    assert report["verdict"]["text"] in stdout
    assert not (tiny_run / "explain_check.json").exists()  # --json leaves the run folder as it was
    assert main(["explain-check", "--model", str(tiny_run), "--films", "0"]) == 2
    assert main(["explain-check", "--model", str(tiny_run), "--method", "occlusion"]) == 2
