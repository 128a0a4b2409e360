"""Neuron layers: the fused custom-gradient op vs a per-step autograd reference (spec §5.4-§5.8)."""
import dataclasses
import math
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import surrogates as sg
from tfsnn.layers.neurons import lif as nr
from tfsnn.layers.readouts import LeakyMeanReadout, SumReadout
from tfsnn.layers.sequence import TimeConstantDropout

DT = tf.float64


# ----------------------------------------------------------------- per-step autograd reference

def reference_spikes(current, threshold=1.0, leak=1.0, reset="subtract", surrogate="linear",
                     fire_before_integrate=False, leak_in_grad=True, ng_correction=False,
                     t_last0=-999.0):
    """The obvious implementation: a Python loop over t, one per-step custom-gradient spike,
    detached reset, autograd through everything else (Lee's hook emulated after the loop)."""
    sur = sg.get(surrogate)
    sd = tf.stop_gradient
    b_shape = tf.shape(current[:, 0])
    v = tf.zeros(b_shape, current.dtype)
    t_last = tf.fill(b_shape, tf.cast(t_last0, current.dtype))

    def leak_op(x):
        return leak * x if leak_in_grad else x + sd((leak - 1.0) * x)

    outs = []
    for t in range(current.shape[1]):
        it = current[:, t]
        u = v if fire_before_integrate else leak_op(v) + it
        z = u / threshold - 1.0
        dt = float(t) - t_last
        o = sur.spike(z, dt if sur.uses_dt else None)
        t_last = tf.where(o > 0, tf.cast(t, current.dtype), t_last)
        if fire_before_integrate:
            lu = leak_op(u)
            v = (lu * (1.0 - sd(o)) if reset == "zero" else lu - threshold * sd(o)) + it
        else:
            v = u * (1.0 - sd(o)) if reset == "zero" else u - threshold * sd(o)
        outs.append(o)
    o = tf.stack(outs, axis=1)
    if ng_correction:  # backward hook: dL/do(t) *= NG, NG from the forward spikes
        ng = tf.expand_dims(nr.lee_ng(sd(o), leak), 1)
        o = sd(o) + ng * (o - sd(o))
    return o, v


VARIANTS = {
    "if_linear": dict(surrogate="linear"),
    "lif_fast_sigmoid": dict(surrogate=sg.get("fast_sigmoid", gamma=0.5, slope=4.0)),
    "lif_zero_atan": dict(reset="zero", surrogate="atan"),
    "lif_zero_gaussian_noleakgrad": dict(reset="zero", surrogate="gaussian", leak_in_grad=False),
    "rathi_stdb": dict(fire_before_integrate=True, surrogate=sg.get("stdb", alpha=0.3, beta=0.05)),
    "rathi_linear": dict(fire_before_integrate=True, surrogate="linear"),
    "rathi_zero_stdb": dict(fire_before_integrate=True, reset="zero", surrogate="stdb"),
    "lee": dict(reset="zero", surrogate="lee", leak_in_grad=False, ng_correction=True),
    "lee_subtract_leakgrad": dict(surrogate="lee", ng_correction=True),
}


def _net(neuron_fn, x, w1, w2, ws, w3, m1, theta):
    """x -> Dense -> neuron -> dropout(m1) -> Dense (+ shortcut Dense of x) -> neuron -> sum readout."""
    o1 = neuron_fn(tf.einsum("btf,fn->btn", x, w1), theta[0]) * m1
    i2 = tf.einsum("btn,nm->btm", o1, w2) + tf.einsum("btf,fm->btm", x, ws)
    o2 = neuron_fn(i2, theta[1])
    logits = tf.reduce_sum(tf.einsum("btm,mk->btk", o2, w3), axis=1)
    return o1, o2, logits


@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_matches_per_step_reference(variant, leak):
    _compare_with_reference(variant, leak, graph=False)


@pytest.mark.parametrize("variant", ["rathi_stdb", "lee", "lif_zero_atan", "if_linear"])
def test_fused_in_graph_with_xla_matches_reference(variant):
    """Under tf.function with jit_compile=True the op's loops are XLA-compiled functions."""
    _compare_with_reference(variant, 0.9, graph=True)


def test_trace_does_not_read_source(monkeypatch):
    """The op traces as plain Python: lif.py edited on disk after import (here: its lines seen
    two lines lower, as after an edit above them) cannot change it. With AutoGraph converting
    the op, the trace re-read the shifted source and built ``forward`` from the wrong lines (the
    once-failed full-suite run of the XLA test above, while the file was being edited)."""
    import linecache
    real = linecache.getlines

    def shifted(filename, *args, **kwargs):
        lines = real(filename, *args, **kwargs)
        return ["# edited\n", "# above\n"] + lines if filename == nr.__file__ else lines

    monkeypatch.setattr(linecache, "getlines", shifted)
    i = tf.random.stateless_normal((2, 8, 3), seed=(3, 4), dtype=DT) + 0.5
    kw = dict(VARIANTS["rathi_stdb"], leak=0.9)
    f = tf.function(lambda i: nr.spike_sequence(i, jit_compile=True, **kw) * 1.0)
    np.testing.assert_array_equal(f(i).numpy(), reference_spikes(i, **kw)[0].numpy())


def _compare_with_reference(variant, leak, graph):
    kw = dict(VARIANTS[variant], leak=leak)
    rng = np.random.default_rng(zlib.crc32(f"{variant}{leak}".encode()))  # per-case draw
    B, T, F, N, M, K = 4, 16, 7, 6, 5, 3
    x = tf.constant(np.sign(rng.normal(size=(B, T, F))) * (rng.random((B, T, F)) < 0.5), DT)
    ws = [tf.Variable(rng.normal(mu, s, shape), dtype=DT) for mu, s, shape in
          [(0.3, 0.8, (F, N)), (0.3, 0.8, (N, M)), (0.0, 0.4, (F, M)), (0.0, 1.0, (M, K))]]
    m1 = tf.constant((rng.random((B, 1, N)) > 0.3) / 0.7, DT)  # dropout mask, fixed over time
    c = tf.constant(rng.normal(size=(B, K)), DT)
    theta = (1.0, 0.7)

    def run(neuron_fn):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            o1, o2, logits = _net(neuron_fn, x, *ws, m1, theta)
            loss = tf.reduce_sum(logits * c) + tf.reduce_sum(tf.square(logits)) * 0.01
        return (o1, o2, logits), tape.gradient(loss, ws + [x])

    fused = run if not graph else tf.function(run)
    (f_out, f_grad) = fused(
        lambda i, th: nr.spike_sequence(i, threshold=th, jit_compile=graph, **kw))
    (r_out, r_grad) = run(lambda i, th: reference_spikes(i, th, **kw)[0])
    for a, b in zip(f_out, r_out):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for o in f_out[:2]:
        assert 0.02 < (o.numpy() > 0).mean() < 0.95, "test network should fire moderately"
    for name, a, b in zip(["w1", "w2", "ws", "w3", "x"], f_grad, r_grad):
        assert np.abs(b.numpy()).max() > 0, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)


def test_layer_equals_op_and_final_membrane():
    rng = np.random.default_rng(1)
    i = tf.constant(rng.normal(0.3, 1.0, (2, 12, 4)), DT)
    layer = nr.LIF(threshold=0.8, leak=0.95, reset="zero", surrogate="atan", dtype="float64")
    o, v = layer(i, return_membrane=True)
    o_ref, v_ref = reference_spikes(i, 0.8, 0.95, "zero", "atan")
    np.testing.assert_array_equal(o.numpy(), o_ref.numpy())
    np.testing.assert_allclose(v.numpy(), v_ref.numpy(), rtol=1e-12)


def test_graph_mode_and_unknown_batch():
    layer = nr.RathiNeuron(dtype="float32")
    f = tf.function(lambda i: layer(i), input_signature=[tf.TensorSpec([None, None, 3])])
    i = tf.random.stateless_normal((2, 9, 3), seed=(1, 2)) + 0.5
    np.testing.assert_array_equal(f(i).numpy(), layer(i).numpy())


def test_xla_compiles_and_matches():
    x = tf.random.stateless_normal((3, 20, 4), seed=(4, 5)) + 0.4
    t = tf.range(20, dtype=tf.float32)[None, :, None]
    for kw in (dict(fire_before_integrate=True, surrogate="stdb"),
               dict(leak=0.99, reset="zero", surrogate="lee", leak_in_grad=False,
                    ng_correction=True)):
        def f(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                o = nr.spike_sequence(x, **kw)
                loss = tf.reduce_sum(o * t)
            return o, tape.gradient(loss, x)
        (o1, g1), (o2, g2) = tf.function(f)(x), tf.function(f, jit_compile=True)(x)
        np.testing.assert_array_equal(o1.numpy(), o2.numpy())
        np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-5, atol=1e-4)


def test_conv_shaped_input():
    rng = np.random.default_rng(2)
    i = tf.constant(rng.normal(0.5, 1.0, (2, 6, 3, 3, 2)), DT)
    o = nr.spike_sequence(i, threshold=1.0, leak=0.9, reset="subtract", surrogate="linear")
    o_ref, _ = reference_spikes(i, 1.0, 0.9, "subtract", "linear")
    np.testing.assert_array_equal(o.numpy(), o_ref.numpy())


# ----------------------------------------------------------------- Rathi properties (§5.6)

def test_rathi_delay_and_last_step_gradient():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(1.0, 1.0, (3, 10, 4)), DT)
    with tf.GradientTape() as tape:
        tape.watch(x)
        kw = dict(threshold=0.5, fire_before_integrate=True, surrogate="stdb")
        o1 = nr.spike_sequence(x, **kw)
        o2 = nr.spike_sequence(o1 * 2.0, **kw)
        o3 = nr.spike_sequence(o2 * 2.0, **kw)
        loss = tf.reduce_sum(o1) + tf.reduce_sum(o2) + tf.reduce_sum(o3)
    g = tape.gradient(loss, x).numpy()
    for k, o in enumerate([o1, o2, o3], start=1):
        assert np.all(o.numpy()[:, :k] == 0), f"layer {k} fired before t={k}"
        assert o.numpy()[:, k:].sum() > 0
        assert np.all(o.numpy().sum(axis=1) <= 10 - 1)
    assert np.all(g[:, -1] == 0) and np.abs(g[:, :-1]).max() > 0


def test_rathi_charge_conservation():
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(0.3, 1.0, (3, 30, 5)), DT)
    o, v = nr.spike_sequence(x, threshold=0.7, leak=1.0, fire_before_integrate=True,
                             surrogate="stdb", return_membrane=True)
    expect = x.numpy().sum(axis=1) - 0.7 * o.numpy().sum(axis=1)
    np.testing.assert_allclose(v.numpy(), expect, rtol=1e-12, atol=1e-12)


def test_stdb_gradient_uses_spike_age():
    """Single neuron: g only at step 5; dL/dI(t) = alpha*exp(-beta*dt(5))/theta for t < 5."""
    i = np.zeros((1, 8, 1))
    i[0, 1, 0] = 2.0  # fires at t=2 (delay), never again -> dt(5) = 3
    i = tf.constant(i, DT)
    up = np.zeros((1, 8, 1))
    up[0, 5, 0] = 1.0
    with tf.GradientTape() as tape:
        tape.watch(i)
        o = nr.spike_sequence(i, threshold=1.5, fire_before_integrate=True,
                              surrogate=sg.get("stdb", alpha=0.3, beta=0.01))
        loss = tf.reduce_sum(o * up)
    np.testing.assert_array_equal(o.numpy()[0, :, 0], [0, 0, 1, 0, 0, 0, 0, 0])
    g = tape.gradient(loss, i).numpy()[0, :, 0]
    expect = 0.3 * math.exp(-0.01 * 3) / 1.5
    np.testing.assert_allclose(g[:5], expect, rtol=1e-12)
    assert np.all(g[5:] == 0)


# ----------------------------------------------------------------- Lee properties (§5.5, §5.7)

def test_lee_reset_to_zero_and_spike_rule():
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(0.4, 0.8, (2, 40, 3)), DT)
    o = nr.spike_sequence(x, threshold=1.0, leak=0.99, reset="zero", surrogate="lee").numpy()
    xn, u, r = x.numpy(), np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(40):
        u = 0.99 * r + xn[:, t]
        np.testing.assert_array_equal(o[:, t], (u > 1.0).astype(float))
        r = np.where(u > 1.0, 0.0, u)


def test_lee_ng_bounds():
    lam, T = 0.99, 20
    o = np.zeros((4, T, 1))
    o[1, T - 1] = 1          # single spike at the last step
    o[2, [0, 5, 9]] = 1
    o[3, 0] = 1              # single spike at the first step
    ng = nr.lee_ng(tf.constant(o, DT), lam).numpy()[:, 0]
    assert ng[0] == 0
    np.testing.assert_allclose(ng[1], 1 + math.log(lam), rtol=1e-12)
    np.testing.assert_allclose(ng[3], 1 + math.log(lam) * lam ** (T - 1), rtol=1e-12)
    assert 1 + math.log(lam) <= ng[2] <= 1 + math.log(lam) * lam ** (T - 1)
    np.testing.assert_allclose(nr.lee_ng(tf.constant(o * 1.7, DT), lam).numpy()[:, 0], ng)


def test_lee_gradient_window_and_silent_neuron():
    """A spike at t_k credits exactly the inputs in (t_{k-1}, t_k]; a silent neuron gets 0."""
    i = np.zeros((1, 10, 2))
    i[0, [2, 3, 6], 0] = 0.6   # U(3)=0.6*0.99+0.6>1 -> spike at 3; U(6)=0.6 no spike
    i[0, 7, 0] = 0.5           # U(7)=0.99*0.6+0.5>1 -> spike at 7
    i[0, :, 1] = 0.01          # never fires
    i = tf.constant(i, DT)
    with tf.GradientTape() as tape:
        tape.watch(i)
        o = nr.spike_sequence(i, threshold=1.0, leak=0.99, reset="zero", surrogate="lee",
                              leak_in_grad=False, ng_correction=True)
        loss = tf.reduce_sum(o)
    np.testing.assert_array_equal(np.nonzero(o.numpy()[0, :, 0])[0], [3, 7])
    g = tape.gradient(loss, i).numpy()[0]
    ng = nr.lee_ng(o, 0.99).numpy()[0, 0]
    np.testing.assert_allclose(g[:8, 0], np.full(8, ng), rtol=1e-12)
    assert np.all(g[8:, 0] == 0) and np.all(g[:, 1] == 0)


# ----------------------------------------------------------------- dropout and readouts (§5.8)

def test_dropout_mask_constant_over_time():
    layer = TimeConstantDropout(0.4, seed=3)
    x = tf.ones((5, 12, 4, 4, 3))
    y1 = layer(x, training=True).numpy()
    y2 = layer(x, training=True).numpy()
    zero1 = y1 == 0
    assert np.all(zero1 == zero1[:, :1]), "mask must be the same at every step"
    assert 0.2 < zero1.mean() < 0.6
    assert set(np.unique(y1)) <= {0.0, np.float32(1 / 0.6)}
    assert np.any(zero1 != (y2 == 0)), "a new call draws a new mask"
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())


def test_readouts():
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(2, 5, 3)), DT)
    np.testing.assert_allclose(SumReadout(dtype="float64")(x).numpy(), x.numpy().sum(1))
    lam = 0.9
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = LeakyMeanReadout(lam, dtype="float64")(x)
    w = lam ** (5 - np.arange(5))
    np.testing.assert_allclose(y.numpy(), (x.numpy() * w[None, :, None]).sum(1) / 5, rtol=1e-12)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), np.full((2, 5, 3), 0.2))


# ----------------------------------------------------------------- config and save / load

def test_bad_arguments():
    with pytest.raises(ValueError, match="reset"):
        nr.LIF(reset="soft")
    with pytest.raises(ValueError, match="leak"):
        nr.LIF(leak=1.5)
    with pytest.raises(ValueError, match="threshold"):
        nr.LIF(threshold=0.0)
    with pytest.raises(ValueError, match="unknown surrogate"):
        nr.LIF(surrogate="sigmoidish")
    with pytest.raises(ValueError, match="IF has no leak"):
        nr.IF(leak=0.9)
    with pytest.raises(ValueError, match="rate"):
        TimeConstantDropout(1.0)


def test_neuron_params_and_layer_defaults():
    p = nr.NeuronParams(threshold=0.5, surrogate="stdb", fire_before_integrate=True)
    assert p.surrogate == sg.STDB() and p.leak == 1.0 and p.reset == "subtract"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.leak = 0.9
    with pytest.raises(ValueError, match="leak"):
        p.replace(leak=0.0)
    with pytest.raises(TypeError):
        nr.NeuronParams(0.5)  # keywords only
    with pytest.raises(TypeError, match="NeuronParams"):
        nr.spike_sequence(tf.zeros((1, 3, 2)), 0.5)
    x = tf.random.stateless_normal((2, 7, 3), seed=(8, 9)) + 0.6
    np.testing.assert_array_equal(nr.spike_sequence(x, p).numpy(),
                                  nr.spike_sequence(x, **dataclasses.asdict(p)).numpy())
    assert nr.RathiNeuron(0.5).params == p
    assert nr.LeeNeuron(leak=0.9).params == nr.NeuronParams(
        leak=0.9, reset="zero", surrogate="lee", leak_in_grad=False, ng_correction=True)
    assert nr.IF().params == nr.NeuronParams()
    layer = nr.LIF(leak=0.9)
    layer.leak = 1.0  # threshold balancing switches the leak off and back
    assert layer.params == nr.NeuronParams()


@pytest.mark.parametrize("cls", [nr.LIF, nr.IF, nr.RathiNeuron, nr.LeeNeuron])
def test_config_of_previous_version_loads(cls):
    """The config keys written before ``NeuronParams`` existed rebuild an equal layer."""
    old = {"name": "n", "trainable": True, "dtype": "float32", "threshold": 0.3, "leak": 1.0,
           "reset": "zero", "surrogate": sg.serialize(sg.LeeSpike()),
           "fire_before_integrate": False, "leak_in_grad": False, "ng_correction": True,
           "t_last0": -999.0, "jit_compile": None}
    layer = cls.from_config(old)
    cfg = layer.get_config()
    assert list(cfg)[-9:] == list(old)[-9:]
    assert {k: cfg[k] for k in list(old)[3:]} == {k: old[k] for k in list(old)[3:]}
    assert layer.params == nr.NeuronParams(**{k: old[k] for k in nr.PARAM_NAMES if k in old})


def test_save_load_roundtrip(tmp_path):
    inp = keras.Input((6, 4))
    h = keras.layers.Dense(5, use_bias=False)(inp)
    h = nr.RathiNeuron(threshold=0.5, surrogate=sg.get("stdb", alpha=0.4, beta=0.02),
                       name="rathi")(h)
    h = TimeConstantDropout(0.2, seed=1)(h)
    h = keras.layers.Dense(5, use_bias=False)(h)
    h = nr.LeeNeuron(name="lee")(h)
    h = nr.LIF(0.9, leak=0.95, reset="zero", surrogate="atan", name="lif")(h)
    h = nr.IF(name="if")(h)
    h = keras.layers.Dense(3, use_bias=False)(h)
    out = LeakyMeanReadout(0.98)(h)
    out2 = SumReadout()(h)
    model = keras.Model(inp, [out, out2])
    model.get_layer("rathi").theta.assign(0.37)  # e.g. written by threshold balancing
    x = np.random.default_rng(7).normal(1.0, 1.0, (2, 6, 4)).astype("float32")
    y = model(x)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(y, loaded(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    r = loaded.get_layer("rathi")
    assert float(r.theta.numpy()) == pytest.approx(0.37)
    assert r.surrogate == sg.STDB(0.4, 0.02) and r.fire_before_integrate
    lee = loaded.get_layer("lee")
    assert (lee.leak, lee.reset, lee.ng_correction, lee.leak_in_grad) == (0.99, "zero", True, False)
    assert loaded.get_layer("lif").surrogate == sg.ATan()
