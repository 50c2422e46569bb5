"""core.model owns every layer name: no other core module spells one out (checked on the source, no TensorFlow)."""

from __future__ import annotations

import ast
from pathlib import Path

import core.model as model_module

CORE = Path(model_module.__file__).resolve().parent
# Names that are only ever layer names. "film", "scaling" and "predictions" are also ordinary words of the
# code (a config field, a JSON key), so for them only get_layer("...") with a literal is refused below.
UNAMBIGUOUS = {
    model_module.GRAY_TO_RGB_LAYER_NAME, model_module.LAST_CONV_LAYER_NAME, model_module.LAST_CONV_BN_LAYER_NAME,
    model_module.BACKBONE_OUTPUT_LAYER_NAME, model_module.POOLED_FEATURES_LAYER_NAME,
    model_module.HEAD_BN_LAYER_NAME, model_module.HEAD_DROPOUT_LAYER_NAME,
}


def _spelled_out_layer_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in UNAMBIGUOUS:
            found.append(f"{path.relative_to(CORE.parent)}:{node.lineno} {node.value!r}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_layer"
                and node.args and isinstance(node.args[0], ast.Constant)):
            found.append(f"{path.relative_to(CORE.parent)}:{node.lineno} get_layer({node.args[0].value!r})")
    return found


def test_layer_names_are_spelled_out_only_in_core_model():
    offenders = [hit for path in sorted(CORE.rglob("*.py")) if path != Path(model_module.__file__).resolve()
                 for hit in _spelled_out_layer_names(path)]
    assert not offenders, "import the layer name from core.model instead:\n" + "\n".join(offenders)


def test_the_head_chain_runs_from_the_last_convolution_through_the_head_to_the_softmax():
    assert model_module.HEAD_CHAIN[0] == model_module.LAST_CONV_LAYER_NAME
    assert model_module.HEAD_CHAIN[-len(model_module.HEAD_LAYER_NAMES):] == model_module.HEAD_LAYER_NAMES
    assert model_module.HEAD_CHAIN[-1] == model_module.PREDICTIONS_LAYER_NAME


def test_the_offline_weights_message_gives_steps_the_training_page_can_follow(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    message = model_module.offline_weights_message(0.35)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in message
    assert str(tmp_path / "keras" / "models") in message and "under the data root" in message
    assert "Backbone weights on the Training page" in message and "weights=<path" not in message
