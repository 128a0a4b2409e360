"""IIR synapse filters (spec iir_and_proxy.md §A.2.1-§A.2.3; invariants D.1.1-4, D.1.8-9)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import timeaxis
from tfsnn.layers import filters as F


def impulse(t, n=1, dtype=np.float32):
    x = np.zeros((1, t, n), dtype)
    x[0, 0] = 1.0
    return x


@pytest.mark.parametrize("taus", [(4.0, 1.0), (8.0, 2.0)])
def test_dual_exp_impulse_response_closed_form(taus):
    tm, ts = taus
    h = F.DualExpIIR(tm, ts)(impulse(60)).numpy()[0, :, 0]
    n = np.arange(60)
    np.testing.assert_allclose(h, np.exp(-(n + 1) / tm) - np.exp(-(n + 1) / ts), atol=1e-6)
    assert h[0] == pytest.approx(F.dual_exp_coefficients(tm, ts)[2], abs=1e-7)


def test_coefficient_table():
    np.testing.assert_allclose(F.dual_exp_coefficients(4, 1), (1.146680, -0.286505, 0.410921),
                               atol=1e-6)
    np.testing.assert_allclose(F.dual_exp_coefficients(8, 2), (1.489028, -0.535261, 0.275966),
                               atol=1e-6)
    assert F.dual_exp_peak_gain(4, 1) == pytest.approx(2.116535, abs=1e-6)


def test_iir_equals_two_state_form_advanced_one_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 40, 5))
    a, b = math.exp(-1 / 4), math.exp(-1 / 1)
    y, _ = F.iir2(tf.constant(x), *F.dual_exp_coefficients(4, 1))
    m = s = np.zeros((3, 5))
    ref = []
    for t in range(40):  # m[t] = a m + x, s[t] = b s + x; the IIR output is a*m - b*s
        m, s = a * m + x[:, t], b * s + x[:, t]
        ref.append(a * m - b * s)  # = (m - s) of the next step with zero input
    np.testing.assert_allclose(y.numpy(), np.stack(ref, 1), atol=1e-12)


@pytest.mark.parametrize("taus,gain", [((4.0, 1.0), 2.93883), ((8.0, 2.0), 5.96892)])
def test_dual_exp_dc_gain(taus, gain):
    step = F.DualExpIIR(*taus)(np.ones((1, 400, 1), np.float32)).numpy()[0, :, 0]
    a, b = math.exp(-1 / taus[0]), math.exp(-1 / taus[1])
    assert a / (1 - a) - b / (1 - b) == pytest.approx(gain, abs=1e-5)
    assert step[-1] == pytest.approx(gain, abs=1e-4)
    if taus == (4.0, 1.0):
        assert step[24] == pytest.approx(2.93204, abs=1e-4)


def test_first_order_low_pass():
    layer = F.FirstOrderLowPass(4.0)
    h = layer(impulse(30)).numpy()[0, :, 0]
    alpha = math.exp(-1 / 4)
    np.testing.assert_allclose(h, alpha ** np.arange(30), atol=1e-6)
    dc = layer(np.ones((1, 300, 1), np.float32)).numpy()[0, -1, 0]
    assert dc == pytest.approx(1 / (1 - alpha), abs=1e-4)
    assert 1 / (1 - alpha) == pytest.approx(4.52081, abs=1e-5)


def test_readout_filter_kernel():
    h = F.DualExpReadoutFilter(8, 2)(impulse(40)).numpy()[0, :, 0]
    assert h[0] == 0.0
    assert int(np.argmax(h)) == 4
    assert h[4] == pytest.approx(0.9973, abs=1e-4)
    np.testing.assert_allclose(h[1:4], (0.584, 0.870, 0.982), atol=1e-3)
    assert not F.DualExpReadoutFilter(8, 2).trainable_weights


def test_scan_equals_python_unrolled_and_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 12, 3)))
    w = tf.constant(rng.normal(size=(2, 12, 3)))
    coef = [tf.Variable(np.full(3, v)) for v in F.dual_exp_coefficients(4, 1)]

    def unrolled(a1, a2, b1):
        y1 = y2 = tf.zeros_like(x[:, 0])
        out = []
        for t in range(12):
            y = a1 * y1 + a2 * y2 + b1 * x[:, t]
            out.append(y)
            y1, y2 = y, y1
        return tf.stack(out, 1)

    with tf.GradientTape() as tape:
        y, _ = F.iir2(x, *coef)
        loss = tf.reduce_sum(w * y ** 2)
    grads = tape.gradient(loss, coef)
    np.testing.assert_array_equal(y.numpy(), unrolled(*coef).numpy())
    eps = 1e-6
    for k in range(3):
        for j in range(3):
            def f(d):
                c = [v.numpy().copy() for v in coef]
                c[k][j] += d
                yy, _ = F.iir2(x, *[tf.constant(v) for v in c])
                return float(tf.reduce_sum(w * yy ** 2))
            fd = (f(eps) - f(-eps)) / (2 * eps)
            assert grads[k].numpy()[j] == pytest.approx(fd, rel=1e-5, abs=1e-8)


LAYERS = [lambda **k: F.DualExpIIR(4, 1, **k), lambda **k: F.FirstOrderLowPass(4, **k),
          lambda **k: F.DualExpReadoutFilter(8, 2, **k)]


@pytest.mark.parametrize("make", LAYERS)
def test_carry_equals_concatenated_input_and_zero_is_stateless(make):
    rng = np.random.default_rng(2)
    x = rng.random((4, 20, 3)).astype(np.float32)
    whole = make()(x).numpy()
    carry = make(state="carry", batch_size=4)
    y1, y2 = carry(x[:, :9]).numpy(), carry(x[:, 9:]).numpy()
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), whole, atol=1e-6)
    # explicit state in / out does the same in zero mode
    zero = make()
    a, st = zero(x[:, :9], return_state=True)
    b = zero(x[:, 9:], initial_state=st)
    np.testing.assert_allclose(np.concatenate([a, b], 1), whole, atol=1e-6)
    # zero mode: a call does not depend on the previous one
    np.testing.assert_array_equal(zero(x[:, 9:]).numpy(), make()(x[:, 9:]).numpy())
    carry.reset_states()
    np.testing.assert_allclose(carry(x[:, :9]).numpy(), y1, atol=0)


@pytest.mark.parametrize("make", LAYERS)
def test_held_input_equals_the_filter_of_the_repeated_frame(make):
    """``held_steps``: output, final state, carried state and the gradients of the input and of
    every coefficient equal the plain filter run on the frame repeated T times (float64, so the
    only difference is the association of the products)."""
    rng = np.random.default_rng(11)
    x = tf.constant(rng.normal(size=(4, 2, 3)))
    held, plain = make(held_steps=9, dtype="float64"), make(dtype="float64")
    held.build(x.shape)
    plain.build((4, 9, 2, 3))
    for h, p in zip(held.weights, plain.weights):  # distinct coefficients per element
        h.assign(h + rng.normal(scale=0.05, size=h.shape))
        p.assign(h)
    init = [tf.constant(rng.normal(size=(4, 2, 3))) for _ in plain.state_shapes((4, 9, 2, 3))]
    for state in (None, init):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            yh, fh = held(x, initial_state=state, return_state=True)
            yp, fp = plain(tf.repeat(x[:, None], 9, axis=1), initial_state=state,
                           return_state=True)
            w = tf.constant(rng.normal(size=(9, 2, 3)))
            lh, lp = (tf.reduce_sum(w * y ** 2) + sum(tf.reduce_sum(f) for f in fin)
                      for y, fin in ((yh, fh), (yp, fp)))
        assert yh.shape == (4, 9, 2, 3) and held.compute_output_shape(x.shape) == (4, 9, 2, 3)
        np.testing.assert_allclose(yh.numpy(), yp.numpy(), rtol=1e-12, atol=1e-12)
        for a, b in zip(fh, fp):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
        for a, b in zip(tape.gradient(lh, [x, *held.trainable_weights]),
                        tape.gradient(lp, [x, *plain.trainable_weights])):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    carry = make(held_steps=9, state="carry", batch_size=4, dtype="float64")
    ref = make(dtype="float64")
    first = carry(x).numpy()
    np.testing.assert_allclose(first, ref(tf.repeat(x[:, None], 9, axis=1)).numpy(), atol=1e-12)
    second = carry(x).numpy()  # starts from the carried state: steps 9..17 of the held frame
    whole = ref(tf.repeat(x[:, None], 18, axis=1)).numpy()
    np.testing.assert_allclose(second, whole[:, 9:], rtol=1e-10, atol=1e-12)


def test_held_steps_config_and_errors(tmp_path):
    inp = keras.Input((6,))
    model = keras.Model(inp, F.DualExpIIR(4, 1, held_steps=5, name="a")(inp))
    assert model.output.shape == (None, 5, 6)
    x = np.random.default_rng(12).random((2, 6)).astype(np.float32)
    model.save(tmp_path / "h.keras")
    back = keras.models.load_model(tmp_path / "h.keras")
    assert back.get_layer("a").held_steps == 5
    np.testing.assert_array_equal(back(x).numpy(), model(x).numpy())
    with pytest.raises(ValueError, match="held_steps"):
        F.FirstOrderLowPass(4, held_steps=0)


def test_carry_state_is_detached():
    """Truncated BPTT: the second call's gradient equals that of a call from a constant state."""
    layer = F.DualExpIIR(4, 1, state="carry", batch_size=2)
    x = tf.constant(np.random.default_rng(4).random((2, 5, 3)), tf.float32)
    layer(x)
    start = [tf.constant(v.numpy()) for v in layer.carry]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    g = tape.gradient(loss, layer.trainable_weights)
    with tf.GradientTape() as tape:
        coef = [tf.cast(w, tf.float32) for w in (layer.alpha_1, layer.alpha_2, layer.beta_1)]
        loss2 = tf.reduce_sum(F.iir2(x, *coef, initial_state=start)[0] ** 2)
    g2 = tape.gradient(loss2, layer.trainable_weights)
    for a, b in zip(g, g2):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="state"):
        F.DualExpIIR(state="keep")
    with pytest.raises(ValueError, match="batch_size"):
        F.DualExpIIR(state="carry")
    with pytest.raises(ValueError, match="tau"):
        F.DualExpIIR(2.0, 2.0)
    with pytest.raises(ValueError, match="tau"):
        F.FirstOrderLowPass(0.0)


def test_keras_round_trip(tmp_path):
    inp = keras.Input((10, 6))
    h = F.DualExpIIR(4, 1, name="a")(inp)
    h = F.FirstOrderLowPass(3, name="b")(h)
    out = F.DualExpReadoutFilter(8, 2, name="c")(h)
    model = keras.Model(inp, out)
    model.get_layer("a").alpha_1.assign(np.linspace(0.5, 1.2, 6))
    x = np.random.default_rng(3).random((2, 10, 6)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(back(x).numpy(), model(x).numpy())
    assert back.get_layer("a").get_config()["tau_m"] == 4.0
    assert float(back.get_layer("a").stability()) == pytest.approx(1.0)


def test_carry_layer_round_trip(tmp_path):
    inp = keras.Input((5, 3), batch_size=2)
    model = keras.Model(inp, F.DualExpIIR(4, 1, state="carry", batch_size=2, name="a")(inp))
    x = np.ones((2, 5, 3), np.float32)
    model(x)
    model.save(tmp_path / "c.keras")
    back = keras.models.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(back(x).numpy(), model(x).numpy(), atol=1e-6)  # carried state


def test_unrolled_loop_equals_tf_scan(monkeypatch):
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(2, 10, 3)))
    coef = F.dual_exp_coefficients(4, 1)
    unrolled, st_u = F.iir2(x, *coef)
    monkeypatch.setattr(timeaxis, "UNROLL_MAX", 0)
    scanned, st_s = F.iir2(x, *coef)
    np.testing.assert_allclose(unrolled.numpy(), scanned.numpy(), rtol=1e-12, atol=1e-14)
    for a, b in zip(st_u, st_s):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def max_pole_radius(a1, a2):
    return np.array([np.abs(np.roots([1.0, -x, -y])).max() for x, y in zip(a1, a2)])


def test_projection_reaches_the_radius_and_keeps_inside_points():
    r = 0.95
    rng = np.random.default_rng(0)
    a1, a2 = rng.uniform(-3, 3, 4000), rng.uniform(-2, 2, 4000)
    p1, p2 = (v.numpy() for v in F.project_dual_exp(tf.constant(a1), tf.constant(a2), r))
    rad = max_pole_radius(p1, p2)
    assert rad.max() <= r + 1e-6  # every projected filter has its poles within r
    inside = max_pole_radius(a1, a2) <= r - 1e-9
    assert 100 < inside.sum() < 3900
    np.testing.assert_array_equal(p1[inside], a1[inside])  # identity inside the region
    np.testing.assert_array_equal(p2[inside], a2[inside])
    q1, q2 = (v.numpy() for v in F.project_dual_exp(tf.constant(p1), tf.constant(p2), r))
    np.testing.assert_array_equal(q1, p1)  # idempotent
    np.testing.assert_array_equal(q2, p2)
    assert np.abs(rad[~inside] - r).max() < 1e-6  # points outside land on the boundary


@pytest.mark.parametrize("layer", ["dual_exp", "low_pass"])
def test_max_radius_holds_through_training(layer):
    """Gradient steps that push every coefficient outwards leave the filters within the
    radius; the same steps without the constraint make them unstable."""
    x = np.ones((4, 30, 8), np.float32)

    def train(max_radius):
        keras.utils.set_random_seed(0)
        syn = (F.DualExpIIR(4, 1, max_radius=max_radius) if layer == "dual_exp"
               else F.FirstOrderLowPass(4, max_radius=max_radius))
        model = keras.Sequential([keras.Input((30, 8)), syn])
        model.compile(keras.optimizers.Adam(0.05), loss=lambda y, p: -tf.reduce_mean(p))
        model.fit(x, x, epochs=30, batch_size=4, verbose=0)
        return syn

    free, held = train(None), train(0.97)
    if layer == "dual_exp":
        rad = max_pole_radius(held.alpha_1.numpy(), held.alpha_2.numpy())
        assert max_pole_radius(free.alpha_1.numpy(), free.alpha_2.numpy()).min() > 1.0
    else:
        rad = np.abs(held.alpha.numpy())
        assert np.abs(free.alpha.numpy()).min() > 1.0
    assert rad.max() <= 0.97 + 1e-6 and rad.min() > 0.96  # driven to the boundary, not past
    assert float(held.stability()) == 1.0 and float(free.stability()) == 0.0


def test_max_radius_config_round_trip_and_errors(tmp_path):
    inp = keras.Input((10, 3))
    model = keras.Model(inp, F.FirstOrderLowPass(3, max_radius=0.9, name="b")(
        F.DualExpIIR(4, 1, max_radius=0.99, name="a")(inp)))
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert back.get_layer("a").max_radius == 0.99 and back.get_layer("b").max_radius == 0.9
    assert back.get_layer("a").alpha_1.constraint is not None
    with pytest.raises(ValueError, match="max_radius"):
        F.DualExpIIR(4, 1, max_radius=1.0)
    with pytest.raises(ValueError, match="initial pole"):
        F.DualExpIIR(8, 2, max_radius=0.8)  # exp(-1/8) = 0.8825
