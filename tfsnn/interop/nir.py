"""NIR (Neuromorphic Intermediate Representation) export and import of directly trained SNNs.

Needs ``pip install tfsnn[nir]`` (the ``nir`` package); ``nir`` is imported on first use only.

* ``to_nir(model, dt=1.0, readout=True, exact=True) -> nir.NIRGraph`` and
  ``save_nir(model, path, ...)`` (the NIR HDF5 file): a chain of tfsnn layers (below) from the
  encoder's output to the readout.
* ``from_nir(graph_or_path, dt=None, dtype=None) -> keras.Model``: the same chain as tfsnn
  layers; the model takes the per-step input of the graph's ``Input`` node as a sequence
  ``[B, T, H, W, C]`` / ``[B, T, N]`` (spikes or currents; NIR has no encoder).

Layers (export -> NIR node -> import):

=========================================== ================================== ==================
tfsnn / Keras layer                         NIR node                           back in tfsnn
=========================================== ================================== ==================
``TimeFolded(Conv2D)`` (linear activation)  ``Conv2d`` (bias 0 if none)        ``TimeFolded(Conv2D)``
``Dense`` on ``[B, T, F]``                  ``Linear`` / ``Affine`` (bias)     ``Dense``
``TimeFolded(AveragePooling2D)`` (valid)    ``AvgPool2d``                      the same
(none)                                      ``SumPool2d``                      ``TimeFolded(DepthwiseConv2D)``, ones
``TimeFolded(Flatten)``                     ``Flatten`` (``start_dim=0``)      ``TimeFolded(Flatten)``
``LIF``/``LeeNeuron``/... leak < 1          ``LIF``                            ``LIF(reset="zero")``
``IF`` / any neuron with leak 1             ``IF``                             ``IF(reset="zero")``
``CuBaLIF``                                 ``CubaLIF``                        ``CuBaLIF(reset="zero")``
``SumReadout``                              ``I`` (integrator)                 ``SumReadout``
``LeakyMeanReadout(leak)``                  ``LI`` (leaky integrator)          ``LeakyMeanReadout``
encoder, ``TimeConstantDropout``, Dropout   (not exported; input = encoder's output)
=========================================== ================================== ==================

Shapes and layouts: NIR shapes have no batch and no time axis and are channels-first
(``[C, H, W]``); Keras' are channels-last. Conv kernels ``[kh, kw, Cin, Cout]`` <->
``[Cout, Cin, kh, kw]``; a ``Flatten`` of ``[H, W, C]`` (Keras order) becomes NIR's ``[C, H, W]``
order, so the columns of the following ``Linear`` (and per-neuron parameters in between) are
permuted accordingly. ``padding="same"`` is exported as the symmetric integer padding it equals
(refused when Keras would pad asymmetrically, e.g. even kernels or some strides).

Neuron mapping (``dt``: the NIR time step of one tfsnn step). NIR's neurons are ODEs:
``LIF``: ``tau dv/dt = (v_leak - v) + r I``, spike ``z = 1[v > v_threshold]`` (strict), then
``v = v_reset``; ``IF``: ``dv/dt = r I``; ``CubaLIF``: ``tau_syn dI/dt = -I + w_in S`` before
the ``LIF`` membrane; ``I``/``LI``: the integrator / leaky integrator without spikes. Both
snnTorch's and Norse's importers discretise them with forward Euler:
``v(t) = (1 - dt/tau) v(t-1) + (dt/tau) (v_leak + r I(t))``. A tfsnn neuron with per-step
``leak`` (``U(t) = leak S(t-1) + I(t)``, input undecayed) is therefore exported as

* ``tau = dt / (1 - leak)``, ``r = tau / dt`` (the input enters with gain ``r dt / tau = 1``),
  ``v_leak = 0``, ``v_threshold = theta``, ``v_reset = 0`` (``leak = 1``: ``IF`` with ``r = 1/dt``;
  ``CubaLIF``: also ``tau_syn = dt / (1 - current_decay)``, ``w_in = tau_syn / dt``);
* import inverts it: ``leak = 1 - dt / tau`` (Euler, not ``exp(-dt/tau)``), and requires
  ``v_leak = 0``, ``v_reset = 0`` and input gain 1 (``r dt / tau = 1``), else a clear error.

This is snnTorch's own convention (``export_nir``: ``tau = dt/(1 - beta)``, ``r = tau/dt``;
``import_nir``: ``beta = 1 - dt/tau``, ``Leaky(reset_mechanism="zero", reset_delay=False)``),
with snnTorch's fixed ``dt = 1e-4``: pass ``dt=1e-4`` to exchange graphs with snnTorch (its
graphs then import with ``from_nir(graph, dt=1e-4)``). snnTorch's importer maps ``nir.IF`` to
``Leaky(beta=0.9)`` with subtractive reset (not an IF; export leaky neurons to reach it) and
has no ``I`` / ``LI`` / ``SumPool2d`` (export with ``readout=False``). Norse's importer takes
``r = 1`` (input scaled by ``dt/tau``), so its graphs differ from these by that input gain.

Conventions that match exactly: the spike is strict (``U > theta`` in tfsnn, ``v > v_threshold``
in NIR and ``mem - threshold > 0`` in snnTorch); the spike of step ``t`` is read from the
membrane after step ``t``'s input (tfsnn's standard ordering = snnTorch's ``reset_delay=False``);
the reset to zero (tfsnn ``reset="zero"``, NIR ``v_reset = 0``) happens after the spike; biases
are part of the synapse node (``Affine`` / ``Conv2d``'s ``bias``) and are added every step.

What NIR cannot express (``exact=True``, the default, refuses the export with the layer and the
reason; ``exact=False`` exports the nearest NIR neuron and warns): ``reset="subtract"``
(``IF``, ``RathiNeuron``'s default: NIR's neurons reset to ``v_reset``), ``reset="none"``, and
``fire_before_integrate`` (Rathi's ordering: tfsnn's spike train is the NIR neuron's delayed by
one step). Every exported node keeps the tfsnn layer's config in its metadata
(``"tfsnn_layer"``, JSON), so ``from_nir`` rebuilds exactly the original layer (a Rathi neuron
exported with ``exact=False`` comes back as a Rathi neuron); other consumers read the NIR
equations. The readout's last state equals tfsnn's logits up to a positive factor: ``I`` gives
``sum_t x(t)`` (= ``SumReadout``; ``divide_by_time``: logits x T), ``LI`` gives
``sum_t leak^(T-1-t) x(t)`` (= ``LeakyMeanReadout``'s logits x T / leak): the class is the same.

The integer ALL_INT SNN (``tfsnn.convert(..., use_int=True)``) is refused: its signed
dynamic-threshold neuron emits -1 spikes and its threshold moves with the neuron's spike count
(a per-channel table), and no NIR primitive has signed spikes or count-dependent thresholds.
"""
import json
import warnings

import keras
import numpy as np

from tfsnn.layers import encoders
from tfsnn.layers.neurons import current as current_mod
from tfsnn.layers.neurons import integer as integer_mod
from tfsnn.layers.neurons import lif as lif_mod
from tfsnn.layers.readouts import LeakyMeanReadout, SumReadout
from tfsnn.layers.sequence import TimeConstantDropout, TimeFolded

EXPORT_KINDS = ("TimeFolded(Conv2D)", "Dense", "TimeFolded(AveragePooling2D)",
                "TimeFolded(Flatten)", "LIF", "IF", "RathiNeuron", "LeeNeuron", "CuBaLIF",
                "SumReadout", "LeakyMeanReadout", "encoders / dropout (skipped)")
IMPORT_KINDS = ("Input", "Output", "Conv2d", "Linear", "Affine", "AvgPool2d", "SumPool2d",
                "Flatten", "LIF", "IF", "CubaLIF", "I", "LI")
META_KEY = "tfsnn_layer"
GRAPH_DT_KEY = "tfsnn_dt"


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("tfsnn.interop.nir needs the 'nir' package: "
                          "pip install tfsnn[nir] (or pip install nir)") from e
    return nir


class NIRExportError(ValueError):
    """A model (layer) that NIR cannot represent; the message names the layer and why."""


class NIRImportError(ValueError):
    """A NIR graph (node) that tfsnn cannot import; the message names the node and why."""


# ============================================================================ layouts

def _to_nir_shape(frame):
    """Keras frame ``(H, W, C)`` / ``(N,)`` -> NIR ``(C, H, W)`` / ``(N,)``."""
    frame = tuple(int(d) for d in frame)
    return (frame[-1],) + frame[:-1] if len(frame) == 3 else frame


def _to_keras_shape(shape):
    shape = tuple(int(d) for d in shape)
    return shape[1:] + (shape[0],) if len(shape) == 3 else shape


def _flatten_index(frame):
    """For NIR's flat (C, H, W) position j, Keras' flat (H, W, C) position ``idx[j]``."""
    h, w, c = frame
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()


def _param_to_nir(value, frame, perm):
    """A layer parameter (scalar or per-channel ``[C]``) as a NIR array of the frame's shape."""
    v = np.asarray(value, dtype=np.float64)
    frame = tuple(int(d) for d in frame)
    full = np.broadcast_to(v, frame).copy()  # Keras layout; per-channel = last axis
    if len(frame) == 3:
        return full.transpose(2, 0, 1).copy()
    if perm is not None:
        return full[perm]
    return full


def _param_from_nir(arr, nir_shape, perm, what, name):
    """A NIR parameter array -> a Python float (uniform) or a per-channel ``[C]`` array."""
    a = np.broadcast_to(np.asarray(arr, dtype=np.float64), nir_shape)
    if a.size and np.all(a == a.flat[0]):
        return float(a.flat[0])
    if len(nir_shape) == 3:  # [C, H, W]: per channel if constant over H, W
        per_c = a[:, :1, :1]
        if np.all(a == per_c):
            return per_c.ravel().copy()
    elif len(nir_shape) == 1:
        if perm is None:
            return a.copy()
        out = np.empty_like(a)
        out[perm] = a
        return out
    raise NIRImportError(f"node {name!r}: {what} varies within a channel; tfsnn neurons take one "
                         "value per layer or per channel (last axis)")


# ============================================================================ export

def _inner(layer):
    return layer.layer if isinstance(layer, (TimeFolded, keras.layers.TimeDistributed)) else layer


def _meta(layer):
    return {META_KEY: json.dumps(keras.saving.serialize_keras_object(layer))}


def _refuse_integer(layer):
    raise NIRExportError(
        f"to_nir: layer {layer.name!r} ({type(layer).__name__}) belongs to the integer ALL_INT "
        "SNN. Its signed dynamic-threshold neuron emits -1 as well as +1 spikes and its "
        "threshold changes with time (it moves with the neuron's net spike count through a "
        "per-channel threshold table); no NIR primitive (LIF, IF, CubaLIF, Threshold) has "
        "signed spikes or count-dependent thresholds, so this network cannot be written as NIR. "
        "Export a directly trained SNN (tfsnn.models.spiking) instead.")


def _same_padding(n, k, s, d, name):
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    if total % 2:
        raise NIRExportError(
            f"to_nir: layer {name!r}: padding='same' pads {total} pixels on an axis of size {n} "
            f"(kernel {k}, stride {s}, dilation {d}), one more at the end than at the start; "
            "NIR's Conv2d has symmetric padding only. Use padding='valid' or an odd kernel with "
            "stride 1")
    return total // 2


def _neuron_node(nir, layer, frame, perm, dt, exact, inexact):
    name = layer.name
    if isinstance(layer, current_mod.CuBaLIF):
        reset, fbi = layer.reset, False
        leak = layer.decay_weights["leak"].numpy() if "leak" in layer.decay_weights else layer.leak
        alpha = (layer.decay_weights["current_decay"].numpy()
                 if "current_decay" in layer.decay_weights else layer.current_decay)
    else:
        p = layer.params
        reset, fbi = p.reset, p.fire_before_integrate
        leak = layer.leak_weight.numpy() if layer.leak_weight is not None else p.leak
        alpha = None
    theta = layer.theta.numpy()
    problems = []
    if reset == "subtract":
        problems.append("reset='subtract' (NIR's LIF / IF / CubaLIF reset the membrane to "
                        "v_reset; a subtractive reset has no NIR primitive)")
    elif reset == "none":
        problems.append("reset='none' (NIR's spiking neurons always reset to v_reset)")
    if fbi:
        problems.append("fire_before_integrate=True (the spike of step t is read before step "
                        "t's input: the spike train is the NIR neuron's delayed by one step)")
    if problems:
        msg = (f"to_nir: neuron {name!r} ({type(layer).__name__}) has " + "; ".join(problems)
               + ". Pass exact=False to export the nearest NIR neuron (reset to zero, fire "
               "after the input) with the tfsnn layer in the node's metadata")
        if exact:
            raise NIRExportError(msg)
        inexact.append(f"{name!r} ({type(layer).__name__}): " + "; ".join(problems))
    th = _param_to_nir(theta, frame, perm)
    zeros = np.zeros_like(th)
    lk = _param_to_nir(leak, frame, perm)
    if alpha is not None:
        al = _param_to_nir(alpha, frame, perm)
        if np.any(lk >= 1.0) or np.any(al >= 1.0):
            raise NIRExportError(f"to_nir: neuron {name!r} (CuBaLIF): NIR's CubaLIF needs "
                                 "leak < 1 and current_decay < 1 (finite time constants)")
        tau_mem, tau_syn = dt / (1.0 - lk), dt / (1.0 - al)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=zeros,
                           v_threshold=th, v_reset=zeros.copy(), w_in=tau_syn / dt,
                           metadata=_meta(layer))
    if np.all(lk == 1.0):
        return nir.IF(r=np.full_like(th, 1.0 / dt), v_threshold=th, v_reset=zeros,
                      metadata=_meta(layer))
    if np.any(lk >= 1.0):
        raise NIRExportError(f"to_nir: neuron {name!r}: per-channel leak mixes 1 (IF) and < 1 "
                             "(LIF); NIR's LIF needs a finite tau")
    tau = dt / (1.0 - lk)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=zeros, v_threshold=th, v_reset=zeros.copy(),
                   metadata=_meta(layer))


def _chain(model):
    """The model's layers from input to output as a list, checking it is a simple chain."""
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    prev = model.inputs[0] if len(model.inputs) == 1 else None
    if prev is None:
        raise NIRExportError(f"to_nir: model {model.name!r} has {len(model.inputs)} inputs; "
                             "NIR export needs one input")
    for layer in layers:
        try:
            inp = layer.input
        except (AttributeError, ValueError) as e:
            raise NIRExportError(f"to_nir: layer {layer.name!r} is called more than once; "
                                 "NIR export needs a chain of layers") from e
        if isinstance(inp, (list, tuple)) or inp is not prev:
            raise NIRExportError(
                f"to_nir: layer {layer.name!r} ({type(layer).__name__}) does not take the "
                "previous layer's output alone; to_nir exports chains of layers (no residual "
                "Add / Concatenate branches)")
        prev = layer.output
    return layers


def to_nir(model, dt=1.0, readout=True, exact=True):
    """A ``nir.NIRGraph`` of a directly trained tfsnn SNN (module docstring for the mapping).

    ``model``: a Keras model whose layers form a chain ``[encoder] -> (conv | dense | pool |
    flatten | neuron | dropout)* -> [readout]``, e.g. ``tfsnn.models.spiking.snn(...)``.
    ``dt`` (> 0): the NIR time of one step (snnTorch's importer assumes ``1e-4``).
    ``readout``: export the readout as NIR ``I`` / ``LI`` (False: the graph ends at the layer
    before it, e.g. the output ``Dense``: per-step logit currents). ``exact``: refuse neurons
    NIR cannot express exactly (subtractive / no reset, fire-before-integrate); False exports
    them as the nearest NIR neuron with a warning. Raises ``NIRExportError`` naming the layer.
    """
    nir = _nir()
    if not isinstance(model, keras.Model):
        raise TypeError(f"to_nir: model must be a keras.Model, got {type(model).__name__}")
    dt = float(dt)
    if not dt > 0:
        raise ValueError(f"to_nir: dt must be > 0, got {dt!r}")
    layers = _chain(model)
    for layer in layers:
        if type(layer).__module__ == integer_mod.__name__:
            _refuse_integer(layer)
    encoder_classes = (encoders.DirectEncoder, encoders.PoissonEncoder)
    graph_meta = {GRAPH_DT_KEY: dt}
    if layers and isinstance(layers[0], encoder_classes):
        graph_meta["tfsnn_encoder"] = json.dumps(keras.saving.serialize_keras_object(layers[0]))
        start = layers[0].output
        layers = layers[1:]
    else:
        start = model.inputs[0]
    if len(start.shape) < 3:
        raise NIRExportError(f"to_nir: the network's input must be a sequence [B, T, ...], "
                             f"got shape {tuple(start.shape)}")
    frame = tuple(start.shape[2:])
    if any(d is None for d in frame):
        raise NIRExportError(f"to_nir: the input frame shape must be known, got {frame}")
    nodes = {"input": nir.Input(input_type=np.array(_to_nir_shape(frame)))}
    edges, last, perm, inexact = [], "input", None, []

    def add(name, node):
        nonlocal last
        while name in ("input", "output") or name in nodes:  # the graph's I/O node names
            name += "_"
        nodes[name] = node
        edges.append((last, name))
        last = name

    for i, layer in enumerate(layers):
        inner = _inner(layer)
        out_frame = tuple(layer.output.shape[2:]) if len(layer.output.shape) > 2 else None
        is_readout = isinstance(layer, (SumReadout, LeakyMeanReadout))
        if isinstance(layer, (TimeConstantDropout, keras.layers.Dropout)):
            continue
        if is_readout:
            if i != len(layers) - 1:
                raise NIRExportError(f"to_nir: readout {layer.name!r} must be the last layer")
            if not readout:
                break
            if len(frame) != 1:
                raise NIRExportError(f"to_nir: readout {layer.name!r} needs [B, T, N] input")
            n = frame[0]
            lk = 1.0 if isinstance(layer, SumReadout) else layer.leak
            if lk == 1.0:
                add(layer.name, nir.I(r=np.full(n, 1.0 / dt), metadata=_meta(layer)))
            else:
                tau = np.full(n, dt / (1.0 - lk))
                add(layer.name, nir.LI(tau=tau, r=tau / dt, v_leak=np.zeros(n),
                                       metadata=_meta(layer)))
            continue
        if isinstance(layer, (lif_mod.LIF, current_mod.CuBaLIF)):
            add(layer.name, _neuron_node(nir, layer, frame, perm, dt, exact, inexact))
            continue
        wrapped = isinstance(layer, (TimeFolded, keras.layers.TimeDistributed))
        if isinstance(inner, keras.layers.Conv2D) and wrapped and not isinstance(
                inner, (keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D)):
            if inner.data_format != "channels_last" or inner.get_config()["activation"] != "linear":
                raise NIRExportError(f"to_nir: conv {layer.name!r} must be channels_last with a "
                                     "linear activation (the neuron is a separate layer)")
            kh, kw = inner.kernel_size
            (sh, sw), (dh, dw) = inner.strides, inner.dilation_rate
            if inner.padding == "same":
                pad = (_same_padding(frame[0], kh, sh, dh, layer.name),
                       _same_padding(frame[1], kw, sw, dw, layer.name))
            else:
                pad = (0, 0)
            w = np.transpose(inner.kernel.numpy(), (3, 2, 0, 1))
            b = inner.bias.numpy() if inner.use_bias else np.zeros(w.shape[0], w.dtype)
            add(layer.name, nir.Conv2d(input_shape=tuple(frame[:2]), weight=w, stride=(sh, sw),
                                       padding=pad, dilation=(dh, dw), groups=inner.groups,
                                       bias=b, metadata=_meta(inner)))
            frame = out_frame
            continue
        if isinstance(inner, keras.layers.AveragePooling2D) and wrapped:
            if inner.padding != "valid" or inner.data_format != "channels_last":
                raise NIRExportError(f"to_nir: pooling {layer.name!r} must be channels_last "
                                     "with padding='valid' (NIR's AvgPool2d counts padded zeros)")
            add(layer.name, nir.AvgPool2d(kernel_size=np.array(inner.pool_size),
                                          stride=np.array(inner.strides),
                                          padding=np.zeros(2, int), metadata=_meta(inner)))
            frame = out_frame
            continue
        if isinstance(inner, keras.layers.Flatten) and wrapped:
            if len(frame) == 3:
                perm = _flatten_index(frame)
            add(layer.name, nir.Flatten(input_type={"input": np.array(_to_nir_shape(frame))},
                                        start_dim=0, end_dim=-1, metadata=_meta(inner)))
            frame = out_frame
            continue
        if isinstance(inner, keras.layers.Dense):
            if inner.get_config()["activation"] != "linear" or len(frame) != 1:
                raise NIRExportError(f"to_nir: dense {layer.name!r} must have a linear "
                                     "activation and [B, T, N] input")
            k = inner.kernel.numpy()
            w = (k[perm] if perm is not None else k).T.copy()
            meta = _meta(inner)
            if inner.use_bias:
                add(layer.name, nir.Affine(weight=w, bias=inner.bias.numpy(), metadata=meta))
            else:
                add(layer.name, nir.Linear(weight=w, metadata=meta))
            frame, perm = out_frame, None
            continue
        raise NIRExportError(
            f"to_nir: layer {layer.name!r} ({type(layer).__name__}"
            f"{'(' + type(inner).__name__ + ')' if wrapped else ''}) has no NIR export; "
            f"supported: {', '.join(EXPORT_KINDS)}")
    if inexact:
        warnings.warn("to_nir(exact=False): exported as the nearest NIR neuron (reset to "
                      "v_reset = 0, fire after the input), the tfsnn layer kept in the node's "
                      "metadata for from_nir; other NIR consumers will not reproduce these "
                      "neurons' spikes: " + " | ".join(inexact), stacklevel=2)
    nodes["output"] = nir.Output(output_type=np.array(_to_nir_shape(frame)))
    edges.append((last, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_meta)


def save_nir(model, path, dt=1.0, readout=True, exact=True):
    """Write ``to_nir(model, ...)`` to the NIR HDF5 file ``path``; returns the graph."""
    graph = to_nir(model, dt=dt, readout=readout, exact=exact)
    _nir().write(str(path), graph)
    return graph


# ============================================================================ import

def _chain_nodes(graph):
    """Node names from the Input to the Output node, checking the graph is a chain."""
    nir = _nir()
    ins = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(ins) != 1:
        raise NIRImportError(f"from_nir: the graph must have one Input node, found {ins}")
    succ = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    order, name, seen = [], ins[0], set()
    while True:
        if name in seen:
            raise NIRImportError(f"from_nir: node {name!r} is on a cycle (recurrent graphs are "
                                 "not supported)")
        seen.add(name)
        order.append(name)
        nxt = succ.get(name, [])
        if isinstance(graph.nodes[name], nir.Output):
            return order
        if len(nxt) != 1:
            raise NIRImportError(f"from_nir: node {name!r} has {len(nxt)} successors; from_nir "
                                 "imports chain graphs (one path from Input to Output)")
        name = nxt[0]
        if name not in graph.nodes:
            raise NIRImportError(f"from_nir: edge to unknown node {name!r}")


def _int_pair(v, what, name):
    try:
        a = np.broadcast_to(np.asarray(v).astype(int), (2,))
    except (TypeError, ValueError) as e:
        raise NIRImportError(f"from_nir: node {name!r}: {what} must be an int or a pair of "
                             f"ints, got {v!r}") from e
    return (int(a[0]), int(a[1]))


def _meta_layer(node, expected, name):
    cfg = (node.metadata or {}).get(META_KEY)
    if cfg is None:
        return None
    if isinstance(cfg, bytes):
        cfg = cfg.decode()
    layer = keras.saving.deserialize_keras_object(json.loads(str(cfg)))
    if not isinstance(layer, expected):
        return None
    return layer


def _check_close(a, b, what, name):
    if not np.allclose(a, b, rtol=1e-6, atol=0.0):
        raise NIRImportError(f"from_nir: node {name!r}: {what}")


def _neuron_from_nir(nir, node, name, nir_shape, perm, dt, dtype):
    """(layer, {weight name: value}) for a LIF / IF / CubaLIF node."""
    th = _param_from_nir(node.v_threshold, nir_shape, perm, "v_threshold", name)
    if not np.allclose(np.asarray(node.v_reset, float), 0.0, rtol=0, atol=0):
        raise NIRImportError(f"from_nir: node {name!r}: v_reset must be 0 (tfsnn's reset to "
                             f"zero), got {np.unique(node.v_reset)[:5]}")
    if isinstance(node, nir.IF):
        _check_close(np.asarray(node.r, float) * dt, 1.0, "IF input gain r*dt must be 1 "
                     f"(r = 1/dt = {1 / dt}); pass the graph's dt", name)
        leak, alpha = 1.0, None
    else:
        if not np.allclose(np.asarray(node.v_leak, float), 0.0, rtol=0, atol=0):
            raise NIRImportError(f"from_nir: node {name!r}: v_leak must be 0 (tfsnn neurons "
                                 "rest at 0)")
        tau = np.asarray(node.tau_mem if isinstance(node, nir.CubaLIF) else node.tau, float)
        _check_close(np.asarray(node.r, float) * dt / tau, 1.0,
                     f"input gain r*dt/tau must be 1 (r = tau/dt); got r*dt/tau = "
                     f"{np.unique(np.asarray(node.r, float) * dt / tau)[:3]} with dt={dt} "
                     "(pass the graph's dt: snnTorch uses 1e-4)", name)
        leak = _param_from_nir(1.0 - dt / tau, nir_shape, perm, "tau", name)
        alpha = None
        if isinstance(node, nir.CubaLIF):
            tau_syn = np.asarray(node.tau_syn, float)
            _check_close(np.asarray(node.w_in, float) * dt / tau_syn, 1.0,
                         "CubaLIF input gain w_in*dt/tau_syn must be 1 (w_in = tau_syn/dt)", name)
            alpha = _param_from_nir(1.0 - dt / tau_syn, nir_shape, perm, "tau_syn", name)
    per_channel = any(isinstance(v, np.ndarray) for v in (th, leak, alpha))
    kw = dict(name=name) if dtype is None else dict(name=name, dtype=dtype)
    layer = _meta_layer(node, (lif_mod.LIF, current_mod.CuBaLIF), name)
    if layer is not None and not _meta_agrees(layer, per_channel, leak, alpha):
        layer = None  # the NIR parameters were changed after export: they win
    if layer is not None:
        layer = type(layer).from_config({**layer.get_config(), **kw})
    else:
        scalar = lambda v: 1.0 if isinstance(v, np.ndarray) else v  # noqa: E731
        if isinstance(node, nir.CubaLIF):
            layer = current_mod.CuBaLIF(scalar(th), leak=scalar(leak),
                                        current_decay=scalar(alpha), reset="zero",
                                        per_channel=per_channel, **kw)
        elif isinstance(leak, float) and leak == 1.0:
            layer = lif_mod.IF(scalar(th), reset="zero", per_channel=per_channel, **kw)
        else:
            layer = lif_mod.LIF(scalar(th), leak=scalar(leak), reset="zero",
                                per_channel=per_channel, **kw)
    values = {"theta": th, "leak": leak, "current_decay": alpha}
    return layer, values


def _meta_agrees(layer, per_channel, leak, alpha):
    """Whether a tfsnn layer from node metadata has the node's leak / decay (Euler-mapped)."""
    if bool(layer.per_channel) != per_channel:
        return False
    if per_channel:
        return True  # the weights are written from the NIR arrays
    decays = [(layer.leak, leak)]
    if isinstance(layer, current_mod.CuBaLIF):
        decays.append((layer.current_decay, alpha))
    return all(b is not None and abs(a - b) <= 1e-9 for a, b in decays)


def _set_neuron_values(layer, values):
    """Write the NIR threshold / decays into the built layer's weights."""
    layer.theta.assign(np.broadcast_to(values["theta"], layer.theta.shape))
    if isinstance(layer, current_mod.CuBaLIF):
        for n, w in layer.decay_weights.items():
            w.assign(np.broadcast_to(values[n], w.shape))
    elif layer.leak_weight is not None:
        layer.leak_weight.assign(np.broadcast_to(values["leak"], layer.leak_weight.shape))


def from_nir(graph_or_path, dt=None, dtype=None):
    """A tfsnn Keras model of the NIR graph (``nir.NIRGraph`` or a path to a NIR file).

    The graph must be a chain ``Input -> ... -> Output`` of the node kinds in
    ``IMPORT_KINDS``; any other node raises ``NIRImportError`` naming it. ``dt``: the NIR time
    of one step (default: the graph's ``"tfsnn_dt"`` metadata if tfsnn wrote it, else 1.0; use
    1e-4 for snnTorch graphs). ``dtype``: the layers' dtype (default: Keras' float policy).
    The model maps the Input node's per-step values as a sequence ``[B, T, H, W, C]`` (for a
    ``[C, H, W]`` input) or ``[B, T, N]`` to the Output node's values ``[B, T, ...]``, or to
    logits ``[B, ...]`` when the graph ends with an ``I`` / ``LI`` readout.
    """
    nir = _nir()
    graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.read(str(graph_or_path))
    if dt is None:
        dt = float(np.asarray((graph.metadata or {}).get(GRAPH_DT_KEY, 1.0)))
    dt = float(dt)
    if not dt > 0:
        raise ValueError(f"from_nir: dt must be > 0, got {dt!r}")
    order = _chain_nodes(graph)
    in_shape = tuple(int(d) for d in np.asarray(
        next(iter(graph.nodes[order[0]].input_type.values()))).ravel())
    x = inputs = keras.Input((None, *_to_keras_shape(in_shape)), name="nir_input", dtype=dtype)
    nir_shape, perm = in_shape, None
    kw = {} if dtype is None else {"dtype": dtype}
    for i, name in enumerate(order[1:-1], start=1):
        node = graph.nodes[name]
        frame = tuple(x.shape[2:])
        if isinstance(node, nir.Conv2d):
            w = np.asarray(node.weight)
            if w.ndim != 4 or len(frame) != 3:
                raise NIRImportError(f"from_nir: node {name!r}: Conv2d needs a [C, H, W] input "
                                     f"and a 4-D weight, got input {nir_shape}, weight {w.shape}")
            stride = _int_pair(node.stride, "stride", name)
            dil = _int_pair(node.dilation, "dilation", name)
            kh, kw_ = w.shape[2:]
            if isinstance(node.padding, str):
                padding, pad = node.padding, (0, 0)
            else:
                pad, padding = _int_pair(node.padding, "padding", name), "valid"
                same = tuple((k - 1) * d // 2 for k, d in zip((kh, kw_), dil))
                if pad != (0, 0) and pad == same and stride == (1, 1) and kh % 2 and kw_ % 2:
                    padding, pad = "same", (0, 0)
            if pad != (0, 0):
                x = TimeFolded(keras.layers.ZeroPadding2D(pad, name=name + "_pad_inner"),
                               name=name + "_pad", **kw)(x)
            bias = np.asarray(node.bias) if node.bias is not None else np.zeros(w.shape[0])
            use_bias = bool(np.any(bias != 0))
            conv = keras.layers.Conv2D(w.shape[0], (kh, kw_), strides=stride, padding=padding,
                                       dilation_rate=dil, groups=int(node.groups),
                                       use_bias=use_bias, name=name + "_conv", **kw)
            x = TimeFolded(conv, name=name, **kw)(x)
            conv.kernel.assign(np.transpose(w, (2, 3, 1, 0)))
            if use_bias:
                conv.bias.assign(bias)
        elif isinstance(node, (nir.Linear, nir.Affine)):
            w = np.asarray(node.weight)
            if len(frame) != 1 or w.ndim != 2 or w.shape[1] != frame[0]:
                raise NIRImportError(f"from_nir: node {name!r}: weight {w.shape} does not fit "
                                     f"the input of shape {nir_shape} (needs a flat input)")
            bias = np.asarray(node.bias) if isinstance(node, nir.Affine) else None
            dense = keras.layers.Dense(w.shape[0], use_bias=bias is not None, name=name, **kw)
            x = dense(x)
            k = np.empty((w.shape[1], w.shape[0]), w.dtype)
            if perm is not None:
                k[perm] = w.T
            else:
                k[...] = w.T
            dense.kernel.assign(k)
            if bias is not None:
                dense.bias.assign(bias)
            perm = None
        elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            if len(frame) != 3:
                raise NIRImportError(f"from_nir: node {name!r}: pooling needs a [C, H, W] input")
            if not np.all(np.asarray(node.padding) == 0):
                raise NIRImportError(f"from_nir: node {name!r}: pooling padding must be 0, got "
                                     f"{node.padding}")
            size = _int_pair(node.kernel_size, "kernel_size", name)
            stride = _int_pair(node.stride, "stride", name)
            if isinstance(node, nir.AvgPool2d):
                x = TimeFolded(keras.layers.AveragePooling2D(size, stride, name=name + "_inner"),
                               name=name, **kw)(x)
            else:
                pool = keras.layers.DepthwiseConv2D(size, stride, use_bias=False,
                                                    name=name + "_inner", **kw)
                x = TimeFolded(pool, name=name, **kw)(x)
                pool.kernel.assign(np.ones(pool.kernel.shape))
        elif isinstance(node, nir.Flatten):
            if len(frame) == 3:
                perm = _flatten_index(frame)
            elif len(frame) != 1:
                raise NIRImportError(f"from_nir: node {name!r}: Flatten of a rank-{len(frame)} "
                                     "frame is not supported")
            rank = len(nir_shape)
            start, end = int(node.start_dim) % rank, int(node.end_dim) % rank
            nxt = graph.nodes[order[i + 1]]
            # start_dim=1 counted with a batch axis (some writers): accepted when the next
            # Linear / Affine takes the whole frame.
            batch_style = (start == 1 and isinstance(nxt, (nir.Linear, nir.Affine))
                           and np.asarray(nxt.weight).shape[-1] == int(np.prod(nir_shape)))
            if end != rank - 1 or (start != 0 and not batch_style):
                raise NIRImportError(f"from_nir: node {name!r}: Flatten must flatten the whole "
                                     f"frame {nir_shape} (start_dim=0, end_dim=-1), got "
                                     f"start_dim={node.start_dim}, end_dim={node.end_dim}")
            x = TimeFolded(keras.layers.Flatten(name=name + "_inner"), name=name, **kw)(x)
        elif isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
            layer, values = _neuron_from_nir(nir, node, name, nir_shape, perm, dt, dtype)
            x = layer(x)
            _set_neuron_values(layer, values)
        elif isinstance(node, (nir.I, nir.LI)):
            if i != len(order) - 2:
                raise NIRImportError(f"from_nir: node {name!r} ({type(node).__name__}) is "
                                     "imported as a tfsnn readout and must feed the Output node")
            r = np.asarray(node.r, float)
            if isinstance(node, nir.I):
                _check_close(r * dt, 1.0, "I input gain r*dt must be 1", name)
                leak = 1.0
            else:
                tau = np.asarray(node.tau, float)
                _check_close(r * dt / tau, 1.0, "LI input gain r*dt/tau must be 1", name)
                if not np.allclose(np.asarray(node.v_leak, float), 0.0, rtol=0, atol=0):
                    raise NIRImportError(f"from_nir: node {name!r}: v_leak must be 0")
                leak = _param_from_nir(1.0 - dt / tau, nir_shape, None, "tau", name)
                if isinstance(leak, np.ndarray):
                    raise NIRImportError(f"from_nir: node {name!r}: LI needs one tau")
            layer = _meta_layer(node, (SumReadout, LeakyMeanReadout), name)
            meta_leak = 1.0 if isinstance(layer, SumReadout) else getattr(layer, "leak", None)
            if layer is None or abs(meta_leak - leak) > 1e-9:  # no / outdated metadata
                layer = SumReadout(name=name, **kw) if leak == 1.0 else LeakyMeanReadout(
                    leak, name=name, **kw)
            else:
                layer = type(layer).from_config({**layer.get_config(), "name": name, **kw})
            x = layer(x)
        else:
            raise NIRImportError(
                f"from_nir: node {name!r} is a nir.{type(node).__name__}, which tfsnn cannot "
                f"import; supported node kinds: {', '.join(IMPORT_KINDS)}")
        nir_shape = _to_nir_shape(x.shape[2:]) if len(x.shape) > 2 else nir_shape
    return keras.Model(inputs, x, name="from_nir")
