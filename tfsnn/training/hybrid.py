"""Hybrid ANN -> SNN conversion and STDB fine-tuning (Rathi et al. 2020; spec §2.1-§2.8, §4.3-§4.4).

1. ``transfer_weights(ann, snn)`` (``tfsnn.snn_models``): the bias-free ReLU ANN's kernels 1:1.
2. ``balance_thresholds(snn, ...)``: spike-based max-input balancing, layer by layer on the SNN
   itself with ``leak = 1`` and dropout off: ``theta_l = max_{t, batch, neurons} I_l(t)`` with the
   layers before ``l`` already balanced, then every ``theta_l *= scale`` (default 0.7).
3. ``compile_for_fine_tuning(snn, ...)`` then ``snn.fit(...)``: BPTT through the neurons'
   surrogate (STDB by default) with Adam(amsgrad) and PyTorch-style *coupled* L2 weight decay;
   thresholds and leak stay fixed.

``convert(ann, snn, images, ...)`` runs 1 and 2. The input spike trains are drawn once and
shared by all layers' passes (the original re-draws them per layer; statistically equivalent).
Each layer's pass re-simulates the network (O(L^2 T) compute, as the original, but one traced
function whose outputs are only the per-layer maxima); memory is bounded by ``batch_size``
(samples per pass), not by the number of images.
"""
import keras
import numpy as np
import tensorflow as tf

from tfsnn import snn_models
from tfsnn.layers import encoders, neurons


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
    snn_models.transfer_weights(ann, snn)
    return balance_thresholds(snn, images=images, sequences=sequences, scale=scale, stat=stat,
                              timesteps=timesteps, batch_size=batch_size, seed=seed)


def step_decay(learning_rate, epochs, steps_per_epoch, reduce=10.0,
               at=(0.6, 0.8, 0.9)):
    """Rathi's schedule: ``lr / reduce`` at floor(0.6 E), floor(0.8 E), floor(0.9 E) epochs."""
    # PiecewiseConstantDecay switches *after* a boundary step; optimizer steps count from 0.
    bounds = sorted({int(f * epochs) * int(steps_per_epoch) - 1 for f in at} - {-1})
    if not bounds:
        return float(learning_rate)
    values = [learning_rate / reduce ** i for i in range(len(bounds) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)


def add_coupled_weight_decay(model, weight_decay):
    """PyTorch-style coupled L2: adds ``0.5 * wd * ||W||^2`` per kernel to the loss, i.e.
    ``wd * W`` to the gradient before Adam's normalisation (Keras' ``weight_decay`` is AdamW)."""
    for layer in snn_models.kernel_layers(model):
        reg = keras.regularizers.L2(0.5 * weight_decay) if weight_decay else None
        layer.kernel_regularizer = reg  # in the layer config: survives save / load
        layer.kernel.regularizer = reg  # active now


def compile_for_fine_tuning(snn, learning_rate=1e-4, weight_decay=5e-4, amsgrad=True,
                            optimizer=None, jit_compile=False):
    """Compile ``snn`` for STDB fine-tuning: Adam(amsgrad), coupled L2, sparse CE on the
    accumulated output (``from_logits``), accuracy. ``learning_rate`` may be a schedule."""
    add_coupled_weight_decay(snn, weight_decay)
    opt = optimizer or keras.optimizers.Adam(learning_rate, amsgrad=amsgrad)
    snn.compile(optimizer=opt,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=jit_compile)
    return snn


def agreement(a, b):
    """Fraction of rows whose argmax agrees."""
    return float(np.mean(np.argmax(np.asarray(a), -1) == np.argmax(np.asarray(b), -1)))
