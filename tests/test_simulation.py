"""tfsnn.simulate + tfsnn.layers.spiking: single-neuron rules, a literal step-by-step reference,
exact SOP counts against brute force, the API (datasets, noise, errors), ANN MACs."""
import numpy as np
import pytest
import tensorflow as tf

from tfsnn import conversion as cv
from tfsnn import accounting
from tfsnn import simulation as sim
from tfsnn.layers.neurons.integer import DynamicThresholdNeuron, signed_spikes
from tfsnn.timeaxis import cumsum_time

from references import counts_to_spikes, signed_counts
from snn_common import calibrated_lenet, mnist_test, run_layers, tiny_model

# ----------------------------------------------------------------------------- single neuron

def _neuron(thresholds, v):
    layer = DynamicThresholdNeuron(1, len(thresholds))
    layer.build((None, None, 1))
    layer.set_weights([np.asarray([thresholds], np.int32)])
    s = layer(tf.constant(np.asarray(v, np.int32)[None, :, None])).numpy()[0, :, 0]
    return s


THR = [0, 3, 5, 5, 9, 12, 20, 30]  # theta_1..theta_8


def test_constant_drive_fires_n_star_spikes_on_first_steps():
    s = _neuron(THR, [10] * 8)  # n* = #{theta <= 10} = 5
    np.testing.assert_array_equal(s, [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(_neuron(THR, [10] * 3), [1, 1, 1])  # min(n*, T)


def test_negative_input_restores_n_star_with_negative_spikes():
    s = _neuron(THR, [10] * 6 + [4] * 6)  # level 5 then #{theta <= 4} = 2
    np.testing.assert_array_equal(s, [1, 1, 1, 1, 1, 0, -1, -1, -1, 0, 0, 0])
    assert np.cumsum(s)[-1] == 2


def test_membrane_below_floor_never_goes_negative():
    s = _neuron(THR, [-100, -5, -1, 4, -50, -50])
    n = np.cumsum(s)
    assert n.min() >= 0
    np.testing.assert_array_equal(s, [0, 0, 0, 1, -1, 0])


def test_ties_follow_the_ge_rule():
    # V == theta_{n+1} fires +1; V == theta_n - 1 fires -1; V == theta_n stays.
    np.testing.assert_array_equal(_neuron(THR, [3, 3, 3]), [1, 1, 0])
    np.testing.assert_array_equal(_neuron(THR, [3, 3, 2, 2]), [1, 1, -1, 0])
    np.testing.assert_array_equal(_neuron(THR, [5, 5, 5, 5, 5]), [1, 1, 1, 1, 0])


def test_closed_form_tail_equals_full_scan():
    rng = np.random.default_rng(0)
    lev = rng.integers(0, 9, (4, 5, 3, 2)).astype(np.int32)
    full = np.concatenate([lev, np.repeat(lev[:, -1:], 11, axis=1)], axis=1)
    ref = signed_counts(tf.constant(full))
    np.testing.assert_array_equal(signed_counts(tf.constant(lev), 16).numpy(), ref.numpy())
    np.testing.assert_array_equal(signed_spikes(tf.constant(lev), 16).numpy(),
                                  counts_to_spikes(ref).numpy())
    x = rng.integers(-3, 4, (3, 7, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(cumsum_time(tf.constant(x)).numpy(), np.cumsum(x, axis=1))


# ----------------------------------------------------------------------------- reference

def reference_sim(snn, x, t_steps):
    """Literal step-by-step simulation (spec §2.1-2.3 with the §6.5 tie rule): per step, every
    layer in order; V integrates; +1 if V >= theta_{n+1}, -1 if V < theta_n. Float64 math."""
    enc, hidden, out = cv.split_snn(snn)
    z = enc.membrane(x).numpy()
    thr_e = enc.get_weights()[1]
    states = [dict(v=0.0, n=0) for _ in hidden]
    spikes = [[] for _ in range(len(hidden) + 1)]
    logits = []
    for t in range(t_steps):
        fire = (t < enc.levels) & (z >= thr_e[:, min(t, enc.levels - 1)])
        s = np.where(fire, enc.amplitude, 0).astype(np.float64)
        spikes[0].append(s)
        for i, layer in enumerate(hidden):
            kern, thr = (np.asarray(w, np.float64) for w in layer.get_weights())
            st = states[i]
            st["v"] = st["v"] + tf.nn.conv2d(s, kern, layer.strides, layer.padding.upper()).numpy()
            n = np.broadcast_to(st["n"], st["v"].shape).astype(np.int64)
            m = thr.shape[1]
            th_up = _gather(thr, np.minimum(n, m - 1))          # theta_{n+1}
            th_dn = _gather(thr, np.maximum(n - 1, 0))          # theta_n
            up = (n < m) & (st["v"] >= th_up)
            dn = (n >= 1) & (st["v"] < th_dn)
            s = up.astype(np.float64) - dn
            st["n"] = n + s.astype(np.int64)
            spikes[i + 1].append(s)
        logits.append(states[-1]["n"].reshape(len(x), -1) @ out.get_weights()[0].astype(np.float64))
    return [np.stack(sp, 1) for sp in spikes], np.stack(logits, 1)


def _gather(thr, idx):
    """``thr[c, idx[..., c]]`` for idx ``[..., C]``."""
    c = thr.shape[0]
    return thr[np.arange(c), idx]


@pytest.mark.parametrize("k", [0, 1])
def test_folded_time_equals_step_by_step_tiny(k):
    m, x = tiny_model(k=k, seed=k)
    snn = cv.convert(m, timesteps=12)
    ref, ref_logits = reference_sim(snn, x[:16], 12)
    got = run_layers(snn, x[:16], 12)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(snn(x[:16]).numpy(), ref_logits, rtol=1e-5, atol=1e-5)


def test_folded_time_equals_step_by_step_lenet_real_images():
    x, _ = mnist_test(4)
    snn = cv.convert(calibrated_lenet(k=0), timesteps=10)
    ref, _ = reference_sim(snn, x, 10)
    for a, b in zip(run_layers(snn, x, 10), ref):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- SOPs, API

def _brute_sops(spikes_in, kernel_size, strides, padding, in_hw, out_channels):
    """SOPs by enumerating, per input event, every output position whose window covers it."""
    h, w = in_hw
    kh, kw = kernel_size
    sh, sw = strides
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + kh - h, 0) // 2
        pw = max((ow - 1) * sw + kw - w, 0) // 2
    else:
        oh, ow, ph, pw = (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    total = 0
    for b, t, i, j, c in zip(*np.nonzero(spikes_in)):
        for oi in range(oh):
            for oj in range(ow):
                if oi * sh - ph <= i < oi * sh - ph + kh and oj * sw - pw <= j < oj * sw - pw + kw:
                    total += out_channels
    return total


@pytest.mark.parametrize("k", [0, 1])
def test_sops_equal_brute_force_on_tiny_net(k):
    m, x = tiny_model(k=k, seed=2 + k)
    snn = cv.convert(m, timesteps=10)
    res = sim.simulate(snn, x[:8], batch_size=8)
    spikes = run_layers(snn, x[:8], 10)
    _, hidden, out = cv.split_snn(snn)
    for r, layer in enumerate(hidden):
        want = _brute_sops(spikes[r], layer.kernel_size, layer.strides, layer.padding,
                           spikes[r].shape[2:4], layer.filters)
        assert want > 0
        assert res.sops[0, r].sum() == want
    assert res.sops[0, -1].sum() == (spikes[-1] != 0).sum() * out.units


@pytest.mark.parametrize("hw,ks,st,pad", [((7, 7), (3, 3), (2, 2), "same"),
                                          ((8, 6), (2, 2), (2, 2), "same"),
                                          ((9, 9), (5, 3), (1, 2), "valid"),
                                          ((5, 5), (3, 3), (1, 1), "same")])
def test_fanout_map_equals_brute_force(hw, ks, st, pad):
    fan = accounting.conv_fanout(hw, ks, st, pad, out_channels=3)
    for i in range(hw[0]):
        for j in range(hw[1]):
            spk = np.zeros((1, 1, *hw, 1))
            spk[0, 0, i, j, 0] = 1
            assert fan[i, j] == _brute_sops(spk, ks, st, pad, hw, 3)


def test_dataset_input_noise_and_errors():
    m, x = tiny_model(k=0)
    snn = cv.convert(m, timesteps=6)
    y = np.arange(len(x)) % 4
    a = sim.simulate(snn, x, y, batch_size=16, max_examples=40)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    b = sim.simulate(snn, ds, max_examples=40)
    assert a.n_images == b.n_images == 40
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.sops, b.sops)
    n1 = sim.simulate(snn, x, batch_size=16, noise_ratio=0.5, seed=3)
    n2 = sim.simulate(snn, x, batch_size=16, noise_ratio=0.5, seed=3)
    np.testing.assert_array_equal(n1.logits, n2.logits)
    assert not np.array_equal(n1.logits, sim.simulate(snn, x, batch_size=16).logits)
    with pytest.raises(ValueError, match="noise_ratio"):
        sim.simulate(snn, x, noise_ratio=-1)
    with pytest.raises(ValueError, match="timesteps"):
        sim.simulate(snn, x, timesteps=7)


def test_ann_macs_lenet():
    snn = cv.convert(calibrated_lenet(k=0), timesteps=4)
    macs = accounting.ann_macs(snn)
    want = {"conv1": 460800, "conv2": 589824, "conv3": 3276800, "conv4": 262144,
            "conv5": 1024000, "output": 10000}  # spec §1.4 table
    for name, v in want.items():
        assert macs[name] == v
    assert macs["total"] == sum(want.values())


def test_saturation_and_agreement_are_reported():
    """A threshold table too short for the levels is flagged (result + RuntimeWarning), never
    silent; agreement_per_step is a fraction and equal_from_step follows it."""
    m, x = tiny_model(k=0)
    ann = tf.function(lambda v: m(v, training=False))
    long = sim.simulate(cv.convert(m, timesteps=24), x, ann=m, batch_size=32)
    assert long.convergence_problems() == [] and long.disagreements == 0
    top = int(max(c.max() for c in sim.simulate(cv.convert(m, timesteps=24), x,
                                                  return_counts=True).final_counts[1:]))
    assert top >= 2
    short = cv.convert(m, timesteps=top - 1)  # tables end one level below the largest count
    with pytest.warns(RuntimeWarning, match="threshold table"):
        res = sim.simulate(short, x, ann=m, batch_size=32)
    assert sum(res.saturated.values()) > 0
    assert any("threshold table" in p for p in res.convergence_problems())
    quiet = sim.simulate(short, x, ann=m, batch_size=32, warn=False)
    np.testing.assert_array_equal(quiet.sops, res.sops)
    agree = long.agreement_per_step
    preds = np.argmax(long.logits, -1)
    want = (preds == np.argmax(ann(x).numpy(), -1)[:, None]).mean(0)
    np.testing.assert_allclose(agree, want)
    eq = long.equal_from_step
    assert np.all(agree[eq:] == 1.0) and (eq == 0 or agree[eq - 1] < 1.0)


def test_layer_table_and_report_are_one_implementation():
    from tfsnn import report
    snn = cv.convert(calibrated_lenet(k=0), timesteps=8)
    x, y = mnist_test(20)
    res = sim.simulate(snn, x, y, batch_size=20, warn=False)
    rows = res.layer_table()
    assert [r["layer"] for r in rows] == [f"conv{i}" for i in range(1, 6)] + ["output"]
    assert [r["role"] for r in rows] == ["encoder"] + ["hidden"] * 4 + ["output"]
    assert all(tuple(r) == report.ROW_KEYS for r in rows)
    assert rows == report.rows_from_sim(res, accounting.ann_macs(snn), report.neuron_counts(snn))
    assert rows[1]["sops_per_image"] == res.sops_per_image()["conv2"]
    assert rows[0]["input_macs_per_image"] == 460800
    rep = res.table(dataset="mnist")
    assert rep.totals == report.from_sim(res, accounting.ann_macs(snn), snn=snn,
                                         dataset="mnist").totals
    assert "conv3" in rep.text()
