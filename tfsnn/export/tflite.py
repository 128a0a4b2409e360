"""LiteRT (TFLite) export of a quantized ANN and of its converted integer SNN.

``to_tflite(model, path, timesteps=None)`` writes a ``.tflite`` flatbuffer of TFLite builtin ops
only (``TFLITE_BUILTINS``, no Select TF ops) and a ``<path>.json`` sidecar (kind, ``timesteps``,
``k``, layer names). A converted SNN is exported as ``tfsnn.export.unrolled.UnrolledSnn``: the
time loop unrolled for a fixed ``T``, ternary kernels stored as int8 and cast in the graph, int32
membranes; outputs ``logits`` float32 ``[B, classes]`` (last step), ``class`` int64 ``[B]``,
``spikes`` int32 ``[B, L]`` and ``sops`` int32 ``[B, R]`` per image. An ANN gives ``logits`` and
``class``. The batch axis is dynamic.

``run_tflite(path, images)`` runs the file in the LiteRT interpreter (``ai-edge-litert``, the
``litert`` extra) in batches and returns the outputs as numpy arrays.
"""
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfsnn.export.unrolled import check_images, metadata, portable_module
from tfsnn.runs import atomic_write_text


def tflite_bytes(model, timesteps=None):
    """The ``.tflite`` flatbuffer of ``model`` (see ``to_tflite``) and its metadata dict."""
    module = portable_module(model, timesteps, captured_constants=True)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.concrete_function()], module)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv.convert(), metadata(module)


def to_tflite(model, path, timesteps=None) -> Path:
    """Write ``model`` (a quantized Keras ANN, or an SNN from ``tfsnn.convert(..., use_int=True)``)
    as a LiteRT flatbuffer at ``path`` (and ``<path>.json``); returns ``path``.

    Args:
      model: the ANN or the converted integer SNN.
      path: the ``.tflite`` file to write (written to a temporary file, then renamed).
      timesteps: steps of the SNN (default its own; must be None for an ANN).
    """
    data, meta = tflite_bytes(model, timesteps)
    path = Path(path)
    atomic_write_text(path.with_name(path.name + ".json"),
                       (json.dumps(meta, indent=2) + "\n").encode())
    return atomic_write_text(path, data)


def read_metadata(path):
    """The ``<path>.json`` sidecar of a file written by ``to_tflite`` / ``to_onnx`` (None if
    absent)."""
    side = Path(str(path) + ".json")
    return json.loads(side.read_text()) if side.exists() else None


def _interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ImportError("run_tflite needs the LiteRT interpreter: pip install ai-edge-litert "
                          "(or pip install 'tfsnn[litert]')") from e
    return Interpreter(model_path=str(path))


def run_tflite(path, images, batch_size=100, interpreter=None):
    """Run a file written by ``to_tflite`` on ``images`` in the LiteRT interpreter.

    Args:
      path: the ``.tflite`` file.
      images: ``[N, H, W, C]`` preprocessed images (as for the Keras model); any numeric dtype,
        cast to float32.
      batch_size: images per interpreter call (the input is resized when the size changes).
      interpreter: an ``ai_edge_litert`` ``Interpreter`` of ``path`` to reuse (optional).
    Returns:
      ``{output name: numpy array [N, ...]}`` (``logits``, ``class``; for an SNN also
      ``spikes``, ``sops``). An empty batch gives empty arrays.
    Raises:
      ValueError: ``images`` not of shape ``[N, *input shape]``.
    """
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    it = _interpreter(path) if interpreter is None else interpreter
    runner = it.get_signature_runner()
    (inp,) = runner.get_input_details().values()
    x = check_images(images, inp["shape_signature"][1:])
    outs = runner.get_output_details()
    if len(x) == 0:
        return {k: np.zeros([0, *d["shape_signature"][1:]], d["dtype"]) for k, d in outs.items()}
    parts = {k: [] for k in outs}
    for i in range(0, len(x), int(batch_size)):
        res = runner(images=np.ascontiguousarray(x[i:i + int(batch_size)]))
        for k in parts:
            parts[k].append(np.array(res[k]))
    return {k: np.concatenate(v) for k, v in parts.items()}
