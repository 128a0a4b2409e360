"""ALIF, CuBa-LIF and recurrent LIF: each fused op against a per-step autograd reference
(spikes, membrane trace, final state, and the gradients of input, initial state and weights)."""
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import ALIF, RLIF, CuBaLIF, alif_sequence, cuba_sequence
from tfsnn.layers.neurons import recurrent_sequence

DT = tf.float64
sd = tf.stop_gradient


def _reset(u, thr, o, reset, detach=True):
    ro = sd(o) if detach else o
    return {"subtract": lambda: u - thr * ro, "zero": lambda: u * (1.0 - ro),
            "none": lambda: u}[reset]()


def ref_alif(x, state, theta, lam, rho, beta, reset, surrogate, detach=True):
    sur = sg.get(surrogate)
    s, a = state
    outs, trace = [], []
    for t in range(x.shape[1]):
        u = lam * s + x[:, t]
        thr = theta + beta * a
        o = sur.spike(u / thr - 1.0)
        s = _reset(u, thr, o, reset, detach)
        a = rho * a + o
        outs.append(o)
        trace.append(s)
    return tf.stack(outs, 1), tf.stack(trace, 1), (s, a)


def ref_cuba(x, state, theta, lam, alpha, reset, surrogate, detach=True):
    sur = sg.get(surrogate)
    j, s = state
    outs, trace = [], []
    for t in range(x.shape[1]):
        j = alpha * j + x[:, t]
        u = lam * s + j
        o = sur.spike(u / theta - 1.0)
        s = _reset(u, theta, o, reset, detach)
        outs.append(o)
        trace.append(s)
    return tf.stack(outs, 1), tf.stack(trace, 1), (j, s)


def ref_rlif(x, w, state, theta, lam, reset, surrogate, detach=True):
    sur = sg.get(surrogate)
    s, o = state
    outs, trace = [], []
    for t in range(x.shape[1]):
        u = lam * s + x[:, t] + tf.matmul(o, w)
        o = sur.spike(u / theta - 1.0)
        s = _reset(u, theta, o, reset, detach)
        outs.append(o)
        trace.append(s)
    return tf.stack(outs, 1), tf.stack(trace, 1), (s, o)


def _case(name, B=3, T=16, N=5):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = tf.constant(rng.normal(0.35, 0.8, (B, T, N)), DT)
    st = tuple(tf.constant(rng.normal(0.1, 0.3, (B, N)), DT) for _ in range(2))
    gs = [tf.constant(rng.normal(size=s), DT) for s in [(B, T, N), (B, T, N), (B, N), (B, N)]]
    return rng, x, st, gs


def _check(fused_fn, ref_fn, x, st, gs, extra_vars=()):
    def run(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, *st])
            o, tr, (e1, e2) = fn()
            loss = sum(tf.reduce_sum(a * g) for a, g in zip((o, tr, e1, e2), gs))
        return (o, tr, e1, e2), tape.gradient(loss, [x, *st, *extra_vars])

    f_out, f_g = run(fused_fn)
    r_out, r_g = run(ref_fn)
    np.testing.assert_array_equal(f_out[0].numpy(), r_out[0].numpy())
    assert 0.05 < f_out[0].numpy().mean() < 0.9
    for a, b in zip(f_out[1:], r_out[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    for k, (a, b) in enumerate(zip(f_g, r_g)):
        assert np.abs(b.numpy()).max() > 0, k
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10, err_msg=str(k))


@pytest.mark.parametrize("reset,surrogate", [("subtract", "linear"), ("zero", "atan")])
def test_alif_matches_reference(reset, surrogate):
    _, x, st, gs = _case(f"alif{reset}")
    kw = dict(theta=0.8, lam=0.9, rho=0.85, beta=0.3, reset=reset, surrogate=surrogate)
    _check(lambda: alif_sequence(x, threshold=0.8, leak=0.9, adapt_decay=0.85, adapt_scale=0.3,
                                 reset=reset, surrogate=surrogate, initial_state=st,
                                 return_trace=True),
           lambda: ref_alif(x, st, **kw), x, st, gs)


@pytest.mark.parametrize("reset,surrogate", [("subtract", "fast_sigmoid"), ("zero", "linear"),
                                             ("none", "gaussian")])
def test_cuba_matches_reference(reset, surrogate):
    _, x, st, gs = _case(f"cuba{reset}")
    x = x * 0.5
    _check(lambda: cuba_sequence(x, threshold=0.9, leak=0.85, current_decay=0.7, reset=reset,
                                 surrogate=surrogate, initial_state=st, return_trace=True),
           lambda: ref_cuba(x, st, 0.9, 0.85, 0.7, reset, surrogate), x, st, gs)


@pytest.mark.parametrize("reset,surrogate", [("subtract", "linear"), ("zero", "atan")])
def test_recurrent_matches_reference(reset, surrogate):
    rng, x, st, gs = _case(f"rlif{reset}")
    st = (st[0], tf.constant((rng.random((3, 5)) < 0.4).astype(float), DT))
    w = tf.Variable(rng.normal(0.0, 0.5, (5, 5)), dtype=DT)
    _check(lambda: recurrent_sequence(x, w, threshold=1.0, leak=0.9, reset=reset,
                                      surrogate=surrogate, initial_state=st, return_trace=True),
           lambda: ref_rlif(x, w, st, 1.0, 0.9, reset, surrogate), x, st, gs, extra_vars=[w])


@pytest.mark.parametrize("cls,kw", [(ALIF, dict(tau_adapt=20.0, adapt_scale=0.2)),
                                    (CuBaLIF, dict(tau_syn=4.0)), (RLIF, {})])
def test_layers_stream_step_and_save(cls, kw, tmp_path):
    """Stateful chunks = one call; step() = multi-step; .keras round trip; float64 kept."""
    rng = np.random.default_rng(5)
    x = rng.normal(0.5, 0.9, (2, 12, 4))
    layer = cls(0.8, tau=6.0, return_trace=True, return_state=True, dtype="float64", **kw)
    o, tr, st = layer(x)
    assert o.dtype == tr.dtype == tf.float64 and len(st) == 2
    streamed = cls(0.8, tau=6.0, stateful=True, dtype="float64", **kw)
    streamed.build((2, None, 4))
    if cls is RLIF:
        streamed.recurrent_kernel.assign(layer.recurrent_kernel)
    parts = [streamed(x[:, :5]), streamed(x[:, 5:])]
    np.testing.assert_array_equal(np.concatenate(parts, 1), o.numpy())
    state, steps = None, []
    for t in range(12):
        s_t, state = layer.step(x[:, t], state)
        steps.append(s_t.numpy())
    np.testing.assert_array_equal(np.stack(steps, 1), o.numpy())
    inp = keras.Input((12, 4), dtype="float64")
    model = keras.Model(inp, layer(inp)[0])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), o.numpy())


def test_bad_arguments_of_new_neurons():
    with pytest.raises(ValueError, match="spike age"):
        ALIF(surrogate="stdb")
    with pytest.raises(ValueError, match="reset must be one of"):
        ALIF(reset="hard")
    with pytest.raises(ValueError, match="either current_decay"):
        CuBaLIF(current_decay=0.5, tau_syn=3.0)
    with pytest.raises(ValueError, match=r"\[batch, time, units\]"):
        RLIF()(tf.zeros((1, 3, 2, 2)))
    with pytest.raises(ValueError, match="initial_state must have 2"):
        ALIF()(tf.zeros((1, 3, 2)), initial_state=tf.zeros((1, 2)))


@pytest.mark.parametrize("which", ["alif", "cuba", "rlif"])
def test_xla_compiled_op_matches_eager(which):
    rng = np.random.default_rng(9)
    x = tf.constant(rng.normal(0.4, 0.8, (2, 70, 5)), DT)
    w = tf.Variable(rng.normal(0, 0.4, (5, 5)), dtype=DT)
    ramp = tf.range(70, dtype=DT)[None, :, None]

    def f(jit):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if which == "alif":
                o, tr, _ = alif_sequence(x, adapt_scale=0.3, return_trace=True, jit_compile=jit)
            elif which == "cuba":
                o, tr, _ = cuba_sequence(x * 0.5, return_trace=True, jit_compile=jit)
            else:
                o, tr, _ = recurrent_sequence(x, w, return_trace=True, jit_compile=jit)
            loss = tf.reduce_sum(o * ramp) + tf.reduce_sum(tr)
        return [o, tr] + [g for g in tape.gradient(loss, [x, w]) if g is not None]

    eager, xla = f(False), tf.function(lambda: f(True))()
    np.testing.assert_array_equal(eager[0].numpy(), xla[0].numpy())
    for a, b in zip(eager[1:], xla[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-9)


def _channel_vars(rng, C=5, **ranges):
    return {k: tf.Variable(rng.uniform(lo, hi, C), dtype=DT) for k, (lo, hi) in ranges.items()}


# (reset, surrogate, detach_reset): every reset, with and without a gradient through it
DYNAMICS = [("subtract", "linear", True), ("zero", "atan", False), ("none", "fast_sigmoid", True),
            ("subtract", "gaussian", False)]


@pytest.mark.parametrize("reset,surrogate,detach", DYNAMICS)
def test_alif_learnable_per_channel_dynamics(reset, surrogate, detach):
    """Per-channel threshold, leak, adaptation decay and scale: gradients vs per-step autograd."""
    rng, x, st, gs = _case(f"alif-dyn{reset}{detach}")
    p = _channel_vars(rng, theta=(0.6, 1.0), lam=(0.8, 0.97), rho=(0.8, 0.95), beta=(0.1, 0.4))
    _check(lambda: alif_sequence(x, threshold=p["theta"], leak=p["lam"], adapt_decay=p["rho"],
                                 adapt_scale=p["beta"], reset=reset, surrogate=surrogate,
                                 initial_state=st, return_trace=True, detach_reset=detach,
                                 param_gradients=True),
           lambda: ref_alif(x, st, p["theta"], p["lam"], p["rho"], p["beta"], reset, surrogate,
                            detach), x, st, gs, extra_vars=list(p.values()))


@pytest.mark.parametrize("reset,surrogate,detach", DYNAMICS)
def test_cuba_learnable_per_channel_dynamics(reset, surrogate, detach):
    """Per-channel threshold, leak and current decay: gradients vs per-step autograd."""
    rng, x, st, gs = _case(f"cuba-dyn{reset}{detach}")
    x = x * 0.5
    p = _channel_vars(rng, theta=(0.7, 1.1), lam=(0.8, 0.97), alpha=(0.5, 0.8))
    _check(lambda: cuba_sequence(x, threshold=p["theta"], leak=p["lam"], current_decay=p["alpha"],
                                 reset=reset, surrogate=surrogate, initial_state=st,
                                 return_trace=True, detach_reset=detach, param_gradients=True),
           lambda: ref_cuba(x, st, p["theta"], p["lam"], p["alpha"], reset, surrogate, detach),
           x, st, gs, extra_vars=list(p.values()))


@pytest.mark.parametrize("reset,surrogate,detach", DYNAMICS)
def test_rlif_learnable_per_channel_dynamics(reset, surrogate, detach):
    """Per-channel threshold and leak (and the kernel): gradients vs per-step autograd."""
    rng, x, st, gs = _case(f"rlif-dyn{reset}{detach}")
    st = (st[0], tf.constant((rng.random((3, 5)) < 0.4).astype(float), DT))
    w = tf.Variable(rng.normal(0.0, 0.5, (5, 5)), dtype=DT)
    p = _channel_vars(rng, theta=(0.8, 1.2), lam=(0.8, 0.97))
    _check(lambda: recurrent_sequence(x, w, threshold=p["theta"], leak=p["lam"], reset=reset,
                                      surrogate=surrogate, initial_state=st, return_trace=True,
                                      detach_reset=detach, param_gradients=True),
           lambda: ref_rlif(x, w, st, p["theta"], p["lam"], reset, surrogate, detach),
           x, st, gs, extra_vars=[w, *p.values()])


def test_scalar_learnable_dynamics_and_no_param_gradients():
    """Scalar trainable threshold / leak get summed gradients; without param_gradients none."""
    rng, x, st, gs = _case("scalar-dyn")
    th, lam = tf.Variable(0.9, dtype=DT), tf.Variable(0.9, dtype=DT)
    _check(lambda: cuba_sequence(x * 0.5, threshold=th, leak=lam, current_decay=0.7,
                                 initial_state=st, return_trace=True, param_gradients=True),
           lambda: ref_cuba(x * 0.5, st, th, lam, 0.7, "subtract", "linear"), x, st, gs,
           extra_vars=[th, lam])
    with tf.GradientTape() as tape:
        o, _, _ = alif_sequence(x, threshold=th, leak=lam)
        loss = tf.reduce_sum(o * gs[0])
    assert tape.gradient(loss, [th, lam]) == [None, None]


@pytest.mark.parametrize("cls,kw", [(ALIF, dict(tau_adapt=20.0, adapt_scale=0.2)),
                                    (CuBaLIF, dict(tau_syn=4.0)), (RLIF, {})])
def test_layers_learn_per_channel_dynamics(cls, kw, tmp_path):
    """learn_threshold / learn_leak / per_channel: trainable [C] weights whose gradients are
    the op's; reset options kept; .keras round trip with the learned values."""
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(0.5, 0.9, (2, 12, 4)), DT)
    layer = cls(0.8, tau=6.0, learn_threshold=True, learn_leak=True, per_channel=True,
                reset="zero", detach_reset=False, dtype="float64", **kw)
    layer.build(x.shape)
    names = sorted(v.name for v in layer.trainable_weights)
    decays = ["adapt_decay"] if cls is ALIF else ["current_decay"] if cls is CuBaLIF else []
    assert names == sorted(["threshold", "leak", *decays]
                           + (["recurrent_kernel"] if cls is RLIF else []))
    assert all(tuple(v.shape) == (4,) for v in layer.trainable_weights if v.ndim == 1)
    layer.theta.assign(tf.constant([0.7, 0.8, 0.9, 1.0], DT))
    g = tf.constant(rng.normal(size=(2, 12, 4)), DT)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * g)
    grads = tape.gradient(loss, layer.trainable_weights)
    dyn = dict(threshold=layer.theta, leak=layer.decay_weights["leak"], reset="zero",
               detach_reset=False, param_gradients=True,
               **{d: layer.decay_weights[d] for d in decays})
    if cls is ALIF:
        dyn["adapt_scale"] = 0.2
    with tf.GradientTape() as tape:
        if cls is RLIF:
            o = recurrent_sequence(x, layer.recurrent_kernel, **dyn)[0]
        else:
            o = (alif_sequence if cls is ALIF else cuba_sequence)(x, **dyn)[0]
        loss = tf.reduce_sum(o * g)
    ref = tape.gradient(loss, layer.trainable_weights)
    for a, b in zip(grads, ref):
        assert np.abs(b.numpy()).max() > 0
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
    inp = keras.Input((12, 4), dtype="float64")
    model = keras.Model(inp, layer(inp))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    cfg = loaded.layers[-1].get_config()
    assert cfg["learn_leak"] and cfg["per_channel"] and cfg["detach_reset"] is False
    np.testing.assert_array_equal(loaded.layers[-1].theta.numpy(), [0.7, 0.8, 0.9, 1.0])
