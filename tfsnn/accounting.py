"""Spike and synaptic-operation (SOP) accounting with exact fan-out, and the stat-file texts
of ALL_INT_SNN (Zou et al. 2024, Front. Neurosci. 18). One place for the exact fan-out and MAC
counts of the simulator (``tfsnn.simulation``), the stat files and the training-time activity probes
(``tfsnn.viz.tensorboard``).

Definitions:

* A **spike** is one event of a spiking layer: hidden spikes are +1 or -1; an encoder spike is
  one event of amplitude ``2^k`` (counted once; its amplitude is a weight, not more events).
* An **SOP** is one input event times one synapse it reaches: an event at input position
  ``(h, w, c)`` of a conv layer costs ``fanout(h, w)`` = (number of output positions whose window
  covers ``(h, w)``) x ``C_out`` SOPs. Border positions reach fewer synapses; zero (ternary)
  weights are counted (a synapse is a kernel entry). SOPs are attributed to the *receiving*
  layer: ``conv2`` counts the encoder's events, ..., ``output`` counts the last hidden layer's
  events x ``num_classes`` (the output fan-out *is* counted, unlike the original's CIFAR
  script). Encoder events count once each (the original weighted them by ``2^k``; same at k=0).
  The encoder's own input is analog: its cost is MACs (``ann_macs``), not SOPs.
* Any converted SNN (``tfsnn.conversion.graph.SnnGraph``): the receiving layers are
  ``rules.RECEIVERS`` and their fan-out is ``rules.fanout``; an increment of magnitude m reaching
  a synapse (after a sum pool, an ``Add``) is m events; a receiver that does not spike itself
  (``IntegerSynapse``) counts its SOPs in the row of the neurons it feeds.
* ANN MACs use the same exact fan-out: ``MACs = C_in x sum_{h,w} fanout(h, w)`` (padding zeros
  are not multiplied), so an ANN whose every input neuron is 1 costs as many MACs as SOPs.

Stat files (one line per (batch, step), batch-major: line ``b*T + t``; values summed over the
images of batch b; ``H`` = the hidden spiking layers, encoder excluded, as in the original):

=================  ==========================================================================
accuracy.txt       number of correct predictions (argmax of y_t) in batch b at step t (count)
spike_num.txt      cumulative sum_{l in H} sum_{tau <= t} sum_i |s_{l,i,tau}| (+1 and -1 alike)
spike_collect.txt  cumulative net sum_{l in H} sum_i n_{l,i,t} (#(+1) - #(-1)) = 2^k sum Q at
                   convergence
sop_num.txt        cumulative SOPs of all receiving layers (conv2.. and output) up to step t
abs_spike.txt      this step only: sum_{l in H} sum_i |s_{l,i,t}|
sum_spike.txt      this step only: sum_{l in H} sum_i s_{l,i,t}
=================  ==========================================================================
"""

import numpy as np

from tfsnn.geometry import conv_fanout

STAT_FILES = ("accuracy.txt", "spike_num.txt", "spike_collect.txt", "sop_num.txt",
              "abs_spike.txt", "sum_spike.txt")


def stat_series(correct, pos, neg, sops, hidden):
    """The six per-(batch, step) series of the stat files.

    Args:
      correct: ``[nb, T]`` correct predictions per batch and step.
      pos, neg: ``[nb, L, T]`` numbers of +1 / -1 events per batch, spiking layer and step.
      sops: ``[nb, R, T]`` SOPs per batch, receiving layer and step.
      hidden: indices (into L) of the layers in ``H``.
    Returns:
      dict file name -> int64 ``[nb, T]``.
    """
    pos, neg = np.asarray(pos, np.int64)[:, hidden], np.asarray(neg, np.int64)[:, hidden]
    abs_s = (pos + neg).sum(1)
    sum_s = (pos - neg).sum(1)
    return {"accuracy.txt": np.asarray(correct, np.int64),
            "spike_num.txt": np.cumsum(abs_s, 1),
            "spike_collect.txt": np.cumsum(sum_s, 1),
            "sop_num.txt": np.cumsum(np.asarray(sops, np.int64).sum(1), 1),
            "abs_spike.txt": abs_s,
            "sum_spike.txt": sum_s}


def stat_file_texts(series):
    """``{file name: text}`` of the series of ``stat_series``: one integer per line, batch-major
    (write them with ``tfsnn.runs.atomic_write_text``)."""
    return {name: "".join(f"{int(v)}\n" for v in np.asarray(series[name]).reshape(-1))
            for name in STAT_FILES}


def fanout_maps(snn):
    """Exact fan-out of every receiving layer of a converted SNN, per input:
    ``{(receiver name, input name): int64 [*input frame shape]}`` (``rules.fanout``)."""
    from tfsnn.conversion.graph import SnnGraph
    return dict(SnnGraph.of(snn).fanouts)


def ann_macs(snn):
    """MACs per image of the same network as an ANN, per row of the SNN's tables (exact fan-out,
    padding excluded; ``rules.macs``): encoder rows (their analog input synapses), spiking layers
    (the synapses feeding them), the output; plus ``total`` and ``total_hidden_and_output``."""
    from tfsnn.conversion.graph import SnnGraph
    return SnnGraph.of(snn).ann_macs()


def consumer_fanout(layer, input_shape):
    """Fan-out per input neuron of a receiving conv/dense layer: ``[H, W]`` map or an int.

    ``layer`` needs ``kernel_size/strides/padding/filters`` (conv) or ``units`` (dense);
    ``input_shape`` is the receiving layer's input shape without the batch axis.
    """
    if hasattr(layer, "kernel_size"):
        return conv_fanout(input_shape[:2], layer.kernel_size, layer.strides,
                                   layer.padding, layer.filters)
    if hasattr(layer, "units"):
        return int(layer.units)
    raise ValueError(f"cannot compute the fan-out of layer {layer.name!r} "
                     f"({type(layer).__name__}); supported: conv (kernel_size) and dense (units)")


def all_int_probes(model, k):
    """``{act<i>: (events_per_unit_activation, fanout)}`` of an ALL_INT model (tfsnn.models)."""
    names = [l.name for l in model.layers if l.name.startswith("act")]
    probes = {}
    for i, name in enumerate(names, start=1):
        receiver = model.get_layer(f"conv{i + 1}") if i < len(names) else model.get_layer("output")
        shape = model.get_layer(name).output.shape[1:]
        probes[name] = (1 if i == 1 else 2 ** k, consumer_fanout(receiver, shape))
    return probes


def activity_stats(outputs, scale=1, fanout=None, time_axis=False):
    """Spike statistics of one layer's output ``[N, ...]`` (``[N, T, ...]`` with ``time_axis``).

    Events are ``scale * |output|`` (for an ANN activation: the net spike count the SNN fires).
    Returns ``(events per neuron per image (per step with time_axis), SOPs per image or None,
    per-neuron counts [N, neurons])``; SOPs are events times the fan-out (a map ``[H, W]``
    broadcast over channels, or an int), summed, per image.
    """
    events = scale * np.abs(np.asarray(outputs, np.float64))
    n = events.shape[0]
    steps = events.shape[1] if time_axis else 1
    events_sum = events.sum(axis=1) if time_axis else events
    sops = None
    if fanout is not None:
        fan = np.asarray(fanout, np.float64)
        fan = fan[..., None] if fan.ndim == 2 else fan
        sops = float((events_sum * fan).sum() / n)
    counts = events_sum.reshape(n, -1)
    return float(counts.mean() / steps), sops, counts
