"""Independent references used only by the tests: step-by-step forms of what the library
computes in fused / time-folded form."""
import tensorflow as tf

from tfsnn.conversion import split_snn
from tfsnn.layers.filters import DualExpIIR
from tfsnn.timeaxis import to_time_major


def stepwise_mlp(model, images, training=False):
    """Reference: run an ``snn_mlp_1``/``snn_mlp_2`` (copy encoding, zero states) step by step,
    every layer once per time step on ``[B, features]`` (no time folding). Uses the model's own
    weights; returns the spike-count logits ``[B, classes]``. Dropout draws a fresh mask per
    step and layer when ``training``."""
    layers = {l.name: l for l in model.layers}
    timesteps = layers["synapse1"].held_steps  # the copy encoding: the image held by synapse1
    x = tf.reshape(tf.convert_to_tensor(images, tf.float32), [tf.shape(images)[0], -1])
    syn = [layers[f"synapse{i}"] for i in (1, 2, 3)]
    neu = [layers[f"neuron{i}"] for i in (1, 2, 3)]
    drop = [layers.get(f"dropout{i}") for i in (1, 2)] + [None]
    batch = tf.shape(x)[0]
    states = []
    n_in = x.shape[-1]
    for s, nrn in zip(syn, neu):
        z = tf.zeros([batch, n_in])
        states.append([z, z, tf.zeros([batch, nrn.units])])
        n_in = nrn.units
    count = 0.0
    for _ in range(timesteps):
        h = x
        for k, (s, nrn, d) in enumerate(zip(syn, neu, drop)):
            y1, y2, r = states[k]
            if isinstance(s, DualExpIIR):
                y = s.alpha_1 * y1 + s.alpha_2 * y2 + s.beta_1 * h
            else:
                y = s.alpha * y1 + h
            z = tf.matmul(y, nrn.kernel) + nrn.bias
            spk = nrn.surrogate.spike(z - r - nrn.threshold)
            states[k] = [y, y1, nrn.decay * r + nrn.reset_amp * spk]
            h = d(spk, training=training) if d is not None else spk
        count = count + h
    return count


def signed_counts(levels, num_steps=None):
    """Net counts of the signed dynamic-threshold neuron for target levels ``L_t``.

    ``n_t = n_{t-1} + clip(L_t - n_{t-1}, -1, 1)``, ``n_{-1} = 0``. The count form of
    ``tfsnn.layers.neurons.integer.signed_spikes`` (which the layers use).

    Args:
      levels: int32 ``[B, t_e, ...]``, the target level of frames ``0..t_e-1``; later frames are
        taken equal to the last one (constant membrane).
      num_steps: total ``T >= t_e`` (default ``t_e``).
    Returns:
      int32 net counts ``[B, T, ...]``.
    """
    lev_tm = to_time_major(levels)  # time-major [t_e, B, ...]

    def step(n, lev):
        return n + tf.clip_by_value(lev - n, -1, 1)

    n = tf.scan(step, lev_tm, initializer=tf.zeros_like(lev_tm[0]))
    n = to_time_major(n)  # [B, t_e, ...]
    return n if num_steps is None else _extend_counts(n, levels, num_steps)


def _extend_counts(n, levels, num_steps):
    """Closed-form tail: after the last frame the target is constant and ``n`` moves toward it
    by one per step; returns counts ``[B, num_steps, ...]``."""
    rest = num_steps - tf.shape(n)[1]
    last_n, last_l = n[:, -1:], levels[:, -1:]
    j = tf.range(1, rest + 1, dtype=n.dtype)
    j = tf.reshape(j, tf.concat([[1, -1], tf.ones([tf.rank(n) - 2], tf.int32)], 0))
    tail = last_n + tf.minimum(tf.maximum(last_l - last_n, -j), j)
    return tf.concat([n, tail], axis=1)


def counts_to_spikes(counts):
    """``s_t = n_t - n_{t-1}`` along axis 1 (``n_{-1} = 0``)."""
    return counts - tf.pad(counts[:, :-1], [[0, 0], [1, 0]] + [[0, 0]] * (counts.shape.rank - 2))


def ann_levels(snn, images):
    """The quantized ANN in threshold form, evaluated with the SNN's own weights and thresholds.

    Returns ``(levels, logits)``: ``levels`` a list (encoder first) of int32 ``[B, H, W, C]``
    spike-count targets (``2^k`` x the ANN activations; the encoder's in events x amplitude, i.e.
    also ``2^k a_1``), ``logits`` float32 ``[B, classes]`` (``2^k`` x the ANN's).
    """
    enc, hidden, out = split_snn(snn)
    lev = enc.level(images) * enc.amplitude
    levels = [lev]
    for layer in hidden:
        lev = layer.levels_from_counts(lev)
        levels.append(lev)
    flat = tf.reshape(tf.cast(lev, tf.float32), [tf.shape(lev)[0], -1])
    return levels, tf.matmul(flat, tf.cast(out.kernel, tf.float32))
