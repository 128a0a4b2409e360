"""Input encoders (spec §5.9)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.layers import encoders as enc


def _binomial_ok(count, n, p, z=5.0):
    sd = np.sqrt(n * p * (1 - p))
    return np.all(np.abs(count - n * p) <= z * sd + 1e-9)


def test_signed_poisson_rates_and_sign():
    x = np.array([[-1.0, -0.6, -0.25, 0.0, 0.1, 0.5, 0.9, 1.0]], np.float32)
    T, gain = 4000, 0.9
    s = enc.poisson_encode(x, T, gain=gain, signed=True, seed=(3, 4)).numpy()
    assert s.shape == (1, T, 8)
    assert set(np.unique(s)) <= {-1.0, 0.0, 1.0}
    assert np.all(s * np.sign(x)[:, None] >= 0), "sign must be preserved"
    assert np.all(s[..., 3] == 0), "zero input must give no spikes"
    count = np.abs(s).sum(axis=1)[0]
    assert _binomial_ok(count, T, np.clip(gain * np.abs(x[0]), 0, 1))


def test_unsigned_poisson_clips_negative_and_rate():
    x = np.array([[-0.5, 0.0, 0.3, 2.0]], np.float32)
    s = enc.poisson_encode(x, 3000, gain=0.5, strict=True, seed=(1, 1)).numpy()
    assert np.all(s[..., :2] == 0) and set(np.unique(s)) <= {0.0, 1.0}
    assert _binomial_ok(s.sum(axis=1)[0, 2:], 3000, np.array([0.15, 1.0]))


def test_stateless_seed_is_reproducible_and_strict_boundary():
    x = tf.random.stateless_uniform((2, 5), (0, 1), minval=-1, maxval=1)
    a = enc.poisson_encode(x, 10, signed=True, seed=(7, 8))
    b = enc.poisson_encode(x, 10, signed=True, seed=(7, 8))
    c = enc.poisson_encode(x, 10, signed=True, seed=(7, 9))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.any(a.numpy() != c.numpy())
    # u == p fires in Rathi's rule (u <= p) but not in Lee's (p > u)
    x1 = tf.constant([[0.5]])
    u = tf.constant([[[0.5]], [[0.7]]])[None, :, 0]  # [1, 2, 1]
    assert enc.poisson_encode(x1, 2, uniform=u).numpy().ravel().tolist() == [1.0, 0.0]
    assert enc.poisson_encode(x1, 2, strict=True, uniform=u).numpy().ravel().tolist() == [0, 0]


def test_layers_shapes_fresh_draws_and_direct():
    x = tf.fill((3, 4, 4, 2), 0.5)
    layer = enc.SignedPoissonEncoder(20, seed=1)
    y1, y2 = layer(x), layer(x)
    assert y1.shape == (3, 20, 4, 4, 2) and layer.signed
    assert np.any(y1.numpy() != y2.numpy()), "each call draws fresh spikes"
    d = enc.DirectEncoder(7)(x)
    assert d.shape == (3, 7, 4, 4, 2)
    np.testing.assert_array_equal(d.numpy(), np.repeat(x.numpy()[:, None], 7, axis=1))


def test_bad_arguments():
    with pytest.raises(ValueError, match="timesteps"):
        enc.PoissonEncoder(0)
    with pytest.raises(ValueError, match="timesteps"):
        enc.DirectEncoder(2.5)
    with pytest.raises(ValueError, match="gain"):
        enc.PoissonEncoder(5, gain=0)


def test_save_load_roundtrip(tmp_path):
    inp = keras.Input((4,))
    a = enc.PoissonEncoder(6, gain=0.8, strict=True, seed=2, name="p")(inp)
    b = enc.SignedPoissonEncoder(6, gain=0.9, name="sp")(inp)
    c = enc.DirectEncoder(6, name="d")(inp)
    model = keras.Model(inp, keras.layers.Add()([a, b, c]))
    path = tmp_path / "enc.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("p").get_config()["gain"] == 0.8
    assert loaded.get_layer("p").strict and loaded.get_layer("sp").signed
    assert loaded.get_layer("d").timesteps == 6
    assert loaded(np.zeros((2, 4), np.float32)).shape == (2, 6, 4)
