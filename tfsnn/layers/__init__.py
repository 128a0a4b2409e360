"""Keras layers of tfsnn (all registered under the ``tfsnn`` package name)."""
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense  # noqa: F401
