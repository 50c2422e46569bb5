"""Keras to TensorFlow Lite: conversion through a frozen graph, its serving signature, and model digests.

Shared by the fast engine (core.serving.lite, float32) and the mobile export (core.serving.export, with
quantisation). The graph is frozen (its variables made constants) before the converter sees it, which is
much faster than `from_keras_model`: that path writes and reloads a SavedModel first. A frozen graph has
no signature, so the "serving_default" one callers use is written into the flatbuffer. Should the frozen
path fail, the SavedModel path is used instead, with a warning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import logging
import warnings
from pathlib import Path

from core.model import FILM_LAYER_NAME


def convert_keras(graph, configure=None) -> bytes:
    """A single-input keras.Model as a TensorFlow Lite flatbuffer, through a frozen graph.

    `configure(converter)`, when given, sets the converter's options (quantisation). The signature is
    "serving_default" with the model's input name and, as `from_keras_model` names them, the dict keys
    of a dict output or "output_0" for a single output.
    """
    return convert_keras_variants(graph, [configure])[0]


def convert_keras_variants(graph, configures) -> list[bytes]:
    """`convert_keras(graph, configure)` for each of `configures` (None: no options), in order.

    The graph is traced and frozen once for all of them: freezing costs more than a converter run, and an
    export that needs two conversions of one model (float16 and its float32 twin) would otherwise pay it
    twice.
    """
    import tensorflow as tf

    input_name = graph.inputs[0].name.split(":")[0] or FILM_LAYER_NAME
    frozen, freeze_error = None, None
    flatbuffers = []
    for configure in configures:
        try:
            if freeze_error is not None:
                raise freeze_error  # A graph that could not be frozen is not frozen again for the next one.
            if frozen is None:
                try:
                    frozen = frozen_function(graph, input_name)
                except Exception as error:  # noqa: BLE001 - handled below, as any failure of the fast path.
                    freeze_error = error
                    raise
            flatbuffers.append(frozen_flatbuffer(frozen, graph, input_name, configure))
        except Exception as error:  # noqa: BLE001 - the slower path below converts every model the fast one does.
            warnings.warn(f"Converting through a frozen graph failed ({type(error).__name__}: {error}); "
                          "converting through a SavedModel instead (slower).", RuntimeWarning, stacklevel=2)
            converter = tf.lite.TFLiteConverter.from_keras_model(graph)
            if configure:
                configure(converter)
            # The converter prints the whole saved-model signature (hundreds of lines) to stdout.
            with contextlib.redirect_stdout(io.StringIO()):
                flatbuffers.append(converter.convert())
    return flatbuffers


def frozen_function(graph, input_name: str):
    """The concrete function of a single-input keras.Model in inference mode, its variables frozen to
    constants (what `frozen_flatbuffer` converts)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, *graph.inputs[0].shape[1:]), tf.float32, name=input_name)
    function = tf.function(lambda film: graph(film, training=False), input_signature=[spec])
    return convert_variables_to_constants_v2(function.get_concrete_function())


def frozen_flatbuffer(frozen, graph, input_name: str, configure=None) -> bytes:
    """Convert `frozen_function(graph, input_name)`; see `convert_keras`."""
    import tensorflow as tf

    # Without a trackable object the converter takes its graph-def path (what makes this fast) and logs, on
    # every call, that the path is deprecated; TensorFlow is pinned, and convert_keras falls back if it goes.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        if configure:
            configure(converter)
        flatbuffer = converter.convert()
    finally:
        absl_logger.setLevel(level)
    # The frozen graph's outputs come in tf.nest order, which for a dict is its sorted keys.
    output_names = sorted(graph.output) if isinstance(graph.output, dict) else ["output_0"]
    return add_signature(flatbuffer, [input_name], output_names)


def add_signature(flatbuffer: bytes, input_names: list[str], output_names: list[str]) -> bytes:
    """The flatbuffer with a "serving_default" signature naming its main graph's inputs and outputs, in order."""
    flatbuffer_utils, schema = flatbuffer_modules()
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    subgraph = model.subgraphs[0]
    if len(subgraph.inputs) != len(input_names) or len(subgraph.outputs) != len(output_names):
        raise ValueError(f"The graph has {len(subgraph.inputs)} inputs and {len(subgraph.outputs)} outputs; "
                         f"got names for {len(input_names)} and {len(output_names)}.")

    def tensor_map(name, index):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs = [tensor_map(n, i) for n, i in zip(input_names, subgraph.inputs)]
    signature.outputs = [tensor_map(n, i) for n, i in zip(output_names, subgraph.outputs)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def flatbuffer_modules():
    """TensorFlow Lite's flatbuffer_utils and schema modules (to read and edit .tflite files)."""
    # `import tensorflow.lite.tools...` resolves to TensorFlow's public API module, which lacks `tools`.
    return (importlib.import_module("tensorflow.lite.tools.flatbuffer_utils"),
            importlib.import_module("tensorflow.lite.python.schema_py_generated"))


def model_digest(model_path) -> str:
    """SHA-256 (first 32 hex digits) of a model file, hashed once per version of the file.

    A version is the file's resolved path, modification time and size, so a file rewritten in place is
    hashed again and an unchanged one is not read twice in a process.
    """
    path = Path(model_path).resolve()
    status = path.stat()
    return _digest(str(path), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
