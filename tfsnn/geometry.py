"""Convolution geometry: kernel/stride pairs, output lengths, exact fan-out and MAC counts."""
import numpy as np
import tensorflow as tf


def pair(v, name="value"):
    """``v`` (an int or a pair) as a pair of positive ints; a clear error naming ``name`` else."""
    t = (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(i) for i in v)
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return t


def conv_output_length(n, k, s, padding):
    """Output length of a conv/pool over ``n`` inputs (kernel ``k``, stride ``s``, ``"same"`` or
    ``"valid"``); None stays None."""
    if n is None:
        return None
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def conv_fanout(input_hw, kernel_size, strides=1, padding="valid", out_channels=1):
    """Exact fan-out map ``[H, W]`` (int64) of a conv: synapses reached by one input event.

    Computed as the transposed conv of ones (output positions x kernel entries that touch each
    input position) times ``out_channels``.
    """
    h, w = (int(i) for i in input_hw)
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(strides, "strides")
    padding = str(padding).upper()
    ones_in = tf.ones([1, h, w, 1], tf.float64)
    ker = tf.ones([kh, kw, 1, 1], tf.float64)
    out = tf.nn.conv2d(ones_in, ker, [sh, sw], padding)
    fan = tf.nn.conv2d_transpose(tf.ones_like(out), ker, [1, h, w, 1], [sh, sw], padding)
    return np.rint(fan.numpy()[0, :, :, 0]).astype(np.int64) * int(out_channels)


def conv_macs(input_hw, in_channels, kernel_size, strides=1, padding="valid", out_channels=1):
    """Exact MACs of one conv on one image (padding zeros not counted)."""
    return int(conv_fanout(input_hw, kernel_size, strides, padding, out_channels).sum()
               * int(in_channels))
