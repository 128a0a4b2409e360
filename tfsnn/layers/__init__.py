"""Keras layers of tfsnn (all registered under the ``tfsnn`` package name).

* ``quant``: quantization-aware ``QuantConv2D`` / ``QuantDense`` / ``QuantActivation``.
* ``encoders``: images -> sequences ``[B, T, ...]`` (direct, Poisson, signed Poisson).
* ``neurons``: every neuron model (``lif``, ``integer``, ``iir``, ``proxy``).
* ``filters``: IIR synapse filters (dual exponential, first-order low-pass, readout filter).
* ``sequence``: per-frame layers on sequences (``TimeFolded``), ``TimeConstantDropout`` and
  ``SpikeDropout``.
* ``readouts``: sequences -> logits (``SumReadout``, ``LeakyMeanReadout``).
"""
from tfsnn.layers.encoders import DirectEncoder, PoissonEncoder, SignedPoissonEncoder  # noqa: F401
from tfsnn.layers.filters import DualExpIIR, DualExpReadoutFilter, FirstOrderLowPass  # noqa: F401
from tfsnn.layers.neurons import ALIF, RLIF, CuBaLIF  # noqa: F401
from tfsnn.layers.neurons import (IF, LIF, DynamicThresholdNeuron, IIRSpikingConv2D,  # noqa: F401
                                  IIRSpikingDense, LeeNeuron, OutputAccumulator, ProxyBatchNorm,
                                  PSPMaxPool2D, RathiNeuron, SpikeEncoder, SpikingConv2D)
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense  # noqa: F401
from tfsnn.layers.readouts import LeakyMeanReadout, SumReadout  # noqa: F401
from tfsnn.layers.sequence import SpikeDropout, TimeConstantDropout, TimeFolded  # noqa: F401
