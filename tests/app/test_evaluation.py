"""The Evaluation page: curves, confusion matrices, tables, reliability diagrams, the mobile export (the
build itself faked here; tests/system builds a real one) and external validation with its overlap checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.conftest import chart_specs, open_page, plotly_charts, texts
from conftest import jpeg_copy
from core.runs.artifacts import EXTERNAL_FILE_NAME, read_split_csv
from core.ui import navigation

EVALUATION = navigation.EVALUATION.script


def test_evaluation_shows_confusion_matrix_and_tables(with_run):
    at = open_page(EVALUATION)
    assert not at.exception, at.exception
    # Curves (2), confusion matrices (2), per-class bars, ROC.
    assert len(plotly_charts(at)) >= 5
    assert len(at.dataframe) >= 4  # Table 1, TP/FP/FN/TN, per-class metrics, calibration.
    assert "Confusion matrix (rows: true class)" in texts(at.subheader)
    assert at.download_button[0].label == "Download metrics.json"


def test_evaluation_draws_reliability_diagrams_for_validation_and_test(with_run):
    at = open_page(EVALUATION)
    assert not at.exception, at.exception
    specs = chart_specs(at)
    assert "Reliability, validation" in specs and "Reliability, test" in specs
    assert "before T (ECE" in specs and "after T (ECE" in specs
    assert "Calibration" in texts(at.subheader)


def test_external_validation_offers_the_data_roots_folders_and_keeps_its_result(run_copy, data_root):
    at = open_page(EVALUATION)
    # The data root's dataset folders are offered, as on the Training page: no path to type.
    assert data_root.name in at.selectbox(key="external_folder_pick").options
    at.selectbox(key="external_folder_pick").set_value(str(data_root))
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    # The run was trained on this very folder: every film is identical to one it saw.
    assert "not an independent test" in texts(at.warning)
    assert len(at.dataframe) >= 5
    labels = [button.label for button in at.download_button]
    assert "Download the external result (JSON)" in labels and "Download the figures (CSV)" in labels
    # Kept with the run: a new session shows the last result without evaluating again.
    kept = json.loads((run_copy.path / EXTERNAL_FILE_NAME).read_text())
    assert kept["run_id"] == run_copy.run_id and kept["data_dir"] == str(data_root)
    again = open_page(EVALUATION)
    assert "not an independent test" in texts(again.warning)
    assert f"Folder: `{data_root}`" in texts(again.caption)


def test_folders_outside_the_data_roots_are_refused(with_run, data_root):
    at = open_page(EVALUATION)
    at.text_input(key="external_folder_typed").set_value(str(data_root.parent / ".." / "..")).run()
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    assert any("outside the data folders" in error.value for error in at.error)


def test_external_validation_counts_resized_copies_of_training_films(run_copy, data_root, monkeypatch, tmp_path):
    train = [row for row in read_split_csv(run_copy.path / "split.csv") if row["subset"] == "train"]
    train = [row for row in train if row["label"] == run_copy.classes[0]][:5]
    folder = tmp_path / "copies"
    for row in train:
        jpeg_copy(data_root / row["path"], folder / row["label"] / (Path(row["path"]).stem + ".jpg"), 72)
    jpeg_copy(data_root / train[0]["path"], folder / "Effusion" / "effusion.jpg", 72)  # Not a class of the model.
    monkeypatch.setenv("PARU_DATA_ROOT", str(tmp_path))
    at = open_page(EVALUATION)
    at.text_input(key="external_folder_typed").set_value(str(folder))
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    warning = texts(at.warning)
    assert "0 films are identical" in warning and "5 are resized or re-encoded copies" in warning
    assert "not an independent test" in warning
    assert "Hamming distance of at most 32 of 256 bits" in texts(at.caption)
    matches = [frame.value for frame in at.dataframe if "Hamming distance" in frame.value.columns]
    assert len(matches) == 1 and len(matches[0]) == 5
    # The skipped files are listed, each with its reason, not only counted.
    skipped = [frame.value for frame in at.dataframe if "Reason" in frame.value.columns]
    assert len(skipped) == 1 and skipped[0]["File"].tolist() == ["Effusion/effusion.jpg"]
    # The folder holds no film of the second class: its recall is undefined, never 0.0%.
    other = run_copy.classes[1]
    comparison = next(frame.value for frame in at.dataframe if "External" in frame.value.columns)
    assert comparison.loc[f"Recall {other}", "External"] == "—, no films"
    assert comparison.loc["Macro averages over", "External"] == run_copy.classes[0]
    assert "no films" in chart_specs(at)


def test_external_validation_says_when_the_perceptual_check_could_not_run(run_copy, data_root, tmp_path):
    # The run's films are no longer where it was trained, and it predates stored perceptual hashes.
    (run_copy.path / "perceptual_hashes.json").unlink()
    report = json.loads((run_copy.path / "data_report.json").read_text())
    report["root"] = str(tmp_path / "moved-away")
    (run_copy.path / "data_report.json").write_text(json.dumps(report))
    at = open_page(EVALUATION)
    at.text_input(key="external_folder_typed").set_value(str(data_root))
    at.button(key="external_go").click().run()
    assert not at.exception, at.exception
    info = texts(at.info)
    assert "perceptual check (resized or re-encoded copies) could not be run" in info
    assert "not on this machine" in info
    assert "not an independent test" in texts(at.warning)  # The byte check still works from split.csv.


def test_evaluation_builds_a_mobile_export_once_and_offers_it(run_copy, fake_export):
    # An export cached under an older format (float16 before its small layers stayed float32) is not offered.
    stale = run_copy.path / "exports" / "float16.tflite"
    stale.parent.mkdir()
    stale.write_bytes(b"old export")
    at = open_page(EVALUATION)
    assert at.selectbox(key="export_variant").options == ["float16", "dynamic", "float32"]
    at.selectbox(key="export_variant").set_value("float16").run()
    assert not [button for button in at.download_button if button.label.endswith(".tflite")]
    at.button(key="export_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert fake_export == [(str(run_copy.path), "float16")]
    assert "Download float16 .tflite" in [button.label for button in at.download_button]
    # Its work done, the build button is gone at once, not only on a later visit.
    assert "export_go" not in [button.key for button in at.button]
    assert any(metric.label == "float16 .tflite size" for metric in at.metric)
    shown = texts(at.success) + texts(at.warning)
    assert "Checked against the Keras model on 48 of the run's films: top-1 agreement 100.0%" in shown
    # A later visit offers the cached file without building again.
    again = open_page(EVALUATION)
    assert "Download float16 .tflite" in [button.label for button in again.download_button]
    assert "export_go" not in [button.key for button in again.button]
    assert len(fake_export) == 1


def test_an_export_below_the_parity_bar_says_so(run_copy, fake_export):
    from core.serving import export

    target = export.export_path(run_copy.path, "dynamic")
    target.parent.mkdir(parents=True)
    target.write_bytes(bytes(2_000_000))
    export.export_parity_path(run_copy.path, "dynamic").write_text(json.dumps(
        {"n": 10, "top1_agreement": 0.9, "max_abs_difference": 0.3, "latency_ms_per_film": 1.0, "meets_bar": False}))
    at = open_page(EVALUATION)
    at.selectbox(key="export_variant").set_value("dynamic").run()
    assert "Below the bar" in texts(at.warning)
    assert any(metric.label == "dynamic .tflite size" and metric.value == "2.0 MB" for metric in at.metric)
    shutil.rmtree(target.parent)
    assert fake_export == []


def test_the_comparison_names_each_runs_data_and_warns_when_it_differs(run_copy, tmp_path):
    other = run_copy.path.parent / "other-run"
    shutil.copytree(run_copy.path, other)
    report = json.loads((other / "data_report.json").read_text())
    report["root"] = "pediatric-pneumonia"
    (other / "data_report.json").write_text(json.dumps(report))
    at = open_page(EVALUATION)
    assert not at.exception, at.exception
    assert "tested on different data (different dataset folders)" in texts(at.warning)
    table = next(frame.value for frame in at.dataframe if "other-run" in frame.value.columns)
    assert table.loc["Dataset", "other-run"] == "pediatric-pneumonia"
    assert {"Classes", "Test films", "Preset"} <= set(table.index)


def test_evaluation_shows_the_prediction_sets_coverage_and_risk_coverage_curve(with_run):
    at = open_page(EVALUATION)
    assert not at.exception, at.exception
    assert "Prediction sets" in texts(at.subheader)
    section = with_run.metrics["conformal"]
    assert f"{section['level']:.0%} sets" in texts(at.markdown)
    table = next(frame.value for frame in at.dataframe if "Mean set size" in frame.value.columns)
    assert list(table["Films"]) == ["All test films", *with_run.classes]
    assert "Risk-coverage" in chart_specs(at)


def test_a_run_without_sets_says_so_and_a_section_without_a_curve_gets_one_from_its_predictions(run_copy):
    from core.runs.artifacts import METRICS_FILE_NAME

    path = run_copy.path / METRICS_FILE_NAME
    metrics = json.loads(path.read_text())
    metrics["conformal"].pop("risk_coverage")
    path.write_text(json.dumps(metrics))
    at = open_page(EVALUATION)
    assert not at.exception, at.exception
    assert "Risk-coverage" in chart_specs(at)
    metrics.pop("conformal")
    path.write_text(json.dumps(metrics))
    at = open_page(EVALUATION)
    assert not at.exception, at.exception
    assert "This run has no prediction sets (trained before they existed)." in texts(at.caption)
    assert "Risk-coverage" not in chart_specs(at)
