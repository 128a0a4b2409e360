"""Neuron layers: initial state, stateful streaming, step API, learnable per-channel dynamics,
recording, float64, save / load and the streaming SavedModel (``tfsnn.export.export_stream``)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn.export import export_stream
from tfsnn.layers.neurons import lif as nr

from layers.neurons.test_lif_state import reference  # noqa: E402  (tests/ is on the path)


def _x(shape, seed=0, mean=0.45, dtype="float32"):
    return np.random.default_rng(seed).normal(mean, 0.9, shape).astype(dtype)


def test_stateful_streaming_equals_batch():
    """Chunks through a stateful layer = one call on the whole sequence; reset_states restarts."""
    x = _x((3, 20, 4), 1)
    whole, trace = nr.LIF(0.8, leak=0.9, reset="zero", return_trace=True)(x)
    s = nr.LIF(0.8, leak=0.9, reset="zero", return_trace=True, stateful=True)
    parts = [s(x[:, a:b]) for a, b in [(0, 7), (7, 8), (8, 20)]]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts], 1), whole.numpy())
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts], 1), trace.numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s.state_vars[0].numpy(), trace.numpy()[:, -1], rtol=1e-6)
    s.reset_states()
    np.testing.assert_array_equal(s(x[:, :7])[0].numpy(), whole.numpy()[:, :7])


def test_step_equals_multi_step():
    x = _x((2, 12, 3), 2)
    layer = nr.RathiNeuron(0.7, leak=0.95)
    whole = layer(x).numpy()
    state, outs = None, []
    for t in range(12):
        o, state = layer.step(x[:, t], state)
        outs.append(o.numpy())
    np.testing.assert_array_equal(np.stack(outs, 1), whole)
    st = nr.LIF(0.7, leak=0.95, stateful=True)
    st(x[:, :5])
    outs = [st.step(x[:, t])[0].numpy() for t in range(5, 12)]
    np.testing.assert_array_equal(np.stack(outs, 1), nr.LIF(0.7, leak=0.95)(x).numpy()[:, 5:])


def test_initial_state_and_final_state_of_layer():
    x = _x((2, 9, 3), 3, dtype="float64")
    v0 = _x((2, 3), 4, 0.0, "float64")
    layer = nr.LIF(0.9, leak=0.8, return_state=True, dtype="float64")
    o, v = layer(x, initial_state=v0)
    o_ref, _, v_ref = reference(tf.constant(x), tf.constant(v0), 0.9, 0.8)
    np.testing.assert_array_equal(o.numpy(), o_ref.numpy())
    np.testing.assert_allclose(v.numpy(), v_ref.numpy(), rtol=1e-13)
    assert o.dtype == v.dtype == tf.float64 and layer.theta.dtype == "float64"


def test_learnable_per_channel_dynamics_against_autograd():
    """Trainable per-channel theta and leak (initialised from tau) in a Dense + LIF net."""
    x = tf.constant(_x((3, 15, 5), 5, dtype="float64"))
    dense = keras.layers.Dense(4, use_bias=False, dtype="float64",
                               kernel_initializer=keras.initializers.RandomNormal(0.3, 0.5, 6))
    layer = nr.LIF(1.0, tau=8.0, learn_threshold=True, learn_leak=True, per_channel=True,
                   surrogate="atan", detach_reset=False, dtype="float64")
    layer(dense(x))
    layer.theta.assign([0.8, 1.0, 1.2, 0.9])
    np.testing.assert_allclose(layer.leak_weight.numpy(), math.exp(-1 / 8.0))
    assert {w.name for w in layer.trainable_weights} == {"threshold", "leak"}
    g = tf.constant(np.random.default_rng(7).normal(size=(3, 15, 4)))
    variables = [dense.kernel, layer.theta, layer.leak_weight]

    def grads(fn):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fn(dense(x)) * g)
        return tape.gradient(loss, variables)

    fused = grads(layer)
    ref = grads(lambda i: reference(i, None, layer.theta, layer.leak_weight, surrogate="atan",
                                    detach_reset=False)[0])
    for name, a, b in zip(["kernel", "threshold", "leak"], fused, ref):
        assert np.abs(b.numpy()).max() > 0, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)


def test_default_config_unchanged_and_new_options_roundtrip(tmp_path):
    assert set(nr.LIF().get_config()) == {
        "name", "trainable", "dtype", "threshold", "leak", "reset", "surrogate",
        "fire_before_integrate", "leak_in_grad", "ng_correction", "t_last0", "jit_compile"}
    inp = keras.Input((7, 3))
    h = keras.layers.Dense(4, use_bias=False)(inp)
    h = nr.LIF(0.9, tau=5.0, learn_threshold=True, learn_leak=True, per_channel=True,
               reset="none", detach_reset=False, name="lif")(h)
    o, tr = nr.LIF(0.8, leak=0.9, return_trace=True, name="rec")(h)
    model = keras.Model(inp, [o, tr])
    model.get_layer("lif").theta.assign([0.5, 0.6, 0.7, 0.8])
    x = _x((2, 7, 3), 8)
    y = model(x)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for a, b in zip(y, loaded(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    cfg = loaded.get_layer("lif").get_config()
    assert cfg["per_channel"] and cfg["learn_leak"] and cfg["reset"] == "none"
    assert cfg["detach_reset"] is False


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="either leak"):
        nr.LIF(leak=0.9, tau=3.0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        nr.LIF(tau=0.0)
    with pytest.raises(ValueError, match="stateful=True needs a fixed batch"):
        nr.LIF(stateful=True)(keras.Input((5, 3)))
    with pytest.raises(ValueError, match="initial_state must have 1"):
        nr.LIF(return_state=True)(tf.zeros((1, 3, 2)), initial_state=(tf.zeros((1, 2)),) * 2)
    with pytest.raises(ValueError, match="reset_states"):
        nr.LIF().reset_states()
    with pytest.raises(ValueError, match="learn_leak=True needs leak_in_grad"):
        nr.LeeNeuron(learn_leak=True)


def test_exported_step_signature_reproduces_multi_step(tmp_path):
    B, T, F = 2, 10, 3
    x = _x((B, T, F), 9)
    keras.utils.set_random_seed(0)  # unseeded Dense kernels left the output silent in some runs

    def net(stateful):
        inp = keras.Input((None, F), batch_size=B)
        h = keras.layers.Dense(5, name="d1")(inp)
        h = nr.LIF(0.8, leak=0.9, stateful=stateful, name="n1")(h)
        h = keras.layers.Dense(2, name="d2")(h)
        return keras.Model(inp, nr.LIF(0.5, leak=0.8, stateful=stateful, name="n2")(h))

    batch_model, stream_model = net(False), net(True)
    for name in ("d1", "d2", "n1", "n2"):
        src, dst = batch_model.get_layer(name), stream_model.get_layer(name)
        for a, b in zip(dst.weights, src.weights):
            a.assign(b)
    expect = batch_model(x).numpy()
    assert 0 < expect.mean() < 1
    loaded = tf.saved_model.load(str(export_stream(stream_model, tmp_path / "stream")))
    for _ in range(2):  # reset makes a second pass identical
        got = np.stack([loaded.signatures["step"](frames=tf.constant(x[:, t]))["output"].numpy()
                        for t in range(T)], 1)
        np.testing.assert_array_equal(got, expect)
        loaded.signatures["reset"]()
