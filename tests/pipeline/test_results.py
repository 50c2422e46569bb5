"""predict --json carries the model's context, the answer's set, the gate's verdict and the similar training
films the run stored at training time; a run without that file still answers."""

from __future__ import annotations

import json
import shutil

from conftest import CLASS_NAMES, dataset_of
from core.cli import main
from core.runs.artifacts import SIMILAR_FILE_NAME, read_split_csv
from core.serving.similar import NEAREST


def test_training_stores_the_training_films_for_similar_cases(tiny_run):
    assert (tiny_run / SIMILAR_FILE_NAME).is_file()
    from core.serving.similar import load_similar_index

    index = load_similar_index(tiny_run)
    train = {row["path"]: row["label"] for row in read_split_csv(tiny_run / "split.csv") if row["subset"] == "train"}
    assert sorted(index["files"]) == sorted(train) and all(train[f] == label for f, label in
                                                          zip(index["files"], index["labels"]))


def test_predict_json_has_the_run_its_context_the_set_the_gate_and_similar_films(tiny_run, cli_predictor, capsys):
    film = sorted((dataset_of(tiny_run) / "Normal").glob("*.png"))[0]
    assert main(["predict", "--model", str(tiny_run), "--json", str(film)]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["run"] == tiny_run.name
    assert line["model"]["run_id"] == tiny_run.name and line["model"]["classes"] == list(CLASS_NAMES)
    assert line["model"]["training_films"] > 0 and line["model"]["dataset"] == dataset_of(tiny_run).name
    assert "test_accuracy_ci95" in line["model"] and "macro_f1_ci95" in line["model"]
    assert set(line["gate"]) == {"passed", "kind", "reason"}
    assert line["gate"]["kind"] in ("ok", "not_a_chest_film", "unlike_training_films", "mis_prepared")
    if line["gate"]["passed"]:
        assert line["prediction_set"] and set(line["prediction_set"]) <= set(CLASS_NAMES)
        assert isinstance(line["uncertain"], bool) and line["uncertain"] == (len(line["prediction_set"]) > 1)
        assert len(line["similar"]) == NEAREST and set(line["similar"][0]) == {"file", "label", "distance"}
        # The film is itself a training or validation film: a training film is its own nearest neighbour.
        if film.relative_to(dataset_of(tiny_run)).as_posix() in {s["file"] for s in line["similar"]}:
            assert line["similar"][0]["distance"] < 1e-3
    else:
        assert line["label"] is None and "raw" in line and "probabilities" not in line


def test_a_run_without_similar_cases_still_answers(tiny_run, tmp_path, capsys):
    old = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, old)
    (old / SIMILAR_FILE_NAME).unlink()
    film = sorted((dataset_of(tiny_run) / "Pneumonia").glob("*.png"))[0]
    assert main(["predict", "--model", str(old), "--json", "--engine", "keras", str(film)]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line.get("similar", []) == [] and "error" not in line
