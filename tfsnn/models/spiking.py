"""Directly trained / hybrid SNN architectures and their ANN twins, by name
(docs/specs/hybrid_and_spike_bp.md §2.10, §3.6).

``ann(name)`` builds the bias-free ReLU ANN (average pooling, dropout) of an architecture;
``snn(name, timesteps)`` builds its spiking twin: an input encoder, every ``Conv2D``/``Dense``
applied to all ``B*T`` frames at once (``TimeFolded`` / Dense on ``[B, T, F]``), every ReLU
replaced by a neuron layer, and a time-integrating readout. Both have the same kernels in the
same order (``transfer_weights``), so a trained ANN loads 1:1 into its SNN.

Names (CIFAR 32x32x3 unless noted):

* Rathi et al. (hybrid + STDB; family ``"rathi"``: ``RathiNeuron``, pooling = plain 2x2
  average of the spikes, ``SumReadout``): ``vgg5``, ``vgg9``, ``vgg11`` (HEAD config, classifier
  8192-1024-1024), ``vgg13``, ``vgg16``, ``resnet12``, ``resnet20``, ``resnet34``.
* Lee et al. (spike-based BP; family ``"lee"``: ``LeeNeuron``, spiking 2x2 average pool (IF,
  theta 0.75, reset to zero), ``LeakyMeanReadout``): ``spike_bp_lenet`` (MNIST 28x28x1),
  ``spike_bp_vgg9``, ``resnet11``.

Layer names: ``conv<i>`` / ``fc<i>`` / ``output`` (kernels), ``spike<i>`` (neurons), ``pool<i>``,
``drop<i>``; the SNN's encoder is ``encoder`` and its readout ``readout``. Every conv and dense
is bias-free. Images ``[B, H, W, C]`` -> logits ``[B, num_classes]``.
"""
import keras

from tfsnn import surrogates as sg
from tfsnn.layers import encoders
from tfsnn.layers.neurons import lif as neurons
from tfsnn.layers.readouts import LeakyMeanReadout, SumReadout
from tfsnn.layers.sequence import TimeConstantDropout, TimeFolded

# ------------------------------------------------------------------ architecture tables

VGG_CFGS = {  # conv widths, "A" = 2x2 average pool; then the hidden FC widths
    "vgg5": ([64, "A", 128, 128, "A"], [4096, 4096]),
    "vgg9": ([64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512], [4096, 4096]),
    "vgg11": ([64, "A", 128, 256, 256, "A", 512, 512, 512, "A", 512, 512], [1024, 1024]),
    "vgg13": ([64, 64, "A", 128, 128, "A", 256, 256, "A", 512, 512, 512, "A", 512],
              [4096, 4096]),
    "vgg16": ([64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A",
               512, 512, 512], [4096, 4096]),
    "spike_bp_vgg9": ([64, 64, "A", 128, 128, "A", 256, 256, 256, "A"], [1024]),
}
RESNET_BLOCKS = {"resnet12": [1, 1, 1, 1], "resnet20": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}
FAMILY = {**{n: "rathi" for n in ("vgg5", "vgg9", "vgg11", "vgg13", "vgg16", *RESNET_BLOCKS)},
          "spike_bp_lenet": "lee", "spike_bp_vgg9": "lee", "resnet11": "lee"}
INPUT_SHAPES = {"spike_bp_lenet": (28, 28, 1)}
# Dropout defaults of the original scripts: (conv / hidden neuron, classifier FC).
DROPOUT = {"rathi": (0.3, 0.5), "spike_bp_lenet": (0.0, 0.0), "spike_bp_vgg9": (0.2, 0.2),
           "resnet11": (0.25, 0.25)}


def names():
    """Sorted architecture names."""
    return sorted(FAMILY)


def _check(name):
    if name not in FAMILY:
        raise ValueError(f"unknown SNN architecture {name!r}; known: {names()}")


# ------------------------------------------------------------------ builder

class _Builder:
    """Emits either the ANN or the SNN version of each architectural element."""

    def __init__(self, name, spiking, family, neuron_kwargs, leak, divide_by_time=False):
        self.name, self.spiking, self.family = name, spiking, family
        self.divide_by_time = bool(divide_by_time)
        self.neuron_kwargs = dict(neuron_kwargs or {})
        self.leak = leak
        self.n_spike = self.n_pool = self.n_drop = 0
        if family == "rathi":
            self.conv_init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
            self.fc_init = keras.initializers.RandomNormal(0.0, 0.01)
        else:
            scale = 1.0 if name == "resnet11" else 2.0
            self.conv_init = self.fc_init = keras.initializers.VarianceScaling(
                scale, "fan_in", "untruncated_normal")

    def _td(self, layer, name):
        return TimeFolded(layer, name=name) if self.spiking else layer

    def conv(self, h, filters, name, kernel=3, stride=1):
        layer = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                                    kernel_initializer=self.conv_init,
                                    name=name + "_conv" if self.spiking else name)
        return self._td(layer, name)(h)

    def dense(self, h, units, name):
        return keras.layers.Dense(units, use_bias=False, kernel_initializer=self.fc_init,
                                  name=name)(h)

    def flatten(self, h):
        return self._td(keras.layers.Flatten(name="flatten_inner"), "flatten")(h)

    def act(self, h):
        self.n_spike += 1
        name = f"spike{self.n_spike}"
        if not self.spiking:
            return keras.layers.ReLU(name=name)(h)
        cls = neurons.RathiNeuron if self.family == "rathi" else neurons.LeeNeuron
        kw = dict(self.neuron_kwargs)
        if self.leak is not None:
            kw["leak"] = self.leak
        return cls(name=name, **kw)(h)

    def drop(self, h, rate):
        if not rate:
            return h
        self.n_drop += 1
        name = f"drop{self.n_drop}"
        if not self.spiking:
            return keras.layers.Dropout(rate, name=name)(h)
        return TimeConstantDropout(rate, name=name)(h)

    def pool(self, h, size=2, stride=2):
        self.n_pool += 1
        name = f"pool{self.n_pool}"
        h = self._td(keras.layers.AveragePooling2D(size, stride, name=name + "_inner"), name)(h)
        if self.spiking and self.family == "lee" and size > 1:
            # Lee's spiking pool: IF, theta 0.75, reset to zero, d q / d P = q(t) (no 1/theta).
            h = neurons.LIF(threshold=0.75, leak=1.0, reset="zero",
                            surrogate=sg.LeeSpike(scale=0.75), name=name + "_spike")(h)
        return h

    def readout(self, h, num_classes):
        logits = self.dense(h, num_classes, "output")
        if not self.spiking:
            return logits
        if self.family == "rathi":
            return SumReadout(divide_by_time=self.divide_by_time, name="readout")(logits)
        return LeakyMeanReadout(self.leak if self.leak is not None else 0.99,
                                        name="readout")(logits)


def _vgg(b, h, name, num_classes, p_conv, p_fc, fc_widths):
    convs, fcs = VGG_CFGS[name]
    fcs = fcs if fc_widths is None else fc_widths
    i = 0
    for j, c in enumerate(convs):
        if c == "A":
            continue
        i += 1
        h = b.act(b.conv(h, c, f"conv{i}"))
        pooled = j + 1 < len(convs) and convs[j + 1] == "A"
        if b.family == "lee" or not pooled:  # Rathi: an "A" replaces the dropout
            h = b.drop(h, p_conv)
        if pooled:
            h = b.pool(h)
    h = b.flatten(h)
    for k, units in enumerate(fcs, start=1):
        h = b.drop(b.act(b.dense(h, units, f"fc{k}")), p_fc)
    return b.readout(h, num_classes)


def _lenet(b, h, num_classes, fc_widths):
    h = b.pool(b.act(b.conv(h, 20, "conv1", kernel=5)))
    h = b.pool(b.act(b.conv(h, 50, "conv2", kernel=5)))
    h = b.flatten(h)
    for k, units in enumerate([200] if fc_widths is None else fc_widths, start=1):
        h = b.act(b.dense(h, units, f"fc{k}"))
    return b.readout(h, num_classes)


def _rathi_resnet(b, h, name, num_classes, p_conv):
    h = b.drop(b.act(b.conv(h, 64, "conv1")), p_conv)
    h = b.drop(b.act(b.conv(h, 64, "conv2")), p_conv)
    h = b.act(b.conv(h, 64, "conv3"))
    h = b.pool(h)
    i, c_in = 3, 64
    for width, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), RESNET_BLOCKS[name]):
        for k in range(n):
            s = stride if k == 0 else 1
            x = h
            h = b.drop(b.act(b.conv(x, width, f"conv{i + 1}", stride=s)), p_conv)
            h = b.conv(h, width, f"conv{i + 2}")
            if s != 1 or c_in != width:
                x = b.conv(x, width, f"conv{i + 2}_shortcut", kernel=1, stride=s)
            h = b.act(keras.layers.Add(name=f"add{i + 2}")([h, x]))
            i, c_in = i + 2, width
    h = b.flatten(h)
    return b.readout(h, num_classes)


def _lee_resnet11(b, h, num_classes, p, fc_widths):
    h = b.pool(b.drop(b.act(b.conv(h, 64, "conv1")), p))
    i = 1
    for c_in, width, stride, sub in ((64, 128, 1, "conv"), (128, 256, 2, "conv"),
                                     (256, 512, 1, "conv"), (512, 512, 2, "pool")):
        x = h
        h = b.drop(b.act(b.conv(x, width, f"conv{i + 1}")), p)
        h = b.conv(h, width, f"conv{i + 2}", stride=stride)
        if sub == "conv":
            x = b.conv(x, width, f"conv{i + 2}_shortcut", kernel=1, stride=stride)
        else:  # spike subsampling: average pool with kernel 1, stride 2 (no pool neuron)
            x = b._td(keras.layers.AveragePooling2D(1, 2, name=f"sub{i + 2}_inner"),
                      f"sub{i + 2}")(x)
        h = b.drop(b.act(keras.layers.Add(name=f"add{i + 2}")([h, x])), p)
        i += 2
    h = b.flatten(h)
    for k, units in enumerate([1024] if fc_widths is None else fc_widths, start=1):
        h = b.drop(b.act(b.dense(h, units, f"fc{k}")), p)
    return b.readout(h, num_classes)


def _build(name, spiking, num_classes, input_shape, timesteps, dropout, encoder, leak,
           neuron_kwargs, fc_widths, divide_by_time=False):
    _check(name)
    family = FAMILY[name]
    if divide_by_time and family != "rathi":
        raise ValueError(f"divide_by_time applies to the summed readout of Rathi's models; "
                         f"{name} has Lee's leaky-mean readout")
    p_conv, p_fc = DROPOUT.get(name, DROPOUT.get(family))
    if dropout is not None:
        p_conv, p_fc = (dropout, dropout) if isinstance(dropout, (int, float)) else dropout
    shape = tuple(input_shape or INPUT_SHAPES.get(name, (32, 32, 3)))
    inputs = keras.Input(shape, name="image")
    h = inputs
    if spiking:
        if timesteps is None:
            raise ValueError("timesteps is required for an SNN")
        if encoder is None:
            encoder = "signed_poisson"
        if isinstance(encoder, str):
            encs = {"signed_poisson": lambda: encoders.SignedPoissonEncoder(
                        timesteps, gain=0.9 if name in RESNET_BLOCKS else 1.0, name="encoder"),
                    "poisson": lambda: encoders.PoissonEncoder(timesteps, name="encoder"),
                    "poisson_half": lambda: encoders.PoissonEncoder(
                        timesteps, gain=0.5, strict=True, name="encoder"),
                    "signed_poisson_strict": lambda: encoders.SignedPoissonEncoder(
                        timesteps, strict=True, name="encoder"),
                    "direct": lambda: encoders.DirectEncoder(timesteps, name="encoder")}
            if encoder not in encs:
                raise ValueError(f"unknown encoder {encoder!r}; known: {sorted(encs)}")
            encoder = encs[encoder]()
        h = encoder(h)
    b = _Builder(name, spiking, family, neuron_kwargs, leak, divide_by_time)
    if name in VGG_CFGS:
        out = _vgg(b, h, name, num_classes, p_conv, p_fc, fc_widths)
    elif name == "spike_bp_lenet":
        out = _lenet(b, h, num_classes, fc_widths)
    elif name == "resnet11":
        out = _lee_resnet11(b, h, num_classes, p_conv, fc_widths)
    else:
        if fc_widths:
            raise ValueError(f"{name} has no hidden FC layers; fc_widths must be None")
        out = _rathi_resnet(b, h, name, num_classes, p_conv)
    return keras.Model(inputs, out, name=f"{name}_snn" if spiking else f"{name}_ann")


def ann(name, num_classes=10, input_shape=None, dropout=None, fc_widths=None):
    """The bias-free ReLU ANN twin of ``name`` (average pooling, dropout).

    ``input_shape``: default CIFAR (32, 32, 3) or MNIST (28, 28, 1) for the LeNet;
    ``fc_widths``: override the hidden FC widths (e.g. ``(1024, 1024)``); ``dropout``: a rate or
    (conv, fc) rates (None: the original scripts').
    """
    return _build(name, False, num_classes, input_shape, None, dropout, None, None, None,
                  fc_widths)


def snn(name, timesteps, num_classes=10, input_shape=None, dropout=None, encoder=None,
        leak=None, neuron_kwargs=None, fc_widths=None, divide_by_time=False):
    """The spiking version of ``name``.

    ``encoder``: ``"signed_poisson"`` (default; gain 0.9 for Rathi's ResNets), ``"poisson"``,
    ``"poisson_half"`` (Lee's MNIST: ``1[x/2 > u]``), ``"signed_poisson_strict"`` (Lee's CIFAR),
    ``"direct"`` or an encoder layer. ``leak``: override the family's neuron leak (and Lee's
    readout leak). ``neuron_kwargs``: extra ``RathiNeuron`` / ``LeeNeuron`` arguments (e.g.
    ``{"surrogate": "linear"}``). ``input_shape``, ``dropout``, ``fc_widths``: as in ``ann``.
    ``divide_by_time`` (Rathi's models): the readout is the accumulated output divided by T (the
    ANN's logit scale; spec switch ``output_divide_T``) instead of the original's plain sum; the
    predictions are the same, the cross-entropy's softmax is T times softer.
    """
    return _build(name, True, num_classes, input_shape, timesteps, dropout, encoder, leak,
                  neuron_kwargs, fc_widths, divide_by_time)


def kernel_layers(model):
    """The layers holding a kernel, in order (TimeFolded / TimeDistributed unwrapped)."""
    out = []
    for layer in model.layers:
        wrapped = isinstance(layer, (TimeFolded, keras.layers.TimeDistributed))
        inner = layer.layer if wrapped else layer
        if isinstance(inner, (keras.layers.Conv2D, keras.layers.Dense)):
            out.append(inner)
    return out

