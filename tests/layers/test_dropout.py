"""SpikeDropout: Keras Dropout semantics from 16-bit random draws."""
import numpy as np
import keras
import pytest
import tensorflow as tf

from tfsnn.layers import SpikeDropout

SHAPE = (40, 25, 501)  # an odd element count: the last 16-bit draw is half of a word


def test_rate_is_quantised_to_1_over_65536():
    assert SpikeDropout(0.3).effective_rate == 19661 / 65536
    assert SpikeDropout(0.5).effective_rate == 0.5
    assert SpikeDropout(0.0).effective_rate == 0.0


def test_inference_and_rate_zero_are_identity():
    x = tf.random.uniform(SHAPE)
    assert np.array_equal(SpikeDropout(0.3)(x, training=False).numpy(), x.numpy())
    assert np.array_equal(SpikeDropout(0.0)(x, training=True).numpy(), x.numpy())


def test_mask_values_rate_and_pair_independence():
    layer = SpikeDropout(0.3, seed=1)
    y = layer(tf.ones(SHAPE), training=True).numpy()
    scale = 1.0 / (1.0 - layer.effective_rate)
    assert set(np.unique(y)) <= {0.0, np.float32(scale)}
    dropped = (y == 0).ravel()
    n = dropped.size
    # binomial: 5 standard deviations of the drop fraction over 501,000 draws is 0.0032
    assert abs(dropped.mean() - 0.3) < 5 * np.sqrt(0.21 / n)
    # the two 16-bit halves of one random word decide neighbouring elements: independent
    both = (dropped[0:-1:2] & dropped[1::2]).mean()
    assert abs(both - 0.09) < 5 * np.sqrt(0.09 * 0.91 / (n // 2))
    assert abs(y.mean() - 1.0) < 0.01  # the expectation is kept


def test_fresh_mask_per_call_and_seeded():
    a, b = SpikeDropout(0.3, seed=7), SpikeDropout(0.3, seed=7)
    x = tf.ones((8, 5, 16))
    first = a(x, training=True).numpy()
    assert np.array_equal(first, b(x, training=True).numpy())  # same seed, same stream
    assert not np.array_equal(first, a(x, training=True).numpy())  # next call, next mask


def test_gradient_is_the_mask():
    layer = SpikeDropout(0.3, seed=3)
    x = tf.random.uniform((4, 6, 10)) + 0.5
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    g = tape.gradient(y, x).numpy()
    assert np.allclose(g * x.numpy(), y.numpy(), rtol=1e-6)  # y = x * mask, dy/dx = mask


def test_refusals():
    with pytest.raises(ValueError, match="noise_shape"):
        SpikeDropout(0.3, noise_shape=(None, 1, 4))
    with pytest.raises(ValueError, match="rate"):
        SpikeDropout(1.0)


def test_keras_round_trip(tmp_path):
    inp = keras.Input((5, 4))
    model = keras.Model(inp, SpikeDropout(0.25, seed=2, name="drop")(inp))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("drop")
    assert isinstance(layer, SpikeDropout) and isinstance(layer, keras.layers.Dropout)
    assert layer.rate == 0.25 and layer.seed == 2
    x = np.random.rand(3, 5, 4).astype("float32")
    assert np.array_equal(loaded(x).numpy(), x)
