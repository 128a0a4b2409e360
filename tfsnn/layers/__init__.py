"""Keras layers of tfsnn (all registered under the ``tfsnn`` package name)."""
from tfsnn.layers.encoders import DirectEncoder, PoissonEncoder, SignedPoissonEncoder  # noqa: F401
from tfsnn.layers.neurons import (IF, LIF, LeakyMeanReadout, LeeNeuron, RathiNeuron,  # noqa: F401
                                  SumReadout, TimeConstantDropout, TimeFolded)
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense  # noqa: F401
from tfsnn.layers.spiking import (DynamicThresholdNeuron, OutputAccumulator,  # noqa: F401
                                  SpikeEncoder, SpikingConv2D)
