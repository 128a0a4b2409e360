"""The time axis of spiking tensors ``[batch, time, ...]`` (tfsnn's convention): folding time
into the batch for stateless ops, the time-major view for recurrences, cumulative sums and padding.
"""
import tensorflow as tf


def batch_time_perm(rank):
    """The permutation swapping axes 0 and 1 of a rank-``rank`` tensor."""
    return [1, 0] + list(range(2, rank))


def to_time_major(x):
    """``[B, T, ...] <-> [T, B, ...]`` (the permutation is its own inverse)."""
    return tf.transpose(x, batch_time_perm(x.shape.rank))


UNROLL_MAX = 32


def time_scan(fn, elems, initializer):
    """``tf.scan(fn, elems, initializer)`` over axis 0 (time-major), Python-unrolled when the
    number of steps is static and <= ``UNROLL_MAX`` (no while-loop overhead per step), else a
    ``tf.scan``. Same results either way; ``initializer`` may be a tensor or a tuple."""
    n = elems.shape[0]
    if n is None or n > UNROLL_MAX:
        return tf.scan(fn, elems, initializer=initializer)
    carry, outs = initializer, []
    for e in tf.unstack(elems):  # (slicing elems[t] would give O(T^2) gradient traffic)
        carry = fn(carry, e)
        outs.append(carry)
    if isinstance(initializer, (tuple, list)):
        return tuple(tf.stack([o[i] for o in outs]) for i in range(len(initializer)))
    return tf.stack(outs)


def cumsum_time(x):
    """Cumulative sum over axis 1 of a float tensor ``[B, t, ...]`` as one matmul with a
    triangular matrix of ones (exact for integer values below 2^24; much faster than
    ``tf.cumsum`` on CPU)."""
    shape = tf.shape(x)
    t = shape[1]
    tri = tf.linalg.band_part(tf.ones(tf.stack([t, t]), x.dtype), -1, 0)  # [t, t] lower
    y = tf.matmul(tri[None], tf.reshape(x, tf.stack([shape[0], t, -1])))
    return tf.reshape(y, shape)


def pad_time(x, timesteps, mode="zeros"):
    """Extend ``[B, t, ...]`` to ``[B, timesteps, ...]`` with zero frames (``mode="zeros"``, for
    spikes) or copies of the last frame (``mode="hold"``, for cumulative quantities)."""
    rest = timesteps - tf.shape(x)[1]
    if mode == "hold":
        last = x[:, -1:]
        reps = tf.concat([[1, rest], tf.ones([tf.rank(x) - 2], tf.int32)], 0)
        return tf.concat([x, tf.tile(last, reps)], axis=1)
    return tf.pad(x, tf.concat([[[0, 0], [0, rest]], tf.zeros([tf.rank(x) - 2, 2], tf.int32)], 0))


def fold_time(x):
    """``[B, T, ...] -> [B*T, ...]``."""
    s = tf.shape(x)
    return tf.reshape(x, tf.concat([[s[0] * s[1]], s[2:]], 0))


def unfold_time(x, b, t=None):
    """``[B*T, ...] -> [B, T, ...]`` for batch size ``b`` and ``t`` steps (default ``B*T // b``;
    pass ``t``, e.g. ``tf.shape(x_in)[1]``, to keep a static T in graphs)."""
    s = tf.shape(x)
    return tf.reshape(x, tf.concat([[b, s[0] // b if t is None else t], s[1:]], 0))


def time_shape(x, timesteps):
    """The shape ``[B, timesteps, ...]`` (int32 tensor) of a sequence of ``x`` ``[B, ...]``."""
    return tf.concat([tf.shape(x)[:1], [timesteps], tf.shape(x)[1:]], axis=0)
