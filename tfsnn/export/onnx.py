"""ONNX export of a quantized ANN and of its converted integer SNN (tf2onnx; run with onnxruntime).

``to_onnx(model, path, timesteps=None)`` converts the same function as ``to_tflite``
(``tfsnn.export.unrolled``: for an SNN the time loop unrolled for a fixed ``T``, int8 kernels
cast in the graph, int32 membranes, no ``searchsorted``) with ``tf2onnx`` and writes ``path``
plus a ``<path>.json`` sidecar. Input ``images`` float32 ``[B, H, W, C]`` (dynamic batch);
outputs ``logits``, ``class`` (and ``spikes``, ``sops`` for an SNN), as in ``to_tflite``.
``run_onnx(path, images)`` runs it with ``onnxruntime``. Both need the ``onnx`` extra
(``pip install tf2onnx onnxruntime``).
"""
import json
from pathlib import Path

import numpy as np

from tfsnn.export.unrolled import check_images, metadata, portable_module
from tfsnn.runs import atomic_write_text

OPSET = 17


def _tf2onnx():
    try:
        import tf2onnx
    except ImportError as e:
        raise ImportError("to_onnx needs tf2onnx: pip install tf2onnx onnxruntime "
                          "(or pip install 'tfsnn[onnx]')") from e
    return tf2onnx


def onnx_bytes(model, timesteps=None, opset=OPSET):
    """The serialized ONNX model of ``model`` (see ``to_onnx``) and its metadata dict."""
    tf2onnx = _tf2onnx()
    module = portable_module(model, timesteps)
    fn = module.run
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature,
                                             opset=opset)
    names = [o.name for o in proto.graph.output]
    want = metadata(module)["outputs"]
    if sorted(names) != sorted(want):
        raise RuntimeError(f"tf2onnx produced outputs {names}, expected {want}")
    return proto.SerializeToString(), metadata(module)


def to_onnx(model, path, timesteps=None, opset=OPSET) -> Path:
    """Write ``model`` (a quantized Keras ANN, or an SNN from ``tfsnn.convert(..., use_int=True)``)
    as an ONNX file at ``path`` (and ``<path>.json``); returns ``path``.

    Args:
      model: the ANN or the converted integer SNN.
      path: the ``.onnx`` file (written to a temporary file, then renamed).
      timesteps: steps of the SNN (default its own; must be None for an ANN).
      opset: the ONNX opset.
    """
    data, meta = onnx_bytes(model, timesteps, opset)
    path = Path(path)
    atomic_write_text(path.with_name(path.name + ".json"),
                       (json.dumps(meta, indent=2) + "\n").encode())
    return atomic_write_text(path, data)


def session(path):
    """An ``onnxruntime.InferenceSession`` of ``path`` on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("run_onnx needs onnxruntime: pip install onnxruntime "
                          "(or pip install 'tfsnn[onnx]')") from e
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path, images, batch_size=100, sess=None):
    """Run a file written by ``to_onnx`` on ``images`` with onnxruntime.

    Args:
      path: the ``.onnx`` file.
      images: ``[N, H, W, C]`` preprocessed images; any numeric dtype, cast to float32.
      batch_size: images per ``session.run`` call.
      sess: an ``InferenceSession`` of ``path`` to reuse (optional).
    Returns:
      ``{output name: numpy array [N, ...]}``; an empty batch gives empty arrays.
    Raises:
      ValueError: ``images`` not of shape ``[N, *input shape]``.
    """
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    sess = session(path) if sess is None else sess
    (inp,) = sess.get_inputs()
    x = check_images(images, inp.shape[1:])
    names = [o.name for o in sess.get_outputs()]
    if len(x) == 0:
        dt = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
        return {o.name: np.zeros([0, *o.shape[1:]], dt.get(o.type, np.float32))
                for o in sess.get_outputs()}
    parts = {k: [] for k in names}
    for i in range(0, len(x), int(batch_size)):
        for k, v in zip(names, sess.run(names, {inp.name: x[i:i + int(batch_size)]})):
            parts[k].append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}
