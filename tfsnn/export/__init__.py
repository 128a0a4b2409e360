"""Deployment formats of tfsnn models.

* ``tfsnn.export.savedmodel``: serving SavedModels of a quantized ANN (``export_ann``) and of any
  converted SNN (``export_snn``: int8 weights, in-graph input checks, chunked batches, per-image
  counts, ``metadata``), and of a streaming model of stateful neurons (``export_stream``).
* ``tfsnn.export.tflite`` / ``tfsnn.export.onnx``: LiteRT and ONNX files of a quantized ANN or
  of its integer SNN (``to_tflite`` / ``run_tflite``, ``to_onnx`` / ``run_onnx``; extras
  ``litert`` and ``onnx``, imported only when used), built from
  ``tfsnn.export.unrolled.UnrolledSnn`` (the SNN for a fixed T in portable ops).
"""
from tfsnn.export.savedmodel import export_ann, export_snn, export_stream  # noqa: F401
from tfsnn.export.onnx import run_onnx, to_onnx  # noqa: F401
from tfsnn.export.tflite import run_tflite, to_tflite  # noqa: F401
from tfsnn.export.unrolled import UnrolledSnn  # noqa: F401
