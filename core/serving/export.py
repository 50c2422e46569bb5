"""Mobile export: a run's model as a TensorFlow Lite file, with a parity check against Keras.

Variants (README "Mobile export" has the measured size and parity of each on real runs):
- "float16": weights stored as float16, about half the size of float32. Rounding every weight and bias to
  float16 moves probabilities visibly, and the biases and the small early layers do most of it; so every
  bias, and the smallest layers holding together `FLOAT32_SHARE` of the weights, stay float32
  (`keep_small_layers_float32`), for a few per cent more bytes. This is the default.
- "dynamic": dynamic-range int8 weights, about a quarter of the size, and less faithful: its int8
  activations move answers even where the weights are restored. So it stays as converted, for size over
  fidelity only, and `python -m core export` and the Evaluation page say when an export is below the
  parity bar (`meets_parity_bar`).
- "float32": no quantisation, the full size; identical to Keras within 1e-5.

The exported model takes the same raw films as the Keras model, (1, S, S, 1) float32 pixels in [0, 255],
and returns softmax probabilities.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.data.scan import decode_in_chunks
from core.runs.artifacts import EXPORTS_DIR_NAME, SPLIT_FILE_NAME, read_json, read_split_csv, run_dataset_root
from core.runs.registry import load_run, load_run_model
from core.serving.batch import predict_probabilities
from core.serving.lite import tflite_interpreter
from core.serving.tflite import convert_keras_variants, flatbuffer_modules
from core.settings import PROJECT_ROOT, keras_home_env

VARIANTS = ("float16", "dynamic", "float32")
DEFAULT_VARIANT = "float16"
# Bumped when an export's contents change for the same model (2: float16 keeps biases and small layers
# float32), so exports cached by the app under an older format are rebuilt rather than offered.
EXPORT_FORMAT = 2
# The float16 export keeps its smallest layers float32, together at most this share of all weights (see the
# module docstring).
FLOAT32_SHARE = 0.03
# The parity bar of the export: top-1 agreement with Keras and largest probability difference.
PARITY_MIN_TOP1 = 0.99
PARITY_MAX_DIFFERENCE = 0.02


def export_tflite(run_dir: str | os.PathLike, out_path: str | os.PathLike, variant: str = DEFAULT_VARIANT,
                  model=None) -> Path:
    """Convert a run's model.keras to a .tflite file; returns the written path.

    `model`: the run's Keras model when the caller has it loaded already (the export command passes it on
    to the parity check too); default: loaded from the run.
    """
    import tensorflow as tf

    if variant not in VARIANTS:
        raise ValueError(f"Got variant={variant!r}; must be one of {VARIANTS}.")
    if model is None:
        model = load_run_model(load_run(run_dir))

    def configure_for(variant: str):
        def configure(converter):
            if variant != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if variant == "float16":
                converter.target_spec.supported_types = [tf.float16]

        return configure

    # float16 keeps some layers float32 from a float32 conversion of the same model (one frozen graph).
    variants = [variant, "float32"] if variant == "float16" else [variant]
    flatbuffers = convert_keras_variants(model, [configure_for(name) for name in variants])
    flatbuffer = keep_small_layers_float32(*flatbuffers) if variant == "float16" else flatbuffers[0]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(flatbuffer)
    return out_path


_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def keep_small_layers_float32(float16: bytes, float32: bytes, share: float = FLOAT32_SHARE) -> bytes:
    """Give the float16 flatbuffer every bias, and its smallest layers, back in float32 (module docstring).

    The smallest layers are taken first, as long as together they hold at most `share` of the weights; the
    values come from a float32 conversion of the same model. Its weighted ops come in the same order, so the
    n-th convolution of one is the n-th of the other (checked by op and shape). Each restored constant
    becomes a float32 tensor read directly by its op instead of a float16 one behind a DEQUANTIZE op; ops,
    tensors and buffers left unused are then removed. When the two conversions do not line up, the float16
    flatbuffer is returned unchanged, with a warning.
    """
    import warnings

    flatbuffer_utils, schema = flatbuffer_modules()
    half = flatbuffer_utils.convert_bytearray_to_object(bytearray(float16))
    full = flatbuffer_utils.convert_bytearray_to_object(bytearray(float32))

    def name(model, op):
        return flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)

    def unchanged(reason: str) -> bytes:
        warnings.warn(f"The float16 export keeps every layer in float16 ({reason}); its parity check tells how "
                      "close it is.")
        return float16

    if len(half.subgraphs) != 1 or len(full.subgraphs) != 1:
        return unchanged("the model has several subgraphs")
    graph, reference = half.subgraphs[0], full.subgraphs[0]
    half_ops = [op for op in graph.operators if name(half, op) in _WEIGHTED_OPS]
    full_ops = [op for op in reference.operators if name(full, op) in _WEIGHTED_OPS]
    if len(half_ops) != len(full_ops):
        return unchanged("the two conversions differ in their layers")
    for op, twin in zip(half_ops, full_ops):
        if name(half, op) != name(full, twin) or len(op.inputs) != len(twin.inputs):
            return unchanged("the two conversions differ in their layers")

    sizes = [int(np.prod(reference.tensors[twin.inputs[1]].shape)) for twin in full_ops]
    restored, budget = set(), share * sum(sizes)
    for index in sorted(range(len(sizes)), key=sizes.__getitem__):
        if sizes[index] > budget:
            break
        restored.add(index)
        budget -= sizes[index]

    for number, (op, twin) in enumerate(zip(half_ops, full_ops)):
        inputs = [int(index) for index in op.inputs]
        for position in (1, 2)[: len(inputs) - 1]:  # 1: weights, 2: bias (always restored)
            if inputs[position] < 0 or (position == 1 and number not in restored):
                continue
            source, target = reference.tensors[twin.inputs[position]], graph.tensors[inputs[position]]
            if list(source.shape) != list(target.shape):
                return unchanged("the two conversions differ in their layers")
            already_float32 = target.type == schema.TensorType.FLOAT32 and half.buffers[target.buffer].data is not None
            if source.type != schema.TensorType.FLOAT32 or already_float32:
                continue
            buffer = schema.BufferT()
            buffer.data = full.buffers[source.buffer].data
            half.buffers.append(buffer)
            tensor = schema.TensorT()
            tensor.shape, tensor.type, tensor.name = source.shape, schema.TensorType.FLOAT32, source.name
            tensor.buffer = len(half.buffers) - 1
            graph.tensors.append(tensor)
            inputs[position] = len(graph.tensors) - 1
        op.inputs = inputs  # the parsed inputs are a read-only numpy array
    _drop_unused(half, graph)
    return flatbuffer_utils.convert_object_to_bytearray(half)


def _drop_unused(model, graph) -> None:
    """Remove ops whose outputs nothing reads, then tensors and buffers nothing references."""
    graph_outputs = set(int(index) for index in graph.outputs)
    while True:
        read = set(graph_outputs)
        for op in graph.operators:
            read.update(int(index) for index in op.inputs if index >= 0)
        kept = [op for op in graph.operators if any(int(index) in read for index in op.outputs)]
        if len(kept) == len(graph.operators):
            break
        graph.operators = kept

    used = set(int(index) for index in graph.inputs) | graph_outputs
    for op in graph.operators:
        for field in (op.inputs, op.outputs, op.intermediates):
            used.update(int(index) for index in (field if field is not None else []) if index >= 0)
    order = sorted(used)
    new_index = {old: new for new, old in enumerate(order)}

    def remap(indices):
        return None if indices is None else [new_index[int(i)] if i >= 0 else int(i) for i in indices]

    graph.tensors = [graph.tensors[index] for index in order]
    for op in graph.operators:
        op.inputs, op.outputs, op.intermediates = remap(op.inputs), remap(op.outputs), remap(op.intermediates)
    graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)
    for signature in model.signatureDefs or []:
        for entry in (signature.inputs or []) + (signature.outputs or []):
            entry.tensorIndex = new_index[int(entry.tensorIndex)]

    # Buffer 0 is the format's empty sentinel; keep it, and every buffer a tensor still reads.
    buffers_used = sorted({0} | {int(tensor.buffer) for tensor in graph.tensors})
    new_buffer = {old: new for new, old in enumerate(buffers_used)}
    model.buffers = [model.buffers[index] for index in buffers_used]
    for tensor in graph.tensors:
        tensor.buffer = new_buffer[int(tensor.buffer)]


class TFLiteClassifier:
    """Run an exported .tflite model on raw films (n, S, S, 1) one at a time, as a phone would."""

    def __init__(self, path: str | os.PathLike):
        self.interpreter = tflite_interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        outputs = []
        for image in np.asarray(images, np.float32):
            self.interpreter.set_tensor(self.input_index, image[np.newaxis])
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self.output_index)[0].copy())
        return np.stack(outputs)


def parity_report(run_dir: str | os.PathLike, tflite_path: str | os.PathLike, images: np.ndarray,
                  model=None) -> dict:
    """Compare a .tflite export with the Keras model on films: agreement, largest difference, size, speed.

    `model`: the run's Keras model when the caller has it loaded already; default: loaded from the run."""
    if model is None:
        model = load_run_model(load_run(run_dir))
    keras_probabilities = predict_probabilities(model, images)
    classifier = TFLiteClassifier(tflite_path)
    classifier(images[:1])
    started = time.perf_counter()
    lite_probabilities = classifier(images)
    latency_ms = (time.perf_counter() - started) * 1000 / len(images)
    agree = keras_probabilities.argmax(1) == lite_probabilities.argmax(1)
    # Films whose top two Keras probabilities are close can flip on rounding alone; agreement on the
    # films the model is decided about (margin above 0.05) is the stricter parity statement.
    top_two = np.sort(keras_probabilities, axis=1)[:, -2:]
    decided = (top_two[:, 1] - top_two[:, 0]) > 0.05
    report = {
        "n": int(len(images)),
        "top1_agreement": float(np.mean(agree)),
        "n_decided": int(decided.sum()),
        "top1_agreement_decided": float(np.mean(agree[decided])) if decided.any() else None,
        "max_abs_difference": float(np.max(np.abs(keras_probabilities - lite_probabilities))),
        "mean_abs_difference": float(np.mean(np.abs(keras_probabilities - lite_probabilities))),
        "size_bytes": Path(tflite_path).stat().st_size,
        "latency_ms_per_film": latency_ms,
    }
    return {**report, "meets_bar": meets_parity_bar(report)}


def run_films(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, limit: int = 300) -> np.ndarray:
    """Up to `limit` of the films a run was trained and tested on (test films first), as raw model inputs.

    Parity is a property of the arithmetic, not of generalisation, so any of the run's own films serve; they
    are the films the export will meet. Raises ValueError (saying what to do) when the films are unreachable.
    """
    root = run_dataset_root(run_dir, data_dir)
    rows = sorted(read_split_csv(Path(run_dir) / SPLIT_FILE_NAME), key=lambda row: row["subset"] != "test")
    paths = [root / row["path"] for row in rows if (root / row["path"]).is_file()][:limit]
    if not paths:
        raise ValueError(f"None of the run's films are in {root}; pass the folder where they are now (--data).")
    size = int(load_run(run_dir).config.get("image_size", 224))
    chunks = [images for _, images, _, _ in decode_in_chunks(paths, size)]
    return np.concatenate(chunks).astype(np.float32)


def meets_parity_bar(report: dict) -> bool:
    """Whether an export keeps the Keras model's answers: top-1 agreement >= PARITY_MIN_TOP1 and
    largest probability difference <= PARITY_MAX_DIFFERENCE."""
    return report["top1_agreement"] >= PARITY_MIN_TOP1 and report["max_abs_difference"] <= PARITY_MAX_DIFFERENCE


# --------------------------------------------------------------------------------------------------
# The app's exports: built once per run and variant in a child process, kept in the run's exports/ folder
# --------------------------------------------------------------------------------------------------

EXPORT_TIMEOUT_SECONDS = 900


def export_path(run_dir: str | os.PathLike, variant: str) -> Path:
    """Where a run's TFLite export of one variant is kept: <run>/exports/<variant>-v<EXPORT_FORMAT>.tflite.

    The format number in the name means an export built under an older format is never offered as current.
    ValueError for a variant not in VARIANTS.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Got variant={variant!r}; must be one of {VARIANTS}.")
    return Path(run_dir) / EXPORTS_DIR_NAME / f"{variant}-v{EXPORT_FORMAT}.tflite"


def export_parity_path(run_dir: str | os.PathLike, variant: str) -> Path:
    """Where the parity check of a run's export is kept, beside it: <run>/exports/<variant>-v<format>.parity.json."""
    return export_path(run_dir, variant).with_suffix(".parity.json")


def read_export_parity(run_dir: str | os.PathLike, variant: str) -> dict | None:
    """The parity report (`parity_report`'s dict) of a run's export, or None when it was not checked."""
    return read_json(export_parity_path(run_dir, variant), None) or None


def build_export(run_dir: str | os.PathLike, variant: str, timeout: float = EXPORT_TIMEOUT_SECONDS) -> Path:
    """Build the run's TFLite export in a child process (`python -m core export`), once per variant.

    The TensorFlow converter runs outside the calling process (the app's server), so its memory is returned
    when it ends. The file is written under a temporary name and renamed into place, so a half-written export
    is never offered; the parity check's JSON is kept beside it (`export_parity_path`). Returns the path;
    RuntimeError (with the converter's last message) when the export fails or takes longer than `timeout` s.
    """
    target = export_path(run_dir, variant)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RuntimeError(f"Cannot write exports into {target.parent} ({error.strerror or error}).") from None
    partial = target.with_name(f".{variant}-{os.getpid()}-{time.time_ns()}.tflite.partial")
    parity = partial.with_suffix(".json")
    command = [sys.executable, "-m", "core", "export", "--model", str(run_dir), "--tflite", str(partial),
               "--variant", variant, "--parity-json", str(parity)]
    try:
        result = subprocess.run(command, cwd=PROJECT_ROOT, env={**os.environ, **keras_home_env()},
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        parity.unlink(missing_ok=True)
        raise RuntimeError(f"The {variant} export took longer than {timeout:.0f} s and was stopped.") from None
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        parity.unlink(missing_ok=True)
        last = (result.stderr or result.stdout or "").strip().splitlines()[-3:]
        raise RuntimeError(f"The {variant} export failed: {' '.join(last) or 'no message'}")
    if parity.is_file():
        os.replace(parity, export_parity_path(run_dir, variant))
    os.replace(partial, target)
    return target
