"""Neuron layers, one module per neuron family (all registered under the ``tfsnn`` package).

* ``lif``: surrogate-gradient IF / LIF and the seed papers' variants (``RathiNeuron``,
  ``LeeNeuron``): one fused op per layer with a hand-written backward pass.
* ``integer``: the integer SNN of ALL_INT_SNN (``SpikeEncoder``, ``DynamicThresholdNeuron``,
  ``SpikingConv2D``, ``OutputAccumulator``), built by ``tfsnn.conversion``.
* ``iir``: IIR-SNN neurons fed by synapse filters (``IIRSpikingDense``, ``IIRSpikingConv2D``,
  ``PSPMaxPool2D``).
* ``proxy``: proxy learning's IF neuron (``if_spikes``) and two-branch ``ProxyBatchNorm``.
* ``adaptive`` (``ALIF``), ``current`` (``CuBaLIF``), ``recurrent`` (``RLIF``): further fused
  surrogate-gradient neurons; ``base`` (``NeuronLayer``: state, streaming, recording) and
  ``fused`` (their op plumbing). Conventions vs snnTorch / Norse / SpikingJelly: docs/neurons.md.
"""
from tfsnn.layers.neurons.adaptive import ALIF, alif_sequence  # noqa: F401
from tfsnn.layers.neurons.base import NeuronLayer  # noqa: F401
from tfsnn.layers.neurons.current import CuBaLIF, cuba_sequence  # noqa: F401
from tfsnn.layers.neurons.iir import IIRSpikingConv2D, IIRSpikingDense, PSPMaxPool2D  # noqa: F401
from tfsnn.layers.neurons.integer import (DynamicThresholdNeuron, OutputAccumulator,  # noqa: F401
                                          SpikeEncoder, SpikingConv2D)
from tfsnn.layers.neurons.lif import IF, LIF, LeeNeuron, RathiNeuron, spike_sequence  # noqa: F401
from tfsnn.layers.neurons.proxy import ProxyBatchNorm, if_spikes  # noqa: F401
from tfsnn.layers.neurons.recurrent import RLIF, recurrent_sequence  # noqa: F401
