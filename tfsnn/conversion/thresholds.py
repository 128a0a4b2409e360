"""Integer and float thresholds of the integer SNN's neurons, derived from a quantized ANN's
``QuantActivation`` (BatchNorm -> ReLU -> quantizer) layers (see ``tfsnn.conversion.integer``).

* ``int_thresholds``: per channel, the smallest integer membrane whose level under the Keras
  layer itself (float32) reaches each level, by bisection: exact by construction.
* ``float_thresholds``: the analytic float64 thresholds.
* ``encoder_thresholds``: the first (full-precision) layer's thresholds over float32 values.
"""
import numpy as np
import tensorflow as tf

INT_NEVER, INT_ALWAYS = np.iinfo(np.int32).max, np.iinfo(np.int32).min


_INT_BOUND = 2 ** 24 - 1  # |V| range of the integer bisection (float32-exact integers)


def _bn_params(act):
    """``(gamma, beta, mean, var, eps)`` float64 arrays of a QuantActivation's BN."""
    bn = act.bn
    mean = np.asarray(bn.moving_mean, np.float64)
    gamma = np.ones_like(mean) if bn.gamma is None else np.asarray(bn.gamma, np.float64)
    beta = np.zeros_like(mean) if bn.beta is None else np.asarray(bn.beta, np.float64)
    return gamma, beta, mean, np.asarray(bn.moving_variance, np.float64), float(bn.epsilon)


def _input_rank(act):
    """Rank of the layer's input in its model (4 if it was never called in one)."""
    try:
        return len(act.input.shape)
    except (AttributeError, ValueError):
        return 4


def _keras_levels(act, z, scale):
    """``scale * act(z)`` of the Keras layer in float32, for ``z [N, C]``; float64 ``[N, C]``."""
    rank = _input_rank(act)
    probe = z[None, :, None, :] if rank == 4 else z.reshape([1] * (rank - 2) + list(z.shape))
    a = act(tf.constant(probe, tf.float32), training=False)
    return np.asarray(a, np.float64).reshape(z.shape) * scale


def _bisect(level_fn, lo, hi, num_levels, channels):
    """Smallest key ``x`` in ``[lo, hi]`` with ``level_fn(x)[m-1, c] >= m``, per (m, c).

    ``level_fn``: int64 keys ``[M, C]`` -> levels ``[M, C]``, non-decreasing in the key.
    Returns int64 ``[M, C]``: ``hi + 1`` where no key reaches level m.
    """
    m = np.arange(1, num_levels + 1, dtype=np.float64)[:, None]
    a = np.full((num_levels, channels), lo - 1, np.int64)  # level(a) < m (virtual)
    b = np.full((num_levels, channels), hi + 1, np.int64)  # level(b) >= m (virtual)
    while np.any(b - a > 1):
        mid = a + (b - a) // 2
        ok = level_fn(mid) >= m
        a, b = np.where(ok, a, mid), np.where(ok, mid, b)
    return b


def int_thresholds(act, k, num_levels, flip):
    """Exact integer thresholds ``[C, num_levels]`` int32 of a hidden layer (membrane units).

    ``theta_m`` = min integer ``V`` (of the sign-folded membrane) with Keras level ``>= m``.
    """
    c = flip.shape[0]
    sign = np.where(flip, -1.0, 1.0)
    scale = 2.0 ** k

    def level_fn(v):  # v: integer membrane keys [M, C]
        return _keras_levels(act, (sign * v / scale).astype(np.float32), scale)

    lo = level_fn(np.full((1, c), -_INT_BOUND, np.int64))
    hi = level_fn(np.full((1, c), _INT_BOUND, np.int64))
    if np.any(lo > hi):
        bad = int(np.argmax((lo > hi)[0]))
        raise ValueError(f"tfsnn.convert: {act.name!r} channel {bad} is not monotone after sign "
                         "folding (gamma and the Keras BN disagree)")
    th = _bisect(level_fn, -_INT_BOUND, _INT_BOUND, num_levels, c)
    th = np.where(th > _INT_BOUND, INT_NEVER, np.where(th <= -_INT_BOUND, INT_ALWAYS, th))
    return th.T.astype(np.int32)


def float_thresholds(act, k, num_levels, flip):
    """Analytic thresholds ``[C, num_levels]`` float64 of a hidden layer (docs/specs/all_int_snn.md §6.4)."""
    gamma, beta, mean, var, eps = _bn_params(act)
    s = 2.0 ** k
    sigma = np.sqrt(var + eps)
    m = np.arange(1, num_levels + 1, dtype=np.float64)[None, :]
    g = np.abs(gamma)[:, None]
    mu = np.where(flip, -mean, mean)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        th = s * mu + (m - 0.5 - s * beta[:, None]) * sigma[:, None] / g
    q0 = np.floor(s * np.maximum(beta, 0.0) + 0.5)[:, None]  # gamma == 0: constant level
    const = np.where(m <= q0, -np.inf, np.inf)
    return np.where(gamma[:, None] == 0, const, th)


def _f32_to_key(f):
    b = np.asarray(f, np.float32).view(np.int32).astype(np.int64)
    return np.where(b >= 0, b, -(b & 0x7FFFFFFF))


def _key_to_f32(key):
    key = np.asarray(key, np.int64)
    bits = np.where(key >= 0, key, (-key) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def encoder_thresholds(act, levels):
    """Exact float32 thresholds ``[C, levels]`` of the encoder, and the sign-fold mask ``[C]``.

    ``theta_m`` = the smallest float32 ``z`` (of the sign-folded conv output) whose Keras
    first-layer level is ``>= m``; ``+inf`` / ``-inf`` for never / always.
    """
    gamma = _bn_params(act)[0]
    flip = gamma < 0
    c = gamma.shape[0]
    sign = np.where(flip, -1.0, 1.0).astype(np.float32)
    fmax = np.finfo(np.float32).max
    lo, hi = int(_f32_to_key(-fmax)), int(_f32_to_key(fmax))

    def level_fn(key):
        return _keras_levels(act, sign * _key_to_f32(key), 1.0)

    th = _bisect(level_fn, lo, hi, levels, c)
    val = np.where(th > hi, np.inf, np.where(th <= lo, -np.inf, _key_to_f32(np.minimum(th, hi))))
    return val.T.astype(np.float32), flip


def neuron_thresholds(act, scale, num_levels, min_level=0, rank=4):
    """Exact integer thresholds ``[C, num_levels]`` int32 and signs ``[C]`` int32 of any
    ``QuantActivation`` (BN or not, signed or not) fed by an integer membrane ``V``.

    The Keras layer sees ``z = V * scale`` (``scale = 2^-k / area``, a power of two, so the
    product is exact in float32) and its level is ``2^k * act(z)``; ``L(V) = min_level +
    #{m: sign * V >= theta_m}`` equals it for every ``|V| <= 2^24`` (``sign`` = -1 where the
    BN's gamma < 0, the level then decreasing in ``V``). ``rank``: the rank of the layer's real
    input (the probe has the same rank, so Keras runs the same ops).
    """
    c = int(act.input.shape[-1]) if hasattr(act, "input") else None
    gamma = _bn_params(act)[0] if act.bn is not None else np.ones(c)
    c = gamma.shape[0]
    sign = np.where(gamma < 0, -1.0, 1.0)
    unit = 2.0 ** act.quantizer.k

    def level_fn(v):  # integer keys [M, C] -> levels [M, C]
        z = (sign * v * scale).astype(np.float32)
        shape = [1] * (rank - 2) + list(z.shape)
        a = act(tf.constant(z.reshape(shape)), training=False)
        return np.asarray(a, np.float64).reshape(z.shape) * unit - min_level

    lo = level_fn(np.full((1, c), -_INT_BOUND, np.int64))
    hi = level_fn(np.full((1, c), _INT_BOUND, np.int64))
    if np.any(lo > hi):
        bad = int(np.argmax((lo > hi)[0]))
        raise ValueError(f"tfsnn.convert: {act.name!r} channel {bad} is not monotone after sign "
                         "folding")
    th = _bisect(level_fn, -_INT_BOUND, _INT_BOUND, num_levels, c)
    th = np.where(th > _INT_BOUND, INT_NEVER, np.where(th <= -_INT_BOUND, INT_ALWAYS, th))
    return th.T.astype(np.int32), sign.astype(np.int32)
