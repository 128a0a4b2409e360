"""Keras layers of tfsnn (all registered under the ``tfsnn`` package name)."""
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense  # noqa: F401
from tfsnn.layers.spiking import DynamicThresholdNeuron, OutputAccumulator, SpikeEncoder, SpikingConv2D  # noqa: F401,E501
