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


def scan_time(fn, x, initializer):
    """A recurrence over axis 1 of ``x`` ``[B, T, ...]``: ``carry, out = fn(carry, x[:, t])``,
    ``out`` with the shape and dtype of a step of ``x``; ``initializer`` a tensor or a tuple.
    Returns ``(outs [B, T, ...], final carry)``. Only ``out`` is stacked
    (the carry's history is neither kept nor differentiated through a stack). Static ``T <=
    UNROLL_MAX``: Python-unrolled (no while-loop overhead per step), slicing and stacking axis 1
    directly, without transposes (slicing ``x[:, t]`` instead would give O(T^2) gradient
    traffic); longer or unknown ``T``: a ``tf.scan`` on the time-major view."""
    n = x.shape[1]
    if n is None or n > UNROLL_MAX:
        def step(acc, e):
            return fn(acc[0], e)
        xt = to_time_major(x)
        carries, outs = tf.scan(step, xt, initializer=(initializer, tf.zeros_like(xt[0])))
        return to_time_major(outs), tf.nest.map_structure(lambda c: c[-1], carries)
    carry, outs = initializer, []
    for e in tf.unstack(x, axis=1):
        carry, out = fn(carry, e)
        outs.append(out)
    return tf.stack(outs, axis=1), carry


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


class StepLayout:
    """Where the time axis of a time loop's sequences lies, and the per-step reads and writes.

    ``TIME_MAJOR`` (axis 0, ``[T, B, ...]``): writes go to a ``tf.TensorArray``; right for graph
    and XLA loops alike, but a ``[B, T, ...]`` op pays a transpose at each boundary.
    ``BATCH_MAJOR`` (axis 1, ``[B, T, ...]``): writes are ``tensor_scatter_nd_update``s of one
    time column into a preallocated buffer, which XLA performs in place; so an XLA-compiled op
    reads and writes ``[B, T, ...]`` with no transpose. Outside XLA each such write would copy
    the buffer: use ``for_xla(jit)``. Frames (one step) are ``[B, ...]`` in both layouts.
    """

    def __init__(self, axis):
        self.axis = axis

    @staticmethod
    def for_xla(jit):
        """``BATCH_MAJOR`` for a loop XLA compiles (``jit`` True), else ``TIME_MAJOR``."""
        return BATCH_MAJOR if jit else TIME_MAJOR

    def steps(self, x):
        """The number of steps of a sequence (dynamic)."""
        return tf.shape(x)[self.axis]

    def from_batch_major(self, x):
        """``[B, T, ...]`` in this layout."""
        return x if self.axis else to_time_major(x)

    def to_batch_major(self, x):
        """A sequence of this layout as ``[B, T, ...]``."""
        return x if self.axis else to_time_major(x)

    def reader(self, x):
        """``t -> x``'s frame at step ``t``, for use inside a loop (a slice; time-major frames
        are contiguous, so TensorFlow slices them without a copy)."""
        if self.axis:
            return lambda t: x[:, t]
        return lambda t: x[t]

    def buffer(self, frame, n):
        """An empty sequence of ``n`` frames shaped and typed as ``frame`` (a loop variable)."""
        if self.axis:
            s = tf.shape(frame)
            return tf.zeros(tf.concat([s[:1], [n], s[1:]], 0), frame.dtype)
        return tf.TensorArray(frame.dtype, size=n)

    def write(self, buf, t, frame):
        """``buf`` with step ``t`` set to ``frame``."""
        if self.axis:
            b = tf.shape(frame)[0]
            idx = tf.stack([tf.range(b), tf.fill([b], t)], axis=1)
            return tf.tensor_scatter_nd_update(buf, idx, frame)
        return buf.write(t, frame)

    def stack(self, buf):
        """The finished sequence of a ``buffer``."""
        return buf if self.axis else buf.stack()

    def frame(self, x, t):
        """Step ``t`` (static int, e.g. 0 or -1) of a sequence."""
        return x[:, t] if self.axis else x[t]

    def shift_up(self, x):
        """``x(t+1)``, 0 at the last step."""
        if self.axis:
            return tf.concat([x[:, 1:], tf.zeros_like(x[:, :1])], axis=1)
        return tf.concat([x[1:], tf.zeros_like(x[:1])], axis=0)

    def shift_down(self, first, x):
        """``x(t-1)`` with ``first`` (a frame, or broadcastable to one) at ``t = 0``."""
        head = tf.expand_dims(first + tf.zeros_like(self.frame(x, 0)), self.axis)
        rest = x[:, :-1] if self.axis else x[:-1]
        return tf.concat([head, rest], axis=self.axis)

    def add_to_last(self, x, frame):
        """``x`` with ``frame`` added to its last step."""
        if self.axis:
            return tf.concat([x[:, :-1], x[:, -1:] + frame[:, None]], axis=1)
        return tf.concat([x[:-1], x[-1:] + frame[None]], axis=0)


TIME_MAJOR = StepLayout(0)
BATCH_MAJOR = StepLayout(1)
