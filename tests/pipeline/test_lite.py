"""core.serving.lite, the fast single-film engine: the same answers as Keras, and Keras whenever it cannot serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import needs_pretrained


def _films(run_dir, count=6):
    """Films of the dataset the run was trained on, from every class, as paths and model inputs."""
    import json

    from core.imaging.loader import load_image
    from core.runs.registry import load_run

    root = json.loads((run_dir / "data_report.json").read_text())["root"]
    paths = sorted(Path(root).rglob("*.png"))[::7][:count]
    size = int(load_run(run_dir).config["image_size"])
    return paths, np.stack([load_image(str(path), size) for path in paths]).astype(np.float32)


@needs_pretrained
def test_lite_engine_gives_keras_probabilities_gate_and_grad_cam(tiny_run, keras_predictor, lite_predictor):
    assert keras_predictor.engine == "Keras" and lite_predictor.engine == "TensorFlow Lite"
    paths, _ = _films(tiny_run)
    compared = 0
    for path in paths:
        slow = keras_predictor.predict(path, with_cam=True)
        fast = lite_predictor.predict(path, with_cam=True)
        assert fast.engine == "TensorFlow Lite" and slow.engine == "Keras"
        assert fast.label == slow.label
        for name, probability in slow.probabilities.items():
            assert fast.probabilities[name] == pytest.approx(probability, abs=1e-4)
        assert fast.gate.passed == slow.gate.passed
        assert fast.gate.score == pytest.approx(slow.gate.score, rel=1e-3)
        if slow.cam.max() > 0:  # A briefly trained model can leave a film with nothing that raises its class.
            compared += 1
            assert np.abs(fast.cam - slow.cam).max() < 0.02
    assert compared >= len(paths) // 2
    batch = lite_predictor.predict_files(paths)
    for path, result in zip(paths, batch):
        expected = keras_predictor.predict(path).probabilities
        assert all(result.probabilities[c] == pytest.approx(p, abs=1e-4) for c, p in expected.items())


def test_closed_form_grad_cam_is_the_gradient_tape_grad_cam(tiny_run, keras_predictor):
    """Given the same last-convolution maps, the engine's CAM is GradCam's to float precision, for every class."""
    import keras

    from core.explain.gradcam import cached_grad_cam
    from core.model import LAST_CONV_LAYER_NAME
    from core.serving.lite import ClosedFormGradCam

    model = keras_predictor.model  # The tiny run's model, already loaded.
    closed_form = ClosedFormGradCam(model)
    maps_model = keras.Model(model.input, model.get_layer(LAST_CONV_LAYER_NAME).output)
    explainer = cached_grad_cam(model)  # The GradCam the maps of the checks and of Review use, compiled once.
    _, films = _films(tiny_run, count=4)
    for class_index in range(4):
        _, cams = explainer(films, class_index=class_index)
        for film_maps, expected in zip(np.asarray(maps_model(films)), cams):
            assert np.abs(closed_form(film_maps, class_index) - expected).max() < 1e-4


def test_bilinear_matrix_is_tf_image_resize():
    import tensorflow as tf

    from core.serving.lite import bilinear_matrix

    small = np.random.default_rng(0).random((7, 5)).astype(np.float32)
    expected = tf.image.resize(small[None, :, :, None], (64, 48), method="bilinear").numpy()[0, :, :, 0]
    assert np.allclose(bilinear_matrix(7, 64) @ small @ bilinear_matrix(5, 48).T, expected, atol=1e-5)


def test_a_failed_conversion_leaves_prediction_on_keras(tiny_run, monkeypatch):
    import core.serving.lite
    from core.serving.predict import Predictor

    def broken(model):
        raise RuntimeError("converter crashed")

    monkeypatch.setenv("PARU_CACHE_DIR", str(tiny_run.parent / "empty-cache"))
    monkeypatch.setattr(core.serving.lite, "convert", broken)
    predictor = Predictor(tiny_run, engine="lite", warm=False)  # The film below traces what it takes.
    assert predictor.engine == "Keras" and "converter crashed" in predictor.engine_note
    paths, _ = _films(tiny_run, count=1)
    result = predictor.predict(paths[0], with_cam=True)
    assert result.error is None and result.engine == "Keras" and result.cam is not None


def test_a_graph_that_cannot_be_frozen_is_converted_through_a_saved_model_and_frozen_once(monkeypatch):
    """Each variant of a graph whose freezing fails comes from the slower SavedModel path, with a warning, and
    the freezing is not tried again for the second variant."""
    import keras

    import core.serving.tflite
    from core.serving.lite import tflite_interpreter

    attempts = []

    def unfreezable(graph, input_name):
        attempts.append(input_name)
        raise RuntimeError("cannot freeze")

    monkeypatch.setattr(core.serving.tflite, "frozen_function", unfreezable)
    film = keras.Input((4, 4, 1), name="film")
    graph = keras.Model(film, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(film)))
    with pytest.warns(RuntimeWarning, match="converting through a SavedModel instead"):
        flatbuffers = core.serving.tflite.convert_keras_variants(graph, [None, None])
    assert len(attempts) == 1 and len(flatbuffers) == 2
    films = np.random.default_rng(0).random((1, 4, 4, 1)).astype(np.float32)
    for flatbuffer in flatbuffers:
        interpreter = tflite_interpreter(model_content=flatbuffer)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], films)
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]),
                                   np.asarray(graph(films)), rtol=1e-5, atol=1e-6)


def test_a_model_of_another_shape_is_refused_with_a_reason():
    import keras

    from core.model import LAST_CONV_LAYER_NAME
    from core.serving.lite import EngineUnavailable, convert

    film = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(4, 3, name=LAST_CONV_LAYER_NAME)(film)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(film, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(EngineUnavailable, match="Keras path"):
        convert(model)


def test_background_conversion_switches_engines_and_is_cached(tiny_run, lite_predictor, tmp_path, monkeypatch):
    """The engine switch, the cache and its rebuild; the converter itself is the real one of `lite_predictor`
    (its flatbuffer from the session's cache is handed back here, once the test lets the conversion finish)."""
    import threading

    import core.serving.lite
    from core.serving.lite import LiteEngine, cached_path
    from core.serving.predict import Predictor

    converted = cached_path(tiny_run / "model.keras").read_bytes()  # The session's, by lite_predictor.
    allowed, calls = threading.Event(), []

    def convert(model):
        calls.append(model)
        assert allowed.wait(60)
        return converted

    monkeypatch.setattr(core.serving.lite, "convert", convert)
    monkeypatch.setenv("PARU_CACHE_DIR", str(tmp_path / "cache"))
    predictor = Predictor(tiny_run, engine="background")
    assert predictor.converting  # The Predictor is ready at once, before the conversion has finished.
    paths, films = _films(tiny_run, count=1)
    result = predictor.predict(paths[0])  # Served at once, on Keras, while the conversion runs.
    assert result.error is None and result.engine == "Keras" and predictor.converting
    allowed.set()
    assert predictor.lite_ready.wait(300) and not predictor.converting
    assert predictor.engine == "TensorFlow Lite", predictor.engine_note
    assert predictor.predict(paths[0]).engine == "TensorFlow Lite"
    cache_file = cached_path(tiny_run / "model.keras")
    assert cache_file.is_file() and len(calls) == 1
    # The next process (here: the next Predictor) starts on the cached copy without converting.
    assert Predictor(tiny_run, engine="cached", warm=False).engine == "TensorFlow Lite" and len(calls) == 1
    cache_file.write_bytes(b"not a flatbuffer")  # A damaged cache is rebuilt, not fatal.
    assert LiteEngine.for_model_file(predictor.model, tiny_run / "model.keras")(films[0])[0].shape == (4,)
    assert cache_file.read_bytes() == converted and len(calls) == 2


def test_external_evaluation_on_either_engine_gives_the_same_figures(tiny_run, tiny_dataset):
    from core.evaluation.evaluate import evaluate_folder

    on_keras = evaluate_folder(tiny_run, tiny_dataset, engine="keras")
    on_lite = evaluate_folder(tiny_run, tiny_dataset, engine="lite")
    assert (on_keras["engine"], on_lite["engine"]) == ("Keras", "TensorFlow Lite")
    for slow, fast in zip(on_keras["predictions"], on_lite["predictions"]):
        assert slow["file"] == fast["file"]
        assert all(fast["probabilities"][c] == pytest.approx(p, abs=1e-4) for c, p in slow["probabilities"].items())
    assert on_lite["confusion_matrix"] == on_keras["confusion_matrix"]


def test_the_maintained_runtime_serves_and_tf_lite_is_the_announced_fallback(monkeypatch):
    import sys

    from core.serving import lite

    pytest.importorskip("ai_edge_litert")
    interpreter, name = lite.tflite_runtime()
    assert name == lite.LITERT_RUNTIME and interpreter.__module__.startswith("ai_edge_litert")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # As if the package were not installed.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setattr(lite, "_RUNTIME_WARNED", False)
    with pytest.warns(UserWarning, match="pip install ai-edge-litert"):
        interpreter, name = lite.tflite_runtime()
    assert name == lite.TF_LITE_RUNTIME and interpreter.__name__ == "Interpreter"
