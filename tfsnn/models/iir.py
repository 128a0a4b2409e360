"""Architectures of the IIR-SNN paper (Fang et al. 2020, "Exploiting neuron and synapse filter
dynamics in spatial temporal learning of deep spiking neural network", IJCAI).

IIR nets, functional Keras models, image input ``[B, 28, 28, 1]`` in [0, 1]
(``x/255``), spike-count logits ``[B, 10]`` in {0..T} out (softmax cross-entropy on counts):

* ``snn_mlp_1``: 784 -> IIR -> 500 -> Drop -> IIR -> 500 -> Drop -> IIR -> 10 -> sum_t
  (653,362 trainable). ``snn_mlp_2``: the same with first-order low-pass synapses (649,794).
* ``snn_conv_1``: IIR -> SConv32 -> IIR -> SConv32 -> IIR -> SConv64 -> IIR -> MP2(PSP) -> IIR ->
  SConv64 -> IIR -> MP2(PSP) -> flatten -> IIR -> 512 -> Drop -> IIR -> 10 -> sum_t (2,065,882).
* ``associative_memory_net``: spikes ``[B, 300, 300]`` -> IIR -> 500 -> IIR -> 200 -> IIR ->
  500 -> IIR -> 300 output spikes ``[B, T, 300]`` (tau_m = 8, tau_s = 2; 506,000 trainable).

``encoding``: ``"copy"`` (the analog image at every step: the first synapse holds the image for
``timesteps`` steps, ``held_steps``, which equals a ``DirectEncoder`` followed by the filter and
skips its recurrence over the batch; ``tfsnn.layers.filters``) or ``"poisson"``
(``PoissonEncoder``, spike iff ``x > U(0,1)``, redrawn every call). ``state``: ``"zero"`` or
``"carry"`` (needs ``batch_size``; see ``tfsnn.layers.filters``).
"""
import keras

from tfsnn.layers.encoders import PoissonEncoder
from tfsnn.layers.filters import DualExpIIR, FirstOrderLowPass
from tfsnn.layers.neurons.iir import IIRSpikingConv2D, IIRSpikingDense, PSPMaxPool2D
from tfsnn.layers.readouts import SumReadout
from tfsnn.layers.sequence import SpikeDropout

ENCODINGS = ("copy", "poisson")
IIR_MODELS = ("snn_mlp_1", "snn_mlp_2", "snn_conv_1")


def _encode(h, encoding, timesteps):
    """``(h, held_steps)`` for the first synapse: the image itself, held for ``timesteps`` steps
    by that synapse (copy), or its Poisson spikes ``[B, T, ...]``."""
    if encoding == "copy":
        return h, timesteps
    if encoding == "poisson":
        return PoissonEncoder(timesteps, gain=1.0, strict=True, name="encoder")(h), None
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def _synapse(kind, tau_m, tau_s, sk, name, max_radius, held_steps=None):
    if kind == "dual_exp":
        return DualExpIIR(tau_m, tau_s, name=name, max_radius=max_radius, held_steps=held_steps,
                          **sk)
    return FirstOrderLowPass(tau_m, name=name, max_radius=max_radius, held_steps=held_steps, **sk)


def _mlp(name, synapse, timesteps, encoding, tau_m, tau_s, dropout, state, batch_size,
         input_shape, classes, filter_radius):
    sk = dict(state=state, batch_size=batch_size)
    inp = keras.Input(input_shape, batch_size=batch_size if state == "carry" else None,
                      name="image")
    h, held = _encode(keras.layers.Flatten(name="flatten")(inp), encoding, timesteps)
    for i, units in enumerate((500, 500, classes), start=1):
        h = _synapse(synapse, tau_m, tau_s, sk, f"synapse{i}", filter_radius,
                     held if i == 1 else None)(h)
        h = IIRSpikingDense(units, tau_m=tau_m, name=f"neuron{i}", **sk)(h)
        if i < 3 and dropout:
            h = SpikeDropout(dropout, name=f"dropout{i}")(h)
    return keras.Model(inp, SumReadout(name="spike_count")(h), name=name)


def snn_mlp_1(timesteps=25, encoding="copy", tau_m=4.0, tau_s=1.0, dropout=0.3, state="zero",
              batch_size=None, input_shape=(28, 28, 1), classes=10, filter_radius=None):
    """The dual-exponential IIR MLP (784-500-500-10), spike-count logits. ``filter_radius``:
    the synapses' ``max_radius`` (None: free coefficients, as the original)."""
    return _mlp("snn_mlp_1", "dual_exp", timesteps, encoding, tau_m, tau_s, dropout, state,
                batch_size, input_shape, classes, filter_radius)


def snn_mlp_2(timesteps=25, encoding="copy", tau_m=4.0, tau_s=1.0, dropout=0.3, state="zero",
              batch_size=None, input_shape=(28, 28, 1), classes=10, filter_radius=None):
    """``snn_mlp_1`` with first-order low-pass synapses (tau = tau_m; tau_s unused)."""
    return _mlp("snn_mlp_2", "low_pass", timesteps, encoding, tau_m, tau_s, dropout, state,
                batch_size, input_shape, classes, filter_radius)


def snn_conv_1(timesteps=25, encoding="copy", tau_m=4.0, tau_s=1.0, dropout=0.3, state="zero",
               batch_size=None, input_shape=(28, 28, 1), classes=10, filter_radius=None):
    """The IIR conv net of snn_conv_1_mnist (max pools act on the PSP, which is then filtered
    again, as upstream). Flattening is Keras (H, W, C) order."""
    sk = dict(state=state, batch_size=batch_size)
    inp = keras.Input(input_shape, batch_size=batch_size if state == "carry" else None,
                      name="image")
    h, held = _encode(inp, encoding, timesteps)
    n = 0

    def iir(h):
        nonlocal n
        n += 1
        return DualExpIIR(tau_m, tau_s, name=f"synapse{n}", max_radius=filter_radius,
                          held_steps=held if n == 1 else None, **sk)(h)

    h = iir(h)
    for i, f in enumerate((32, 32, 64), start=1):
        h = iir(IIRSpikingConv2D(f, 3, padding="same", tau_m=tau_m, name=f"conv{i}", **sk)(h))
    h = iir(PSPMaxPool2D(2, name="pool1")(h))
    h = iir(IIRSpikingConv2D(64, 3, padding="same", tau_m=tau_m, name="conv4", **sk)(h))
    h = PSPMaxPool2D(2, name="pool2")(h)
    h = keras.layers.Reshape((timesteps, h.shape[2] * h.shape[3] * h.shape[4]), name="flatten")(h)
    h = IIRSpikingDense(512, tau_m=tau_m, name="fc1", **sk)(iir(h))
    if dropout:
        h = SpikeDropout(dropout, name="dropout1")(h)
    h = IIRSpikingDense(classes, tau_m=tau_m, name="fc2", **sk)(iir(h))
    return keras.Model(inp, SumReadout(name="spike_count")(h), name="snn_conv_1")


IIR_BUILDERS = {"snn_mlp_1": snn_mlp_1, "snn_mlp_2": snn_mlp_2, "snn_conv_1": snn_conv_1}


def iir_model(name, **kwargs):
    """An IIR classification model by name (``IIR_MODELS``)."""
    if name not in IIR_BUILDERS:
        raise ValueError(f"model must be one of {IIR_MODELS}, got {name!r}")
    return IIR_BUILDERS[name](**kwargs)


def associative_memory_net(timesteps=300, channels=300, widths=(500, 200, 500), tau_m=8.0,
                           tau_s=2.0, state="zero", batch_size=None, filter_radius=None):
    """``[B, T, channels]`` spikes -> IIR -> 500 -> IIR -> 200 -> IIR -> 500 -> IIR -> channels:
    output spikes ``[B, T, channels]`` (filter them with ``DualExpReadoutFilter(8, 2)`` for the
    loss). ``filter_radius``: the synapses' ``max_radius`` (None: free, as the original)."""
    sk = dict(state=state, batch_size=batch_size)
    inp = keras.Input((timesteps, channels), batch_size=batch_size if state == "carry" else None,
                      name="spikes")
    h = inp
    for i, units in enumerate((*widths, channels), start=1):
        h = DualExpIIR(tau_m, tau_s, name=f"synapse{i}", max_radius=filter_radius, **sk)(h)
        h = IIRSpikingDense(units, tau_m=tau_m, name=f"neuron{i}", **sk)(h)
    return keras.Model(inp, h, name="associative_memory")


# --------------------------------------------------------------------------- proxy learning

