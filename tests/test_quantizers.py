"""Quantizers: values, rounding ties, no upper clip, straight-through gradients, aliases."""
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import quantizers as q


def grad(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y.numpy(), tape.gradient(y, x).numpy()


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_k_level_matches_numpy_reference(k):
    x = np.linspace(-3, 40, 20001).astype(np.float32)
    want = np.floor(2.0 ** k * np.maximum(x, 0) + 0.5) / 2.0 ** k
    np.testing.assert_array_equal(q.k_level(tf.constant(x), k).numpy(), want)


def test_k_level_ties_round_half_up_and_no_upper_clip():
    x = tf.constant([-1.0, 0.0, 0.49, 0.5, 0.51, 1.5, 2.5, 100.4, 100.5])
    np.testing.assert_array_equal(q.k_level(x, 0).numpy(), [0, 0, 0, 1, 1, 2, 3, 100, 101])
    x1 = tf.constant([0.24, 0.25, 0.74, 0.75, 1.25])  # k=1: step 1/2, ties at odd multiples of 1/4
    np.testing.assert_array_equal(q.k_level(x1, 1).numpy(), [0, 0.5, 0.5, 1.0, 1.5])


def test_k_level_gradient_is_relu_mask():
    x = np.array([-2.0, -0.1, 0.1, 0.5, 3.7, 250.0], np.float32)
    _, g = grad(lambda t: q.k_level(t, 1), x)
    np.testing.assert_array_equal(g, [0, 0, 1, 1, 1, 1])


def test_first_layer_values_ties_and_gradient():
    x = np.array([-1.0, 0.49, 0.5, 1.5, 3.49, 3.5, 4.0, 4.6, 9.0], np.float32)
    y, g = grad(q.first_layer, x)
    np.testing.assert_array_equal(y, [0, 0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 1, 1, 0, 0])  # 1 on (0, 4]
    grid = np.linspace(-2, 8, 5001).astype(np.float32)
    np.testing.assert_array_equal(q.first_layer(grid).numpy(),
                                  np.floor(np.clip(grid, 0, 4) + 0.5))


def test_ternary_values_threshold_and_straight_through_gradient():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 5, 8, 16)).astype(np.float32)
    delta = 0.7 * np.abs(w).mean()
    want = np.where(w > delta, 1, np.where(w < -delta, -1, 0))
    y, g = grad(q.ternary, w)
    np.testing.assert_array_equal(y, want)
    assert set(np.unique(y)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(g, np.ones_like(w))  # identity STE, none through delta
    np.testing.assert_allclose(q.ternary_threshold(w).numpy(), delta, rtol=1e-6)


def test_ternary_boundary_and_idempotence():
    w = tf.constant([-1.0, -0.7, 0.0, 0.7, 1.0, 0.3])  # mean|w| = 0.6166.., delta = 0.4316..
    np.testing.assert_array_equal(q.ternary(w).numpy(), [-1, -1, 0, 1, 1, 0])
    t = q.ternary(tf.constant(np.random.default_rng(1).normal(size=100).astype(np.float32)))
    np.testing.assert_array_equal(q.ternary(t).numpy(), t.numpy())  # delta <= 0.7 < 1
    edge = tf.constant([2.0, 1.0, 0.0, -3.0])  # delta = 1.05: w = delta counts as +1 (sign(1+0))
    np.testing.assert_array_equal(q.ternary(edge, threshold=1.05 / 1.5).numpy(), [1, 0, 0, -1])


def test_aliases_and_serialization():
    assert q.get("ternary") == q.Ternary()
    assert q.get("k_level") == q.KLevel(0)
    assert q.get("k_level:3") == q.KLevel(3)
    assert q.get("first_layer") == q.FirstLayer(4)
    assert q.get(None) is None
    for obj in (q.KLevel(2), q.FirstLayer(3), q.Ternary(0.5)):
        assert q.get(q.serialize(obj)) == obj
    with pytest.raises(ValueError, match="unknown quantizer 'binary'"):
        q.get("binary")
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        q.KLevel(-1)
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        q.k_level(tf.constant(1.0), 0.5)
