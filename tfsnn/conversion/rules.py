"""Conversion as a table of rules: one rule per layer kind of a ``quantize_model`` twin (or an
ALL_INT model), returning the spiking layer(s) with their integer weights and thresholds.

``RULES`` maps a twin layer class to its rule ``(ctx, layer, inputs) -> Edge``; ``convert``
walks the twin's graph and applies them. The exact fan-out used for SOP / MAC counting is
``fanout`` below, computed from the same geometry attributes the twin and the spiking layers
share (``kernel_size``, ``strides``, ``padding``, ``dilation_rate``, ``filters`` /
``depth_multiplier`` / ``units``); ``tfsnn.accounting`` and ``tfsnn.simulate`` use it.

Edges between spiking layers carry per-step increments whose running sum ``n`` relates to the
ANN value by ``ANN = n * scale``: ``scale = 2^-k`` for neuron outputs (the counts are ``2^k``
levels), ``2^-k / area`` after an average pool (folded into the next thresholds; the area must
be a power of two so that the twin's own float32 average is exact), unchanged by max pooling,
padding, reshapes, ``Add`` and ``Concatenate``. Neurons: integer membrane ``V`` = running sum of
their input increments, thresholds = the smallest ``V`` at which the Keras layer itself (float32)
reaches each level (``thresholds.neuron_thresholds``), so every neuron's converged count is
``2^k`` x its quantized-ANN activation and the SNN predicts what the twin predicts.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfsnn import quantizers as q
from tfsnn.conversion import thresholds as th
from tfsnn.conversion.quantize import graph_nodes, unsupported
from tfsnn.layers.neurons.integer import (IntegerSynapse, OutputAccumulator, OutputHead,
                                          RampEncoder, SpikeEncoder, SpikeOp, SpikingConv2D,
                                          SpikingNeuron)
from tfsnn.layers.quant import QuantActivation, QuantConv2D, QuantDense, QuantDepthwiseConv2D

SYNAPSES = (QuantConv2D, QuantDepthwiseConv2D, QuantDense)
# SNN layer kinds for the simulator and the accounting: encoders (analog in, spikes out) and
# receivers (spike events in, each costing ``fanout`` SOPs; MACs in the ANN twin).
ENCODERS = (SpikeEncoder, RampEncoder)
RECEIVERS = (SpikingConv2D, IntegerSynapse, OutputAccumulator, OutputHead)


@dataclasses.dataclass
class Edge:
    """An SNN tensor and what it carries: ``kind`` ``"image"`` (the analog input or the twin's
    float first synapse on it) or ``"spikes"`` (increments, ANN value = running sum x ``scale``)."""
    tensor: object
    kind: str
    scale: float = 1.0


# ----------------------------------------------------------------------------- fan-out

def fanout(layer, input_shape):
    """Exact fan-out ``[*input_shape]`` int64: synapses one input event reaches in ``layer``
    (conv / depthwise: output positions whose window covers it x output channels per input
    channel, border and dilation effects included; dense / output: units; zero weights count)."""
    shape = tuple(int(d) for d in input_shape)
    if isinstance(layer, (OutputHead, OutputAccumulator)) or (
            hasattr(layer, "units") and not hasattr(layer, "kernel_size")):
        return np.full(shape, int(layer.units), np.int64)
    if isinstance(layer, IntegerSynapse) and layer.op == "dense":
        return np.full(shape, int(layer.units), np.int64)
    if not hasattr(layer, "kernel_size"):
        raise ValueError(f"no fan-out rule for layer {layer.name!r} ({type(layer).__name__})")
    h, w, c = shape
    kh, kw = layer.kernel_size
    dil = tuple(getattr(layer, "dilation_rate", (1, 1)))
    x = tf.ones([1, h, w, 1], tf.float64)
    # the dilated kernel written out (ones on its taps, zeros between): CPU conv gradients do
    # not support dilation_rate > 1
    ker = np.zeros([dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1, 1, 1])
    ker[::dil[0], ::dil[1]] = 1.0
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(tf.nn.conv2d(x, tf.constant(ker), list(layer.strides),
                                           layer.padding.upper()))  # summed inside the tape
    fan = np.rint(tape.gradient(total, x).numpy()[0, :, :, 0]).astype(np.int64)
    depthwise = (isinstance(layer, QuantDepthwiseConv2D)
                 or (isinstance(layer, IntegerSynapse) and layer.op == "depthwise")
                 or isinstance(layer, keras.layers.DepthwiseConv2D))
    per = int(layer.depth_multiplier) if depthwise else int(layer.filters)
    return np.broadcast_to((fan * per)[:, :, None], (h, w, c)).copy()


def macs(layer, input_shape):
    """MACs of one image through a synaptic layer (padding zeros not multiplied)."""
    return int(fanout(layer, input_shape).sum())


# ----------------------------------------------------------------------------- rules

class _Ctx:
    def __init__(self, model, k, use_int, timesteps, num_levels):
        self.model, self.k, self.use_int = model, k, use_int
        self.timesteps, self.num_levels = timesteps, num_levels
        self.weights = []       # (snn layer, weights) set once the SNN model is built
        self.deferred = {}      # synapse name -> (layer, input edge): fused with its activation
        self.nodes = graph_nodes(model)
        self.consumers = {}
        for layer, ins in self.nodes:
            for i in ins:
                self.consumers.setdefault(i, []).append(layer)


def _only_consumer(ctx, layer):
    c = ctx.consumers.get(layer.name, [])
    return c[0] if len(c) == 1 else None


def _int_kernel(ctx, layer):
    kern = np.asarray(layer.quantized_kernel(), np.float32)
    if ctx.use_int:
        if not np.array_equal(kern, np.round(kern)):
            raise ValueError(
                f"tfsnn.convert: use_int=True needs integer-valued kernels in hidden layers, but "
                f"{layer.name!r} has non-integer weights (train with ternary weights, or convert "
                "with use_int=False)")
        return kern.astype(np.int32)
    return kern


def rule_synapse(ctx, layer, ins):
    (e,) = ins
    nxt = _only_consumer(ctx, layer)
    if e.kind == "image":
        if (isinstance(layer, QuantConv2D) and isinstance(e.tensor, keras.KerasTensor)
                and getattr(e, "is_input", False) and isinstance(nxt, QuantActivation)
                and isinstance(nxt.quantizer, q.FirstLayer) and nxt.bn is not None):
            ctx.deferred[layer.name] = (layer, e)   # -> SpikeEncoder (conv on the image)
            return Edge(None, "deferred")
        clone = type(layer).from_config(layer.get_config())
        out = clone(e.tensor)
        ctx.weights.append((clone, layer.get_weights()))
        return Edge(out, "image")
    if (isinstance(layer, QuantConv2D) and isinstance(nxt, QuantActivation) and nxt.bn is not None
            and not nxt.signed and isinstance(nxt.quantizer, q.KLevel)
            and e.scale == 2.0 ** -ctx.k):
        ctx.deferred[layer.name] = (layer, e)       # -> SpikingConv2D (conv + neuron)
        return Edge(None, "deferred")
    if not ctx.use_int:
        raise unsupported(layer, "float mode (use_int=False) converts the ALL_INT layout only "
                          "(conv -> BN -> ReLU chains); use integer mode")
    op = ("dense" if isinstance(layer, QuantDense) else
          "depthwise" if isinstance(layer, QuantDepthwiseConv2D) else "conv")
    kern = _int_kernel(ctx, layer)
    geo = {} if op == "dense" else dict(strides=layer.strides, padding=layer.padding,
                                        dilation_rate=layer.dilation_rate)
    syn = IntegerSynapse(op, kern.shape, use_int=True, name=layer.name, **geo)
    out = syn(e.tensor)
    ctx.weights.append((syn, [kern]))
    return Edge(out, "spikes", e.scale)


def rule_activation(ctx, layer, ins):
    (e,) = ins
    k, amp = ctx.k, 2 ** ctx.k
    if e.kind == "deferred":
        syn, src = ctx.deferred.pop(ctx.src_name)
        kern = np.asarray(syn.quantized_kernel(), np.float32)
        if isinstance(layer.quantizer, q.FirstLayer):
            thr, flip = th.encoder_thresholds(layer, layer.quantizer.levels)
            kern = np.where(flip, -kern, kern).astype(np.float32)
            enc = SpikeEncoder(syn.filters, syn.kernel_size, syn.strides, syn.padding,
                               levels=layer.quantizer.levels, amplitude=amp,
                               timesteps=ctx.timesteps, use_int=ctx.use_int, name=syn.name)
            out = enc(src.tensor)
            ctx.weights.append((enc, [kern, thr]))
            return Edge(out, "spikes", 2.0 ** -k)
        if tuple(syn.dilation_rate) != (1, 1):
            raise unsupported(syn, "internal: dilated conv must not be fused")
        flip = th._bn_params(layer)[0] < 0
        kern = np.where(flip, -kern, kern)
        if ctx.use_int:
            kern = _int_kernel(ctx, syn)
            kern = np.where(flip, -kern, kern).astype(np.int32)
            thr = th.int_thresholds(layer, k, ctx.num_levels, flip)
        else:
            thr = th.float_thresholds(layer, k, ctx.num_levels, flip)
        sc = SpikingConv2D(syn.filters, syn.kernel_size, syn.strides, syn.padding,
                           num_levels=ctx.num_levels, use_int=ctx.use_int, name=syn.name)
        out = sc(src.tensor)
        ctx.weights.append((sc, [kern, thr]))
        return Edge(out, "spikes", 2.0 ** -k)
    if e.kind == "image":
        if not isinstance(layer.quantizer, q.FirstLayer) or layer.bn is None:
            raise unsupported(layer, "the first activation needs BatchNorm and the FirstLayer "
                              "quantizer (quantize_model's first_layer)")
        thr, flip = th.encoder_thresholds(layer, layer.quantizer.levels)
        c = thr.shape[0]
        enc = RampEncoder(c, layer.quantizer.levels, amp, ctx.timesteps, use_int=ctx.use_int,
                          name=layer.name)
        out = enc(e.tensor)
        ctx.weights.append((enc, [thr, np.where(flip, -1.0, 1.0).astype(np.float32)]))
        return Edge(out, "spikes", 2.0 ** -k)
    if not isinstance(layer.quantizer, q.KLevel):
        raise unsupported(layer, f"expected a KLevel quantizer, got {layer.quantizer!r}")
    if not ctx.use_int:
        raise unsupported(layer, "float mode (use_int=False) converts the ALL_INT layout only")
    m = ctx.num_levels
    min_level = -m if layer.signed else 0
    n = 2 * m if layer.signed else m
    thr, sign = th.neuron_thresholds(layer, e.scale, n, min_level, len(e.tensor.shape) - 1)
    neu = SpikingNeuron(thr.shape[0], n, min_level, use_int=True, name=layer.name)
    out = neu(e.tensor)
    ctx.weights.append((neu, [thr, sign]))
    return Edge(out, "spikes", 2.0 ** -k)


def _pool_args(layer):
    return dict(pool_size=tuple(layer.pool_size), strides=tuple(layer.strides),
                padding=layer.padding)


def rule_maxpool(ctx, layer, ins):
    (e,) = ins
    if e.kind != "spikes":
        raise unsupported(layer, "max pooling must follow a ReLU (a spiking layer)")
    return Edge(SpikeOp("maxpool", _pool_args(layer), name=layer.name)(e.tensor), "spikes", e.scale)


def rule_avgpool(ctx, layer, ins):
    (e,) = ins
    area = int(np.prod(layer.pool_size))
    if e.kind != "spikes":
        raise unsupported(layer, "average pooling must follow a ReLU (a spiking layer)")
    if area & (area - 1):
        raise unsupported(layer, f"average pooling over {area} inputs before a spiking layer is "
                          "not exact in float32 (1/area rounds); use a power-of-two area, or "
                          "pool only in the head (before the output Dense)")
    h, w = (int(d) for d in e.tensor.shape[2:4])
    if layer.padding == "same" and any(n % s or p > s for n, s, p in
                                       zip((h, w), layer.strides, layer.pool_size)):
        raise unsupported(layer, "'same' average pooling with border windows divides by a "
                          "position-dependent count; use padding='valid'")
    out = SpikeOp("sumpool", _pool_args(layer), name=layer.name)(e.tensor)
    return Edge(out, "spikes", e.scale / area)


def rule_reshape(ctx, layer, ins):
    (e,) = ins
    if e.kind == "image":
        clone = type(layer).from_config(layer.get_config())
        return Edge(clone(e.tensor), "image")
    if isinstance(layer, keras.layers.ZeroPadding2D):
        op = SpikeOp("zeropad", {"padding": [list(p) for p in layer.padding]}, name=layer.name)
    else:
        op = SpikeOp("reshape", {"target_shape": [int(d) for d in layer.output.shape[1:]]},
                     name=layer.name)
    return Edge(op(e.tensor), "spikes", e.scale)


def rule_dropout(ctx, layer, ins):
    return ins[0]  # identity at inference


def rule_join(ctx, layer, ins):
    if any(e.kind != "spikes" for e in ins):
        raise unsupported(layer, "every input of a join must be spiking (quantized)")
    if len({e.scale for e in ins}) > 1:
        raise unsupported(layer, "its inputs have different scales (an average pool on one "
                          "branch only): the integer sum would not be exact")
    if isinstance(layer, keras.layers.Concatenate):
        op = SpikeOp("concat", {"axis": int(layer.axis) if layer.axis < 0 else
                                int(layer.axis) - len(layer.output.shape)}, name=layer.name)
    else:
        op = SpikeOp("add", name=layer.name)
    return Edge(op([e.tensor for e in ins]), "spikes", ins[0].scale)


RULES = {
    QuantConv2D: rule_synapse, QuantDepthwiseConv2D: rule_synapse, QuantDense: rule_synapse,
    QuantActivation: rule_activation,
    keras.layers.MaxPooling2D: rule_maxpool, keras.layers.AveragePooling2D: rule_avgpool,
    keras.layers.Flatten: rule_reshape, keras.layers.Reshape: rule_reshape,
    keras.layers.ZeroPadding2D: rule_reshape, keras.layers.Dropout: rule_dropout,
    keras.layers.Add: rule_join, keras.layers.Concatenate: rule_join,
}
HEAD_LAYERS = (QuantDense, QuantConv2D, QuantDepthwiseConv2D, keras.layers.Dense,
               keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization,
               keras.layers.GlobalAveragePooling2D, keras.layers.AveragePooling2D,
               keras.layers.MaxPooling2D, keras.layers.Flatten, keras.layers.Reshape,
               keras.layers.Dropout, keras.layers.Add, keras.layers.Concatenate,
               keras.layers.Activation, keras.layers.ZeroPadding2D)


def _rule_for(layer):
    for cls in type(layer).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


def build_snn(model, k, use_int, timesteps, num_levels, name):
    """Apply the rules to ``model``'s graph; returns the SNN ``keras.Model``."""
    ctx = _Ctx(model, k, use_int, timesteps, num_levels)
    # head: layers from which no QuantActivation is reachable
    reaches = {}
    for layer, _ in reversed(ctx.nodes):
        reaches[layer.name] = isinstance(layer, QuantActivation) or any(
            reaches[c.name] for c in ctx.consumers.get(layer.name, []))
    edges, head_nodes, inputs = {}, [], None
    for layer, ins in ctx.nodes:
        if isinstance(layer, keras.layers.InputLayer):
            inputs = keras.Input(tuple(layer.batch_shape[1:]), name="image")
            edges[layer.name] = Edge(inputs, "image")
            edges[layer.name].is_input = True
            continue
        if not reaches[layer.name]:
            if not isinstance(layer, HEAD_LAYERS):
                raise unsupported(layer)
            head_nodes.append((layer, ins))
            continue
        rule = _rule_for(layer)
        if rule is None:
            raise unsupported(layer)
        ctx.src_name = ins[0] if ins else None
        edges[layer.name] = rule(ctx, layer, [edges[i] for i in ins])
    if not head_nodes:
        raise ValueError("tfsnn.convert: the model needs an output head after its last "
                         "activation (e.g. Flatten -> Dense(classes))")
    out = _head(ctx, head_nodes, edges)
    snn = keras.Model(inputs, out, name=name)
    for layer, w in ctx.weights:
        layer.set_weights(w)
    return snn


def _head(ctx, head_nodes, edges):
    head_names = {l.name for l, _ in head_nodes}
    boundary = []
    for _, ins in head_nodes:
        for i in ins:
            if i not in head_names and i not in boundary:
                boundary.append(i)
    for b in boundary:
        if edges[b].kind != "spikes" or edges[b].scale != 2.0 ** -ctx.k:
            raise unsupported(next(l for l, _ in ctx.nodes if l.name == b),
                              "the output head must read spiking layers directly")
    layers = [l for l, _ in head_nodes]
    # the ALL_INT layout: Flatten -> QuantDense on one spiking layer -> OutputAccumulator
    if (len(boundary) == 1 and len(layers) == 2 and isinstance(layers[0], keras.layers.Flatten)
            and isinstance(layers[1], QuantDense)):
        acc = OutputAccumulator(layers[1].units, name=layers[1].name)
        out = acc(edges[boundary[0]].tensor)
        ctx.weights.append((acc, [np.asarray(layers[1].quantized_kernel(), np.float32)]))
        return out
    tensors = {b: keras.Input(tuple(edges[b].tensor.shape[2:]), name=f"{b}_levels")
               for b in boundary}
    head_inputs = [tensors[b] for b in boundary]
    clones = []
    for layer, ins in head_nodes:
        clone = type(layer).from_config(layer.get_config())
        x = [tensors[i] for i in ins]
        tensors[layer.name] = clone(x if len(x) > 1 or isinstance(
            layer, (keras.layers.Add, keras.layers.Concatenate)) else x[0])
        clones.append((clone, layer.get_weights()))
    hm = keras.Model(head_inputs if len(head_inputs) > 1 else head_inputs[0],
                     tensors[head_nodes[-1][0].name], name="head")
    for c, w in clones:
        c.set_weights(w)
    oh = OutputHead(hm, amplitude=2 ** ctx.k, name="output")
    xs = [edges[b].tensor for b in boundary]
    return oh(xs if len(xs) > 1 else xs[0])
