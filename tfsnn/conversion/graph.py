"""The structure of a converted SNN (``tfsnn.convert``) for simulation and accounting: which
layers spike, which receive events (and their exact fan-out, ``rules.fanout``), and the per-layer
rows of the spike / SOP tables.

Works on every SNN ``convert`` builds: the ALL_INT chain (``SpikeEncoder -> SpikingConv2D... ->
OutputAccumulator``) and the graphs of ``quantize_model`` twins (``RampEncoder``,
``IntegerSynapse``, ``SpikingNeuron``, ``SpikeOp``, ``OutputHead``, with the twin's float first
synapse on the image).

Rows: one per spiking layer (encoder(s) first in graph order) and one for the output. The SOPs
of a receiving layer that does not spike itself (an ``IntegerSynapse``) go to the row of the
spiking layer it feeds (its neurons), so every row is a layer of neurons.
"""
import dataclasses

import keras
import numpy as np

from tfsnn.conversion.quantize import graph_nodes
from tfsnn.conversion.rules import ENCODERS, RECEIVERS, fanout, macs
from tfsnn.layers.neurons.integer import SpikingConv2D, SpikingNeuron


def _frame_shape(layer):
    """Per-step shape of a layer's output (time axis dropped when it has one)."""
    shape = tuple(int(d) for d in layer.output.shape[1:])
    return shape[1:] if hasattr(layer, "compact") else shape


@dataclasses.dataclass
class SnnGraph:
    """Static structure of a converted SNN.

    ``nodes``: ``[(layer, [input layer names])]`` in topological order; ``spiking``: spiking
    layers (``layer.spiking_output``); ``encoders``: their names that are encoders;
    ``receivers``: ``[(layer, [input names], row name)]``; ``output``: the output layer;
    ``fanouts``: ``{(receiver, input): int64 [*frame]}``; ``units``: ``{name: events per unit of
    value}`` of spike-carrying tensors (``2^k`` behind encoders only, else 1).
    """

    snn: object
    nodes: list
    spiking: list
    encoders: list
    receivers: list
    output: object
    fanouts: dict
    units: dict

    @classmethod
    def of(cls, snn):
        if not isinstance(snn, keras.Model):
            raise TypeError(f"snn must be a keras.Model from tfsnn.convert, got {type(snn).__name__}")
        nodes = graph_nodes(snn)
        layers = [l for l, _ in nodes if not isinstance(l, keras.layers.InputLayer)]
        spiking = [l for l in layers if getattr(l, "spiking_output", False)]
        encoders = [l.name for l in spiking if isinstance(l, ENCODERS)]
        if not encoders or not layers or not isinstance(layers[-1], RECEIVERS):
            raise ValueError(
                "snn: expected a model from tfsnn.convert (an encoder first, an output layer "
                f"last); got layers {[type(l).__name__ for l in layers]}")
        output = layers[-1]
        consumers = {}
        for layer, ins in nodes:
            for i in ins:
                consumers.setdefault(i, []).append(layer)
        spiking_names = {l.name for l in spiking}
        by_name = {l.name: l for l, _ in nodes}
        units, receivers, fanouts = {}, [], {}
        amp = int(getattr(by_name[encoders[0]], "amplitude", 1))
        for layer, ins in nodes:
            if isinstance(layer, ENCODERS):
                units[layer.name] = amp
            elif layer.name in spiking_names or isinstance(layer, RECEIVERS):
                units[layer.name] = 1
            elif ins and all(i in units for i in ins):  # parameter-free ops (SpikeOp)
                units[layer.name] = amp if all(units[i] == amp for i in ins) else 1
            if isinstance(layer, RECEIVERS):
                row = layer
                while row.name not in spiking_names and row is not output:
                    nxt = consumers.get(row.name, [])
                    if not nxt:
                        raise ValueError(f"snn: receiving layer {layer.name!r} feeds no neuron")
                    row = nxt[0]
                receivers.append((layer, list(ins), row.name))
                for i in ins:
                    fanouts[(layer.name, i)] = fanout(layer, _frame_shape(by_name[i]))
        return cls(snn, nodes, spiking, encoders, receivers, output, fanouts, units)

    @property
    def layer_names(self):
        """Spiking layers, in graph order (rows of the spike counts)."""
        return [l.name for l in self.spiking]

    @property
    def sop_row_names(self):
        """Rows that receive SOPs: spiking layers fed by a receiver, then the output."""
        rows = {r for _, _, r in self.receivers}
        return [n for n in self.layer_names if n in rows and n != self.output.name] + [
            self.output.name]

    @property
    def hidden_indices(self):
        """Indices into ``layer_names`` of the non-encoder spiking layers (``H`` of the stat files)."""
        return [i for i, n in enumerate(self.layer_names) if n not in self.encoders]

    @property
    def max_timesteps(self):
        """Steps for which every neuron's threshold table is exact."""
        lim = [l.num_levels for l in self.spiking if isinstance(l, SpikingConv2D)]
        lim += [l.max_steps for l in self.spiking if isinstance(l, SpikingNeuron)]
        return min(lim, default=np.iinfo(np.int32).max)

    @property
    def default_timesteps(self):
        return int(self.snn.get_layer(self.encoders[0]).timesteps)

    @property
    def amplitude(self):
        return int(getattr(self.snn.get_layer(self.encoders[0]), "amplitude", 1))

    def neurons(self):
        """``{row: neurons}``: spiking layers' output size, the output's units."""
        d = {l.name: int(np.prod(l.output.shape[2:])) for l in self.spiking}
        d[self.output.name] = int(self.output.units)
        return d

    def ann_macs(self):
        """``{row: MACs per image}`` of the ANN twin, exact fan-out (``rules.macs``): the
        encoder rows get the MACs of the analog synapse(s) on the image (the ALL_INT
        ``SpikeEncoder``'s own conv, or the twin's float first layer); every other receiver's
        MACs go to its row. Plus ``total`` and ``total_hidden_and_output``."""
        by_name = {l.name: l for l, _ in self.nodes}
        d = {n: 0 for n in self.layer_names if n in self.encoders}
        d.update({n: 0 for n in self.sop_row_names})
        enc = self.encoders[0]
        for layer, ins in self.nodes:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            analog = not hasattr(layer, "compact") or isinstance(layer, ENCODERS)
            if analog and (hasattr(layer, "kernel_size") or hasattr(layer, "units")):
                d[layer.name if isinstance(layer, ENCODERS) else enc] += macs(
                    layer, tuple(int(x) for x in by_name[ins[0]].output.shape[1:]))
        for layer, ins, row in self.receivers:
            d[row] += sum(int(self.fanouts[(layer.name, i)].sum()) for i in ins)
        d = {k: int(v) for k, v in d.items()}
        d["total"] = int(sum(d.values()))
        d["total_hidden_and_output"] = d["total"] - sum(d[e] for e in self.encoders if e in d)
        return d
