"""ReLU ANN -> IF/LIF SNN by weight transfer and spike-based threshold balancing (Rathi et al.
2020, "Enabling deep spiking neural networks with hybrid conversion and spike timing dependent
backpropagation", ICLR).

1. ``transfer_weights(ann, snn)``: the bias-free ReLU ANN's kernels 1:1 into its spiking twin
   (``tfsnn.models.spiking``).
2. ``balance_thresholds(snn, ...)``: max-input balancing, layer by layer on the SNN itself with
   ``leak = 1`` and dropout off: ``theta_l = max_{t, batch, neurons} I_l(t)`` with the layers
   before ``l`` already balanced, then every ``theta_l *= scale`` (default 0.7).

``convert(ann, snn, images, ...)`` runs both. The input spike trains are drawn once and shared by
all layers' passes (the original re-draws them per layer; statistically equivalent). Each layer's
pass re-simulates the network (O(L^2 T) compute, as the original, but one traced function whose
outputs are only the per-layer maxima); memory is bounded by ``batch_size``.
"""
import keras
import numpy as np
import tensorflow as tf

from tfsnn.layers import encoders
from tfsnn.layers.neurons import lif as neurons
from tfsnn.models.spiking import kernel_layers


def spiking_layers(snn):
    """The model's neuron layers (``tfsnn.layers.neurons.LIF`` and subclasses), in order."""
    return [layer for layer in snn.layers if isinstance(layer, neurons.LIF)]


def _sequence_source(snn):
    """The tensor balancing starts from: the encoder's output, else the model input."""
    for layer in snn.layers:
        if isinstance(layer, (encoders.PoissonEncoder, encoders.DirectEncoder)):
            return layer, layer.output
    return None, snn.inputs[0]


def encode(snn, images, timesteps=None, seed=None):
    """Input sequences ``[N, T, ...]`` drawn by ``snn``'s encoder (with ``timesteps`` steps if
    given, else the encoder's), using a stateless ``seed`` if given."""
    enc, _ = _sequence_source(snn)
    if enc is None:
        raise ValueError("the SNN has no encoder layer; pass `sequences` instead of images")
    t = timesteps or enc.timesteps
    if isinstance(enc, encoders.DirectEncoder):
        return encoders.repeat_in_time(images, t)
    return encoders.poisson_encode(tf.cast(images, enc.compute_dtype), t, enc.gain, enc.signed,
                                   enc.strict, seed=seed)


def _statistic(values, stat):
    if stat == "max":
        return float(np.max(values))
    return float(np.percentile(values, stat))


def balance_thresholds(snn, images=None, sequences=None, scale=0.7, stat="max",
                       timesteps=None, batch_size=64, layers=None, seed=None):
    """Set each neuron layer's threshold by spike-based max-input balancing; returns the
    *unscaled* thresholds ``{layer name: theta}``.

    Give either ``images`` (encoded once by the SNN's own encoder, ``timesteps`` steps; default
    the encoder's T, the original used 1000) or pre-drawn ``sequences`` ``[N, T, ...]`` (the
    encoder's output, or the model input if it has no encoder). ``stat``: ``"max"`` (faithful)
    or a percentile in (0, 100] such as 99.9 (robust; keeps all currents of a layer in memory).
    ``layers``: the neuron layers to balance (default all, in order). The leak of each layer is
    1 while balancing and dropout is off; weights are not changed.
    """
    if (images is None) == (sequences is None):
        raise ValueError("give exactly one of `images` or `sequences`")
    if not (stat == "max" or (isinstance(stat, (int, float)) and 0 < stat <= 100)):
        raise ValueError(f"stat must be 'max' or a percentile in (0, 100], got {stat!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    _, source = _sequence_source(snn)
    if sequences is None:
        sequences = encode(snn, images, timesteps, seed=seed)
    sequences = tf.convert_to_tensor(sequences)
    todo = spiking_layers(snn) if layers is None else list(layers)
    if not todo:
        raise ValueError(f"model {snn.name!r} has no neuron layers to balance")
    saved_leaks = {id(n): n.leak for n in todo}
    found = {}
    chunks = [sequences[s:s + batch_size] for s in range(0, int(sequences.shape[0]),
                                                         int(batch_size))]
    try:
        for n in todo:
            n.leak = 1.0
        probe = keras.Model(source, [n.input for n in todo])
        if stat == "max":  # one trace; thresholds are variables read at run time
            maxima = tf.function(lambda x: tf.stack(
                [tf.reduce_max(c) for c in tf.nest.flatten(probe(x, training=False))]))
        for i, n in enumerate(todo):
            if stat == "max":
                m = max(float(maxima(c)[i]) for c in chunks)
            else:
                sub = keras.Model(source, n.input)
                m = _statistic(np.concatenate([
                    np.ravel(sub.predict_on_batch(c)) for c in chunks]), stat)
            if not m > 0:
                raise ValueError(f"layer {n.name!r} never receives a positive input current "
                                 f"(max {m}); cannot balance its threshold (more timesteps or "
                                 "images may help)")
            n.theta.assign(m)
            found[n.name] = m
    finally:
        for n in todo:
            n.leak = saved_leaks[id(n)]
    for n in todo:
        n.theta.assign(scale * found[n.name])
    return found


def convert(ann, snn, images=None, sequences=None, scale=0.7, timesteps=None, batch_size=64,
            stat="max", seed=None):
    """ANN -> SNN: copy the kernels 1:1, then ``balance_thresholds``; returns its thresholds."""
    transfer_weights(ann, snn)
    return balance_thresholds(snn, images=images, sequences=sequences, scale=scale, stat=stat,
                              timesteps=timesteps, batch_size=batch_size, seed=seed)


def transfer_weights(ann_model, snn_model):
    """Copy the ANN's kernels 1:1 (by order) into the SNN; fail on any count or shape mismatch."""
    src, dst = kernel_layers(ann_model), kernel_layers(snn_model)
    if len(src) != len(dst):
        raise ValueError(f"ANN has {len(src)} kernel layers, SNN {len(dst)}")
    for a, s in zip(src, dst):
        if len(a.weights) != 1 or len(s.weights) != 1:
            raise ValueError(f"expected bias-free layers, got {a.name} / {s.name}")
        if tuple(a.kernel.shape) != tuple(s.kernel.shape):
            raise ValueError(f"kernel shape mismatch {a.name} {tuple(a.kernel.shape)} vs "
                             f"{s.name} {tuple(s.kernel.shape)}")
        s.kernel.assign(a.kernel)
