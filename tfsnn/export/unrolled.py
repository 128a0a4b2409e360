"""The inference function of a converted integer SNN for a fixed number of steps, in portable ops.

``UnrolledSnn(snn, timesteps=None)`` is a ``tf.Module`` whose ``__call__(images)`` runs the SNN
built by ``tfsnn.convert(..., use_int=True)`` for exactly ``T`` steps with the time loop unrolled
in Python: static shapes (batch dynamic), no ``searchsorted`` / TensorList / while loop, only ops
that TFLite builtins and ONNX have (conv2d, depthwise conv, matmul, max pool, add, compare,
gather, cast, reduce_sum, pad, reshape, concat, argmax). It is what ``tfsnn.export.to_tflite`` and
``tfsnn.export.to_onnx`` convert, and it equals ``tfsnn.simulate`` bit for bit (logits, classes,
spike and SOP counts) in TensorFlow.

How it runs (docs/specs/all_int_snn.md §2; ``tfsnn.layers.neurons.integer``): layer by layer
over all ``T`` steps at once (zero synaptic delay, as ``tfsnn.simulate``), every edge carrying
the running counts ``[B, T, ...]`` (int32) of its increments, time folded into the batch for the
synaptic ops (all linear, so they commute with the running sum):

* analog layers before the encoder (a zoo twin's float first synapse): their Keras call;
* ``SpikeEncoder`` / ``RampEncoder``: level ``L = sum_m [z >= theta_m]`` (a sum of comparisons),
  counts ``2^k min(L, t + 1)``;
* synapses (``SpikingConv2D``'s conv, ``IntegerSynapse``): the op on the input counts, in float32
  on exact integers (kernels stored as int8 constants, cast in the graph), cast to int32: the
  membrane ``V_t``; ``max_c sum|W[:, c]| x max count < 2^24`` is checked when the function is
  built;
* the signed dynamic-threshold neuron, unrolled over ``t``: with net count ``n`` (int32) it fires
  ``+1`` if ``V_t >= theta_{n+1}`` and ``-1`` if ``V_t < theta_n`` -- two ``gather`` s into the
  per-channel threshold table padded with int32 min / max (= ``clip(L(V_t) - n, -1, 1)`` for a
  non-decreasing table, so no ``searchsorted``);
* ``SpikeOp``: max / sum pooling, padding, reshape, add, concat of the counts;
* ``OutputAccumulator`` / ``OutputHead``: the logits of the last step, from its counts.

Outputs of ``__call__`` (``B`` images, ``L`` spiking layers encoder first, ``R`` SOP rows, both
in ``tfsnn.simulate``'s order, see ``layer_names`` / ``sop_layer_names``):
``logits`` float32 ``[B, classes]`` (last step, ``2^k`` x the ANN's at convergence), ``class``
int64 ``[B]``, ``spikes`` int32 ``[B, L]`` (+1 and -1 events per image; an encoder event is one
``2^k``-amplitude spike), ``sops`` int32 ``[B, R]`` (synaptic operations per image, exact fan-out).
"""

import keras
import numpy as np
import tensorflow as tf

from tfsnn.conversion.graph import SnnGraph
from tfsnn.conversion.rules import ENCODERS
from tfsnn.geometry import pair
from tfsnn.layers.neurons.integer import (_MAX_EXACT, IntegerSynapse, OutputAccumulator,
                                          OutputHead, RampEncoder, SpikeEncoder, SpikeOp,
                                          SpikingConv2D, SpikingNeuron)
from tfsnn.simulation import check_timesteps

_INT32 = np.iinfo(np.int32)
SUPPORTED = (SpikeEncoder, RampEncoder, SpikingConv2D, IntegerSynapse, SpikingNeuron, SpikeOp,
             OutputAccumulator, OutputHead)


def _col_bound(w):
    """``max_c sum|W[..., c]|`` of a kernel whose last axis is the output channel."""
    w = np.abs(np.asarray(w, np.float64))
    return float(w.reshape(-1, w.shape[-1]).sum(0).max(initial=0.0))


def _int8_kernel(layer, w):
    """The kernel as an int8 constant (its values must be integers in -128..127)."""
    w = np.asarray(w)
    if w.size and (np.abs(w).max() > 127 or not np.array_equal(w, np.round(w))):
        raise ValueError(f"{layer.name}: kernel values must be integers in -128..127 for the "
                         f"int8 export, got range [{w.min()}, {w.max()}]")
    return w.astype(np.int8)


def _threshold_table(layer, thresholds):
    """Thresholds ``[C, M]`` padded to ``[C * (M + 2)]`` with int32 min / max at both ends of
    every channel's row (``theta_0 = -inf``, ``theta_{M+1} = +inf``), flattened for ``gather``."""
    th = np.asarray(thresholds, np.int64)
    if th.size and np.any(np.diff(th, axis=1) < 0):
        raise ValueError(f"{layer.name}: thresholds must be non-decreasing along levels")
    c = th.shape[0]
    pad = np.concatenate([np.full((c, 1), _INT32.min), th, np.full((c, 1), _INT32.max)], 1)
    return pad.reshape(-1).astype(np.int32), th.shape[1]


def _neuron_consts(layer, thresholds, min_level=0, signs=None):
    """numpy constants of the signed dynamic-threshold neuron: ``table`` (see
    ``_threshold_table``), ``offset [C]`` (index of ``theta_{n+1}`` for count ``n``:
    ``c (M + 2) + n - min_level + 1``) and ``signs [C]`` (None if all +1)."""
    table, m = _threshold_table(layer, thresholds)
    c = np.asarray(thresholds).shape[0]
    out = {"table": table, "offset": (np.arange(c) * (m + 2) + 1 - min_level).astype(np.int32),
           "signs": None}
    if signs is not None and np.any(np.asarray(signs) != 1):
        out["signs"] = np.asarray(signs).astype(np.int32)
    return out


def _neuron_step(c, v, n):
    """One step of the neuron with constants ``c`` (tensors), int32 membrane ``v`` and count
    ``n``: fires +1 if ``V >= theta_{n+1}``, -1 if ``V < theta_n``; returns (s, n', events)."""
    if c["signs"] is not None:
        v = v * c["signs"]
    i = n + c["offset"]
    up = tf.cast(v >= tf.gather(c["table"], i), tf.int32)
    down = tf.cast(v < tf.gather(c["table"], i - 1), tf.int32)
    s = up - down
    return s, n + s, up + down


def _levels(z, th):
    """``sum_m [z >= theta_m]`` per channel: ``z [B, ..., C]`` float32, ``th [M, C]`` float32
    (the thresholds transposed)."""
    c = z.shape[-1]
    flat = tf.reshape(z, [-1, 1, c])
    lev = tf.reduce_sum(tf.cast(flat >= th[None], tf.int32), axis=1)
    return tf.reshape(lev, tf.shape(z))


def _conv(x, w, strides, padding, dilations=(1, 1)):
    return tf.nn.conv2d(x, w, strides, padding.upper(), dilations=list(dilations))


class UnrolledSnn(tf.Module):
    """A converted integer SNN as a function of images for exactly ``timesteps`` steps.

    Args:
      snn: a model from ``tfsnn.convert(ann, use_int=True)`` (ALL_INT chains and the SNNs of
        ``quantize_model`` twins).
      timesteps: ``T`` (default the SNN's; at most its threshold table size).
      batch_size: a fixed batch size for the input signature, or None (dynamic batch).
      captured_constants: weights as eager constants captured by the function instead of
        constants created in the trace. The TFLite converter folds a ``Cast`` of an in-graph
        constant (int8 kernels would be stored as float32) but freezes captured ones after
        folding (they stay int8, cast by a ``CAST`` op); tf2onnx needs in-graph constants.
    Raises:
      ValueError: a float-mode SNN, a layer kind this export does not support, or an integer
        bound that a float32 op could not hold exactly.
    """

    def __init__(self, snn, timesteps=None, batch_size=None, captured_constants=False):
        super().__init__(name="unrolled_snn")
        graph = SnnGraph.of(snn)
        self.graph = graph
        self.timesteps = check_timesteps(graph, timesteps)
        self.amplitude = graph.amplitude
        self.layer_names = graph.layer_names
        self.sop_layer_names = graph.sop_row_names
        shape = tuple(int(d) for d in snn.input.shape[1:])
        self.input_shape = shape
        self.num_classes = int(graph.output.units)
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self._prepare()
        self._captured = None
        if captured_constants:
            self._captured = ([self._consts(p) for p in self.plan],
                              {k: tf.constant(v) for k, v in self.fanouts.items()})
        self.keras_variables = [v.value for v in snn.variables]  # tracked: converters freeze them
        spec = tf.TensorSpec([self.batch_size, *shape], tf.float32, name="images")
        self.run = tf.function(self._run, input_signature=[spec], autograph=False)

    def __call__(self, images):
        """``images`` float32 ``[B, H, W, C]`` -> dict (see the module docstring)."""
        return self.run(images)

    # ------------------------------------------------------------------ static plan
    def _prepare(self):
        g = self.graph
        spiking = {l.name for l in g.spiking}
        first_spike = min(i for i, (l, _) in enumerate(g.nodes) if l.name in g.encoders)
        self.analog, self.plan, bound = [], [], {}
        evb = {}  # bound of the events per neuron and image (SOPs must fit int32)
        for idx, (layer, ins) in enumerate(g.nodes):
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if idx < first_spike and not hasattr(layer, "compact"):
                self.analog.append((layer, ins))
                continue
            if not isinstance(layer, SUPPORTED):
                raise ValueError(f"export: layer {layer.name!r} ({type(layer).__name__}) is not "
                                 f"supported by the unrolled SNN; supported: "
                                 f"{[c.__name__ for c in SUPPORTED]}")
            if getattr(layer, "use_int", True) is False and not isinstance(layer, ENCODERS):
                raise ValueError(f"export: layer {layer.name!r} is a float-mode SNN layer; the "
                                 "portable export needs the integer SNN: tfsnn.convert(ann, "
                                 "use_int=True)")
            p = {"layer": layer, "ins": list(ins)}
            if isinstance(layer, SpikeEncoder):
                w, th = layer.get_weights()
                p.update(kind="encoder", kernel=np.asarray(w, np.float32),
                         thresholds=np.asarray(th, np.float32).T.copy())
                bound[layer.name] = layer.amplitude * min(layer.levels, self.timesteps)
                evb[layer.name] = min(layer.levels, self.timesteps)
            elif isinstance(layer, RampEncoder):
                th, signs = layer.get_weights()
                p.update(kind="ramp", thresholds=np.asarray(th, np.float32).T.copy(),
                         signs=np.asarray(signs, np.float32))
                bound[layer.name] = layer.amplitude * min(layer.levels, self.timesteps)
                evb[layer.name] = min(layer.levels, self.timesteps)
            elif isinstance(layer, SpikingConv2D):
                w, th = layer.get_weights()
                self._check_exact(layer, _col_bound(w) * bound[ins[0]])
                p.update(kind="spiking_conv", kernel=_int8_kernel(layer, w),
                         neuron=_neuron_consts(layer, th))
                bound[layer.name] = evb[layer.name] = self.timesteps  # one per step
            elif isinstance(layer, IntegerSynapse):
                (w,) = layer.get_weights()
                b = _col_bound(w) * bound[ins[0]]
                self._check_exact(layer, b)
                p.update(kind="synapse", kernel=_int8_kernel(layer, w))
                bound[layer.name] = b
            elif isinstance(layer, SpikingNeuron):
                th, signs = layer.get_weights()
                p.update(kind="neuron", neuron=_neuron_consts(layer, th, layer.min_level, signs))
                bound[layer.name] = evb[layer.name] = self.timesteps
            elif isinstance(layer, SpikeOp):
                p.update(kind="op")
                b = [bound[i] for i in ins]
                if layer.kind == "sumpool":
                    ph, pw = pair(layer.args["pool_size"])
                    b = [b[0] * ph * pw]
                bound[layer.name] = sum(b) if layer.kind == "add" else max(b)
                if layer.kind in ("maxpool", "sumpool"):
                    self._check_exact(layer, bound[layer.name])
                if bound[layer.name] >= _INT32.max:
                    raise ValueError(f"{layer.name}: its counts may exceed int32")
                e = [evb.get(i, 0) for i in ins]
                evb[layer.name] = (e[0] * ph * pw if layer.kind == "sumpool" else
                                   sum(e) if layer.kind == "add" else max(e))
            else:  # OutputAccumulator, OutputHead
                p.update(kind="output")
                if isinstance(layer, OutputAccumulator):
                    p["kernel"] = np.asarray(layer.get_weights()[0], np.float32)
            self.plan.append(p)
        # event counting: every spiking layer and every receiver input
        self.counted = list(dict.fromkeys(
            [l.name for l in g.spiking] + [i for _, ins, _ in g.receivers for i in ins]))
        self.spiking_names = spiking
        self.fanouts = {key: np.asarray(f).astype(np.int32) for key, f in g.fanouts.items()}
        for key, f in g.fanouts.items():
            if int(np.asarray(f).sum()) * evb.get(key[1], self.timesteps) >= _INT32.max:
                raise ValueError(f"SOPs of {key[0]!r} may exceed int32 per image")

    @staticmethod
    def _check_exact(layer, b):
        """``b``: a bound of the op's output on running counts (float32 exact below 2^24)."""
        if b > _MAX_EXACT:
            raise ValueError(f"{layer.name}: the bound {b:g} of its integer output (membrane or "
                             "pooled counts) exceeds 2^24; a float32 op would not be exact")

    # ------------------------------------------------------------------ the function
    @staticmethod
    def _consts(d):
        """``d`` with its numpy arrays as graph constants (created inside the trace, so that
        every converter sees ``Const`` nodes rather than captured inputs)."""
        return {k: (tf.constant(v) if isinstance(v, np.ndarray) else
                    UnrolledSnn._consts(v) if isinstance(v, dict) else v) for k, v in d.items()}

    def _run(self, images):
        g, t_max = self.graph, self.timesteps
        if self._captured is None:
            plan = [self._consts(p) for p in self.plan]
            fanouts = {k: tf.constant(v) for k, v in self.fanouts.items()}
        else:
            plan, fanouts = self._captured
        plan = [dict(p) for p in plan]
        for p in plan:  # int8 -> float32 once
            if p["kind"] in ("spiking_conv", "synapse"):
                p["kernel"] = tf.cast(p["kernel"], tf.float32)
        vals = {g.nodes[0][0].name: images}
        for layer, ins in self.analog:
            xs = [vals[i] for i in ins]
            vals[layer.name] = layer(xs if len(xs) > 1 else xs[0], training=False)
        cnt, events = {}, {}  # running counts [B, T, ...] int32; events per neuron [B, ...]
        for p in plan:
            name, ins, kind = p["layer"].name, p["ins"], p["kind"]
            if kind in ("encoder", "ramp"):
                layer = p["layer"]
                if kind == "encoder":
                    z = _conv(images, p["kernel"], layer.strides, layer.padding)
                else:
                    z = tf.cast(vals[ins[0]], tf.float32) * p["signs"]
                lev = _levels(z, p["thresholds"])  # spikes on steps 0..L-1
                n = tf.stack([tf.minimum(lev, t + 1) for t in range(t_max)], axis=1)
                cnt[name] = n * self.amplitude if self.amplitude != 1 else n
                events[name] = tf.minimum(lev, t_max)
            elif kind == "spiking_conv":
                cnt[name], events[name] = self._recur(p["neuron"], self._synapse(p, cnt[ins[0]]))
            elif kind == "synapse":
                cnt[name] = self._synapse(p, cnt[ins[0]])
            elif kind == "neuron":
                cnt[name], events[name] = self._recur(p["neuron"], cnt[ins[0]])
            elif kind == "op":
                cnt[name] = self._op(p["layer"], [cnt[i] for i in ins])
            if name not in self.spiking_names and name in self.counted:
                events[name] = self._events(cnt[name], g.units[name])
        logits = self._logits(cnt, plan)
        spikes = tf.stack([self._per_image(events[n]) for n in self.layer_names], axis=1)
        sops = {r: None for r in self.sop_layer_names}
        for layer, ins, row in g.receivers:
            for i in ins:
                s = self._per_image(events[i] * fanouts[(layer.name, i)])
                sops[row] = s if sops[row] is None else sops[row] + s
        return {"logits": logits, "class": tf.argmax(logits, axis=-1),
                "spikes": spikes, "sops": tf.stack([sops[r] for r in self.sop_layer_names], 1)}

    @staticmethod
    def _per_image(x):
        return tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)

    @staticmethod
    def _events(c, unit):
        """Events per neuron ``sum_t |c_t - c_{t-1}| // unit`` of running counts
        ``c [B, T, ...]``."""
        steps = tf.unstack(c, axis=1)
        ev, prev = None, None
        for x in steps:
            d = x if prev is None else x - prev
            d = tf.maximum(d, -d)
            d = d if unit == 1 else d // unit
            ev, prev = (d if ev is None else ev + d), x
        return ev

    @staticmethod
    def _frames(fn, x):
        """``fn`` on the frames of ``x [B, T, ...]`` folded into the batch -> ``[B, T, ...]``."""
        t = x.shape[1]
        y = fn(tf.reshape(x, [-1, *x.shape[2:]]))
        return tf.reshape(y, [-1, t, *y.shape[1:]])

    @classmethod
    def _synapse(cls, p, c):
        """The synaptic op on running counts (linear: the membrane), float32 on exact integers,
        cast to int32."""
        layer, w = p["layer"], p["kernel"]
        op = getattr(layer, "op", "conv")

        def fn(x):
            x = tf.cast(x, tf.float32)
            if op == "dense":
                return tf.matmul(x, w)
            if op == "conv":
                return _conv(x, w, layer.strides, layer.padding,
                             getattr(layer, "dilation_rate", (1, 1)))
            return tf.nn.depthwise_conv2d(x, w, (1, *layer.strides, 1), layer.padding.upper(),
                                          dilations=layer.dilation_rate)
        return tf.cast(cls._frames(fn, c), tf.int32)

    @staticmethod
    def _recur(neuron, v):
        """The neuron over the membrane ``v [B, T, ...]`` (int32): counts ``[B, T, ...]`` and
        events per neuron ``[B, ...]``, unrolled over T."""
        n, ns, ev = None, [], None
        for vt in tf.unstack(v, axis=1):
            n = tf.zeros_like(vt) if n is None else n
            _, n, e = _neuron_step(neuron, vt, n)
            ns.append(n)
            ev = e if ev is None else ev + e
        return tf.stack(ns, axis=1), ev

    @classmethod
    def _op(cls, layer, cs):
        """A ``SpikeOp`` on running counts (every kind commutes with the running sum; max
        pooling is defined on the counts)."""
        a = layer.args
        if layer.kind == "add":
            y = cs[0]
            for c in cs[1:]:
                y = y + c
            return y
        if layer.kind == "concat":
            return tf.concat(cs, axis=a.get("axis", -1))
        if layer.kind == "zeropad":
            (t, b), (l, r) = a["padding"]
            return cls._frames(lambda x: tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]]), cs[0])
        if layer.kind == "reshape":
            return cls._frames(lambda x: tf.reshape(x, [-1, *a["target_shape"]]), cs[0])
        p, s = list(pair(a["pool_size"])), list(pair(a["strides"]))
        pad = a["padding"].upper()
        if layer.kind == "sumpool":
            def fn(x):
                ones = tf.ones([*p, x.shape[-1], 1], tf.float32)
                return tf.nn.depthwise_conv2d(tf.cast(x, tf.float32), ones, [1, *s, 1], pad)
        else:
            def fn(x):
                return tf.nn.max_pool2d(tf.cast(x, tf.float32), p, s, pad)
        return tf.cast(cls._frames(fn, cs[0]), tf.int32)

    def _logits(self, cnt, plan):
        out = self.graph.output
        ins = [i for l, i_s in self.graph.nodes if l is out for i in i_s]
        counts = [tf.cast(cnt[i][:, -1], tf.float32) for i in ins]
        if isinstance(out, OutputAccumulator):
            (p,) = [p for p in plan if p["layer"] is out]
            c = counts[0]
            return tf.matmul(tf.reshape(c, [-1, int(np.prod(c.shape[1:]))]), p["kernel"])
        amp = float(out.amplitude)
        lv = [c / amp for c in counts]
        return out.head(lv if len(lv) > 1 else lv[0], training=False) * amp

    def concrete_function(self):
        """The traced ``run`` (for converters)."""
        return self.run.get_concrete_function()


# ----------------------------------------------------------------------------- shared by the
# portable formats (tfsnn.export.tflite, tfsnn.export.onnx)

def is_snn(model):
    """True for a converted SNN (it has an encoder layer), False for an ANN."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model (a quantized ANN or a converted SNN), got "
                        f"{type(model).__name__}")
    return any(isinstance(l, ENCODERS) for l in model.layers)


class AnnModule(tf.Module):
    """A Keras ANN as a function ``images -> {"logits", "class"}`` whose variables are tracked
    (``keras_variables``) so that converters can freeze them."""

    def __init__(self, model, batch_size=None):
        super().__init__(name="ann")
        self.model = model
        self.input_shape = tuple(int(d) for d in model.input.shape[1:])
        self.keras_variables = [v.value for v in model.variables]
        spec = tf.TensorSpec([batch_size, *self.input_shape], tf.float32, name="images")

        def serve(images):
            logits = tf.cast(model(images, training=False), tf.float32)
            return {"logits": logits, "class": tf.argmax(logits, axis=-1)}

        self.run = tf.function(serve, input_signature=[spec], autograph=False)

    def concrete_function(self):
        return self.run.get_concrete_function()


def portable_module(model, timesteps=None, batch_size=None, captured_constants=False):
    """``UnrolledSnn`` for a converted SNN, ``AnnModule`` for an ANN (``timesteps`` must then be
    None)."""
    if is_snn(model):
        return UnrolledSnn(model, timesteps, batch_size, captured_constants)
    if timesteps is not None:
        raise ValueError(f"timesteps applies to a converted SNN only; {model.name!r} is an ANN")
    return AnnModule(model, batch_size)


def metadata(module):
    """What a portable file holds, for its ``.json`` sidecar (``run_tflite`` / ``run_onnx``)."""
    if isinstance(module, UnrolledSnn):
        return {"kind": "snn", "timesteps": module.timesteps,
                "k": int(np.log2(module.amplitude)), "input_shape": list(module.input_shape),
                "layer_names": module.layer_names, "sop_layer_names": module.sop_layer_names,
                "outputs": ["logits", "class", "spikes", "sops"]}
    return {"kind": "ann", "input_shape": list(module.input_shape),
            "outputs": ["logits", "class"]}


def check_images(images, input_shape):
    """``images`` as float32 ``[N, *input_shape]``; a clear ``ValueError`` otherwise (a
    runtime given a wrong shape may abort the process)."""
    x = np.asarray(images)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"images must be a numeric array, got dtype {x.dtype}")
    want = tuple(int(d) for d in input_shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise ValueError(f"images must have shape [N, {', '.join(map(str, want))}] (a batch of "
                         f"preprocessed images), got {list(x.shape)}")
    return x.astype(np.float32, copy=False)
