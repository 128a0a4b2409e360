"""Surrogate formulas and the by-name registry (spec §5.1-§5.3)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import surrogates as sg

Z = np.linspace(-3.0, 3.0, 61)  # includes z = 0 exactly


def tape_grad(sur, z, dt=None):
    z = tf.constant(z, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(z)
        s = sur.spike(z, None if dt is None else tf.constant(dt, tf.float64))
    return s.numpy(), tape.gradient(s, z).numpy()


@pytest.mark.parametrize("name", sg.names())
def test_forward_is_strict_heaviside(name):
    sur = sg.get(name)
    s, _ = tape_grad(sur, Z, np.ones_like(Z) if sur.uses_dt else None)
    np.testing.assert_array_equal(s, (Z > 0).astype(float))
    assert s[Z == 0] == 0


def test_stdb_grad_depends_only_on_spike_age():
    sur = sg.get("stdb", alpha=0.3, beta=0.01)
    for dt in [0.0, 1.0, 10.0, 57.0, 1005.0]:
        _, g = tape_grad(sur, Z, np.full_like(Z, dt))
        np.testing.assert_allclose(g, 0.3 * math.exp(-0.01 * dt), rtol=1e-14)
    t = 12.0  # a never-spiked neuron at step t with the -999 sentinel
    _, g = tape_grad(sur, Z[:3], np.full(3, t + 999))
    np.testing.assert_allclose(g, 0.3 * math.exp(-0.01 * (t + 999)), rtol=1e-14)
    with pytest.raises(ValueError, match="needs dt"):
        sur.spike(tf.constant(Z))


@pytest.mark.parametrize("name,params,formula", [
    ("linear", {"gamma": 0.3}, lambda z: 0.3 * np.maximum(0, 1 - np.abs(z))),
    ("triangle", {"gamma": 1.0}, lambda z: np.maximum(0, 1 - np.abs(z))),
    ("fast_sigmoid", {"gamma": 1.0, "slope": 10.0}, lambda z: 1 / (1 + 10 * np.abs(z)) ** 2),
    ("atan", {"alpha": 2.0}, lambda z: 1.0 / (1 + (math.pi * z) ** 2)),
    ("gaussian", {"gamma": 0.5, "sigma": 0.4}, lambda z: 0.5 * np.exp(-z ** 2 / 0.32)),
    ("lee", {"scale": 1.0}, lambda z: (z > 0).astype(float)),
])
def test_z_surrogate_formulas(name, params, formula):
    sur = sg.get(name, **params)
    _, g = tape_grad(sur, Z)
    np.testing.assert_allclose(g, formula(Z), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(sur.grad(tf.constant(Z)).numpy(), formula(Z), rtol=1e-13,
                               atol=1e-15)


def test_lee_spike_derivative_is_gated_by_threshold():
    """``ds/dU = 1[U > theta] / theta`` with ``z = U/theta - 1``; zero on silent steps."""
    theta = 0.8
    u = tf.constant(np.linspace(-1, 2, 31), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(u)
        s = sg.get("lee").spike(u / theta - 1.0)
    g = tape.gradient(s, u).numpy()
    np.testing.assert_allclose(g, (u.numpy() > theta) / theta, rtol=1e-14)


def test_registry_and_errors():
    assert {"stdb", "linear", "triangle", "lee", "fast_sigmoid", "atan", "gaussian"} <= set(
        sg.names())
    assert sg.get("LINEAR") == sg.Linear()
    inst = sg.FastSigmoid(2.0, 5.0)
    assert sg.get(inst) is inst
    with pytest.raises(ValueError, match="unknown surrogate 'relu'.*known"):
        sg.get("relu")
    with pytest.raises(ValueError, match="bad params"):
        sg.get("stdb", gamma=1.0)
    with pytest.raises(ValueError, match="alpha"):
        sg.get("stdb", alpha=-1.0)
    with pytest.raises(TypeError):
        sg.get(3)


@pytest.mark.parametrize("name", sg.names())
def test_serialize_roundtrip(name):
    sur = sg.get(name)
    cfg = sg.serialize(sur)
    back = sg.get(cfg)
    assert back == sur and type(back) is type(sur)
    assert keras.saving.deserialize_keras_object(cfg) == sur


def test_needs_declares_what_grad_reads():
    needs = {n: sg.get(n).needs for n in sg.names()}
    assert (needs["stdb"], needs["lee"], needs["linear"]) == ("spike_age", "spike", "membrane")
    assert set(needs.values()) <= set(sg.NEEDS)
    assert sg.get("stdb").uses_dt and not sg.get("lee").uses_dt and not sg.get("atan").uses_dt
    with pytest.raises(ValueError, match="needs"):
        @sg.register("test_bad_needs")
        class Bad(sg.Surrogate):
            needs = "voltage"
    assert "test_bad_needs" not in sg.names()


def test_register_custom_surrogate():
    @sg.register("test_boxcar")
    class Boxcar(sg.Surrogate):
        def __init__(self, width=0.5):
            self.width = float(width)

        def grad(self, z, spike=None, dt=None):
            return tf.cast(tf.abs(z) < self.width, z.dtype)

        def get_config(self):
            return {"width": self.width}

    _, g = tape_grad(sg.get("test_boxcar", width=1.0), Z)
    np.testing.assert_array_equal(g, (np.abs(Z) < 1.0).astype(float))
    with pytest.raises(ValueError, match="already registered"):
        sg.register("test_boxcar")(Boxcar)


def test_heaviside_matches_comparison_and_keeps_nan():
    """``sign(relu(z))`` equals ``1[z > 0]`` on signed zeros, infinities, denormals and the
    float range, in float32 and float64; NaN stays NaN (a broken membrane is not silenced)."""
    vals = [0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30, 1.0, -1.0, 3e38, -3e38, np.inf, -np.inf]
    for dtype in (tf.float32, tf.float64):
        z = tf.constant(vals + list(np.linspace(-5, 5, 101)), dtype)
        np.testing.assert_array_equal(sg.heaviside(z).numpy(),
                                      tf.cast(z > 0, dtype).numpy())
        assert np.isnan(sg.heaviside(tf.constant([np.nan], dtype)).numpy()).all()
