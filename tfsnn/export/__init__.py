"""Deployment formats of tfsnn models.

* ``tfsnn.export.savedmodel``: SavedModels of a quantized ANN (``export_ann``), of its converted
  integer SNN (``export_snn``) and of a streaming model of stateful neurons (``export_stream``).
"""
from tfsnn.export.savedmodel import export_ann, export_snn, export_stream  # noqa: F401
