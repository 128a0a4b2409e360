"""The general LIF op (initial state, trace, final state with gradient, reset none / with
gradient, trainable per-channel threshold and leak) against a per-step autograd reference."""
import zlib

import numpy as np
import pytest
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import lif as nr

DT = tf.float64


def reference(current, v0=None, threshold=1.0, leak=1.0, reset="subtract", surrogate="linear",
              fire_before_integrate=False, detach_reset=True, leak_in_grad=True):
    """Python loop over t, one per-step surrogate spike, autograd through everything else.
    Returns (spikes [B, T, ...], state trace [B, T, ...], final state [B, ...])."""
    sur = sg.get(surrogate)
    sd = tf.stop_gradient
    v = tf.zeros_like(current[:, 0]) if v0 is None else v0 + tf.zeros_like(current[:, 0])
    t_last = tf.fill(tf.shape(current[:, 0]), tf.constant(-999.0, current.dtype))

    def lk(x):
        return leak * x if leak_in_grad else x + sd((leak - 1.0) * x)

    outs, trace = [], []
    for t in range(current.shape[1]):
        it = current[:, t]
        u = v if fire_before_integrate else lk(v) + it
        o = sur.spike(u / threshold - 1.0, float(t) - t_last if sur.uses_dt else None)
        t_last = tf.where(o > 0, tf.cast(t, current.dtype), t_last)
        ro = sd(o) if detach_reset else o
        w = lk(u) if fire_before_integrate else u
        v = {"subtract": lambda: w - threshold * ro, "zero": lambda: w * (1.0 - ro),
             "none": lambda: w}[reset]()
        if fire_before_integrate:
            v = v + it
        outs.append(o)
        trace.append(v)
    return tf.stack(outs, 1), tf.stack(trace, 1), v


CASES = {
    "subtract": dict(),
    "zero_atan": dict(reset="zero", surrogate="atan"),
    "none_fast_sigmoid": dict(reset="none", surrogate="fast_sigmoid"),
    "subtract_reset_grad": dict(detach_reset=False),
    "zero_reset_grad_gaussian": dict(reset="zero", surrogate="gaussian", detach_reset=False),
    "delayed_stdb": dict(fire_before_integrate=True, surrogate="stdb"),
    "delayed_zero_reset_grad": dict(fire_before_integrate=True, reset="zero",
                                    detach_reset=False),
    "lee_spike": dict(surrogate="lee", reset="zero"),
    "no_leak_grad": dict(leak_in_grad=False),
}


def _inputs(seed, B=3, T=14, C=4):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(0.45, 0.9, (B, T, C)), DT)
    v0 = tf.constant(rng.normal(0.2, 0.5, (B, C)), DT)
    theta = tf.Variable(rng.uniform(0.7, 1.3, C), dtype=DT)
    lam = tf.Variable(rng.uniform(0.8, 0.98, C), dtype=DT)
    gs = [tf.constant(rng.normal(size=s), DT) for s in [(B, T, C), (B, T, C), (B, C)]]
    return x, v0, theta, lam, gs


def _outputs_and_grads(fn, x, v0, theta, lam, g_o, g_tr, g_end):
    """``((spikes, trace, end), [dL/dx, dL/dv0, dL/dtheta, dL/dlam])`` of ``fn()`` for the loss
    ``sum(o*g_o) + sum(trace*g_tr) + sum(end*g_end)``."""
    with tf.GradientTape() as tape:
        tape.watch([x, v0])
        o, trace, end = fn()
        loss = tf.reduce_sum(o * g_o) + tf.reduce_sum(trace * g_tr) + tf.reduce_sum(end * g_end)
    return (o, trace, end), tape.gradient(loss, [x, v0, theta, lam])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_general_op_matches_reference(case, jit):
    """Spikes, trace and final state equal; gradients of input, initial state, per-channel
    threshold and leak within 1e-10 of per-step autograd. ``xla``: the op XLA-compiled inside a
    tf.function (its batch-major layout, ``timeaxis.BATCH_MAJOR``)."""
    kw = CASES[case]
    x, v0, theta, lam, (g_o, g_tr, g_end) = _inputs(zlib.crc32(case.encode()))
    learn_leak = kw.get("leak_in_grad", True)

    def run(fn):
        return _outputs_and_grads(fn, x, v0, theta, lam, g_o, g_tr, g_end)

    def fused():
        return run(lambda: nr.spike_sequence(
            x, initial_state=v0, threshold=theta, leak=lam, return_trace=True,
            return_state=True, param_gradients=True, jit_compile=jit, **kw))

    f_out, f_g = tf.function(fused)() if jit else fused()
    r_out, r_g = run(lambda: reference(x, v0, theta, lam, **kw))
    np.testing.assert_array_equal(f_out[0].numpy(), r_out[0].numpy())
    assert 0.05 < f_out[0].numpy().mean() < 0.9
    for a, b in zip(f_out[1:], r_out[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    for name, a, b in zip(["x", "v0", "theta", "leak"], f_g, r_g):
        if name == "leak" and not learn_leak:
            assert b is None and np.all(a.numpy() == 0)
            continue
        assert np.abs(b.numpy()).max() > 0, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("case", ["subtract", "delayed_zero_reset_grad", "zero_reset_grad_gaussian"])
def test_two_calls_equal_one_call(case):
    """State carried across two calls = one call on the concatenated sequence: spikes, traces,
    final state and every gradient (truncated BPTT without truncation)."""
    kw = CASES[case]
    x, v0, theta, lam, (g_o, g_tr, g_end) = _inputs(7, T=16)
    common = dict(threshold=theta, leak=lam, return_trace=True, return_state=True,
                  param_gradients=True, **kw)

    def loss_of(o, trace, end):
        return (tf.reduce_sum(o * g_o) + tf.reduce_sum(trace * g_tr)
                + tf.reduce_sum(end * g_end))

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, v0])
        one = nr.spike_sequence(x, initial_state=v0, **common)
        l1 = loss_of(*one)
        a = nr.spike_sequence(x[:, :9], initial_state=v0, **common)
        b = nr.spike_sequence(x[:, 9:], initial_state=a[2], **common)
        two = (tf.concat([a[0], b[0]], 1), tf.concat([a[1], b[1]], 1), b[2])
        l2 = loss_of(*two)
    for p, q in zip(one, two):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-13, atol=1e-13)
    for p, q in zip(tape.gradient(l1, [x, v0, theta, lam]), tape.gradient(l2, [x, v0, theta, lam])):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_general_path_equals_legacy_path(jit):
    """With the initial state at 0, the general op gives the legacy op's spikes and gradients
    (``xla``: both XLA-compiled in a tf.function, so in the batch-major layout)."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(0.4, 1.0, (2, 20, 5)), DT)
    g = tf.constant(rng.normal(size=(2, 20, 5)), DT)
    for kw in (dict(leak=0.9), dict(leak=0.95, reset="zero", surrogate="atan"),
               dict(fire_before_integrate=True, surrogate="stdb"),
               dict(leak=0.99, reset="zero", surrogate="lee", leak_in_grad=False,
                    ng_correction=True)):
        outs = []
        for extra in ({}, {"initial_state": tf.zeros((2, 5), DT)}):
            def f():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    o = nr.spike_sequence(x, jit_compile=jit, **kw, **extra)
                    loss = tf.reduce_sum(o * g)
                return o, tape.gradient(loss, x)

            o, dx = tf.function(f)() if jit else f()
            outs.append((o.numpy(), dx.numpy()))
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
        np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-14)


def test_xla_general_op_matches_eager():
    x, v0, theta, lam, (g_o, g_tr, g_end) = _inputs(11, T=70)

    def f(jit):
        with tf.GradientTape() as tape:
            tape.watch([x, v0])
            o, tr, end = nr.spike_sequence(x, initial_state=v0, threshold=theta, leak=lam,
                                           return_trace=True, return_state=True,
                                           param_gradients=True, jit_compile=jit)
            loss = tf.reduce_sum(o * g_o) + tf.reduce_sum(tr * g_tr)
        return [o, tr, end] + tape.gradient(loss, [x, v0, theta, lam])

    eager, xla = f(False), tf.function(lambda: f(True))()
    np.testing.assert_array_equal(eager[0].numpy(), xla[0].numpy())
    for a, b in zip(eager[1:], xla[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-9)


def test_bad_general_arguments():
    x = tf.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="return_membrane"):
        nr.spike_sequence(x, return_membrane=True, return_state=True)
    with pytest.raises(ValueError, match="reset must be one of"):
        nr.spike_sequence(x, reset="hard")
    with pytest.raises(ValueError, match="ng_correction needs a float leak"):
        nr.NeuronParams(leak=tf.constant(0.9), ng_correction=True)


@pytest.mark.parametrize("case", ["subtract", "zero_reset_grad_gaussian", "delayed_stdb",
                                  "none_fast_sigmoid"])
def test_general_op_without_param_gradients(case):
    """param_gradients=False (the benchmark's path: constant recursion factor, no threshold /
    leak gradient computed): input and initial-state gradients still equal per-step autograd,
    and the threshold / leak receive none."""
    kw = CASES[case]
    x, v0, theta, lam, (g_o, g_tr, g_end) = _inputs(zlib.crc32(case.encode()) + 1)

    def run(fn):
        out, grads = _outputs_and_grads(fn, x, v0, theta, lam, g_o, g_tr, g_end)
        return out[0], grads

    f_o, f_g = run(lambda: nr.spike_sequence(x, initial_state=v0, threshold=theta, leak=lam,
                                             return_trace=True, return_state=True, **kw))
    r_o, r_g = run(lambda: reference(x, v0, tf.stop_gradient(theta), tf.stop_gradient(lam),
                                     **kw))
    np.testing.assert_array_equal(f_o.numpy(), r_o.numpy())
    assert f_g[2:] == [None, None]
    for a, b in zip(f_g[:2], r_g[:2]):
        assert np.abs(b.numpy()).max() > 0
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10)
